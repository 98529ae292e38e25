//! OpenAI-compatible servers (llama.cpp's server, vLLM, hosted APIs):
//! `POST {base}/v1/chat/completions` with `stream: true`, answered as
//! server-sent events. The parser takes `data:` with or without a space,
//! skips comment lines (`: keep-alive`), and ends at `data: [DONE]` or at
//! the end of the body; usage is read when the server sends it (and
//! estimated when it does not). Mind maps ask for JSON through
//! `response_format`, as far down the ladder as the server needs
//! (see `structured.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use super::http::{self, Lines};
use super::prompts::{Prompts, mind_map_schema};
use super::structured::{self, Ladder, Rung};
use super::{
    Backend, BackendInfo, BoxFuture, LlmError, LlmErrorKind, LlmRequest, LlmResponse, Progress,
    Usage,
};

pub struct OpenAiBackend {
    client: reqwest::Client,
    /// The base URL without a trailing `/v1`.
    base: String,
    model: String,
    api_key: Option<String>,
    prompts: Prompts,
    limits: http::AnswerLimits,
    reachable: Arc<AtomicBool>,
    ladder: Ladder,
}

/// `http://host:8080` and `http://host:8080/v1` both name the same server.
pub fn normalise_base(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_string()
}

impl OpenAiBackend {
    pub fn new(
        base: &str,
        model: &str,
        api_key: Option<String>,
        prompts: Prompts,
    ) -> Result<Self, String> {
        Ok(Self {
            client: http::client()?,
            base: normalise_base(base),
            model: model.to_string(),
            api_key: api_key.filter(|k| !k.is_empty()),
            prompts,
            limits: http::AnswerLimits::default(),
            reachable: Arc::new(AtomicBool::new(false)),
            ladder: Ladder::default(),
        })
    }

    pub fn with_limits(mut self, limits: http::AnswerLimits) -> Self {
        self.limits = limits;
        self
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    fn body(&self, request: &LlmRequest, rung: Rung) -> Value {
        let mut body = json!({
            "model": self.model,
            "messages": self.prompts.messages(request),
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": self.limits.max_tokens,
        });
        match rung {
            Rung::JsonSchema => {
                body["response_format"] = json!({
                    "type": "json_schema",
                    "json_schema": {"name": "mind_map", "schema": mind_map_schema(), "strict": true},
                });
            }
            Rung::JsonObject => body["response_format"] = json!({"type": "json_object"}),
            Rung::Plain => {}
        }
        body
    }

    async fn chat(
        &self,
        request: LlmRequest,
        rung: Rung,
        progress: &Progress,
    ) -> Result<LlmResponse, LlmError> {
        let url = http::join(&self.base, "/v1/chat/completions");
        let body = self.body(&request, rung);
        let response = http::send_with_retries(
            || self.request(self.client.post(&url)).json(&body),
            &format!("the server at {url}"),
        )
        .await?;
        self.reachable.store(true, Ordering::Relaxed);
        let mut lines = Lines::new(response);
        let mut answer = Answer {
            limits: self.limits,
            ..Default::default()
        };
        while let Some(line) = lines.next().await? {
            if answer.feed(&line, progress)? {
                break;
            }
        }
        let usage = Usage {
            prompt_tokens: answer
                .prompt_tokens
                .unwrap_or_else(|| estimate_prompt(&body)),
            completion_tokens: answer.usage.unwrap_or(answer.pieces),
        };
        Ok(LlmResponse {
            usage,
            model: answer.model.unwrap_or_else(|| self.model.clone()),
            text: answer.text,
        })
    }
}

/// The prompt's tokens, estimated from its messages, for a server that
/// reports no usage.
fn estimate_prompt(body: &Value) -> u64 {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_str())
        .map(Usage::estimate)
        .sum()
}

/// An answer being assembled from SSE lines.
#[derive(Debug, Default)]
pub struct Answer {
    pub limits: http::AnswerLimits,
    pub text: String,
    pub pieces: u64,
    /// Completion tokens, as the server counted them.
    pub usage: Option<u64>,
    pub prompt_tokens: Option<u64>,
    pub model: Option<String>,
}

impl Answer {
    /// Takes one SSE line; `Ok(true)` at `[DONE]`.
    pub fn feed(&mut self, line: &str, progress: &Progress) -> Result<bool, LlmError> {
        let Some(data) = line.strip_prefix("data:") else {
            // Comments, `event:`, `id:`, blank separators: nothing to read.
            return Ok(false);
        };
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            tracing::debug!("the server sent an event that is not JSON; ignored");
            return Ok(false);
        };
        if let Some(error) = value.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| error.to_string());
            return Err(LlmError::new(
                LlmErrorKind::Other,
                format!("the server: {}", http::server_message(&message)),
            ));
        }
        if self.model.is_none() {
            self.model = value
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if let Some(piece) = value
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
            && !piece.is_empty()
        {
            self.limits.append(&mut self.text, piece)?;
            self.pieces += 1;
            progress.add_tokens(1);
        }
        if let Some(tokens) = value
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
        {
            self.usage = Some(tokens);
        }
        if let Some(tokens) = value
            .pointer("/usage/prompt_tokens")
            .and_then(Value::as_u64)
        {
            self.prompt_tokens = Some(tokens);
        }
        Ok(false)
    }
}

impl Backend for OpenAiBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "openai".into(),
            model: self.model.clone(),
            simulated: false,
            reachable: self.reachable.load(Ordering::Relaxed),
            structured_output: Some(self.ladder.current().name()),
        }
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            let server = format!("the server at {}", self.base);
            structured::generate(&self.ladder, &server, request, |request, rung| {
                self.chat(request, rung, progress)
            })
            .await
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let server = format!("the server at {}", self.base);
            let request = self.request(self.client.get(http::join(&self.base, "/v1/models")));
            let result = http::model_names(request, ("the server", &self.base), "data", "id")
                .await
                .and_then(|ids| {
                    // Some servers list nothing and serve whatever they loaded.
                    if ids.is_empty() || ids.contains(&self.model) {
                        return Ok(());
                    }
                    Err(format!(
                        "{server} does not serve model {} (it serves: {})",
                        self.model,
                        ids.join(", ")
                    ))
                });
            self.reachable.store(result.is_ok(), Ordering::Relaxed);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_with_and_without_v1_are_the_same() {
        assert_eq!(normalise_base("http://h:8080"), "http://h:8080");
        assert_eq!(normalise_base("http://h:8080/v1"), "http://h:8080");
        assert_eq!(normalise_base("http://h:8080/v1/"), "http://h:8080");
    }

    #[test]
    fn sse_lines_are_read_leniently() {
        let progress = Progress::default();
        let mut answer = Answer::default();
        let lines = [
            ": keep-alive",
            "",
            "event: message",
            r#"data:{"model":"m1","choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"data: {"choices":[{"delta":{"content":"lo"}}]}"#,
            "data: {not json",
            r#"data: {"choices":[],"usage":{"prompt_tokens":31,"completion_tokens":7}}"#,
        ];
        for line in lines {
            assert!(!answer.feed(line, &progress).unwrap());
        }
        assert!(answer.feed("data: [DONE]", &progress).unwrap());
        assert_eq!(answer.text, "Hello");
        assert_eq!(answer.usage, Some(7));
        assert_eq!(answer.prompt_tokens, Some(31));
        assert_eq!(answer.model.as_deref(), Some("m1"));
        assert_eq!(progress.tokens(), 2);
        let err = Answer::default()
            .feed(
                r#"data: {"error":{"message":"context too long"}}"#,
                &progress,
            )
            .unwrap_err();
        assert!(err.message.contains("context too long"));
    }
}
