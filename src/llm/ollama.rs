//! Ollama: `POST /api/chat` with `stream: true`, answered as NDJSON lines
//! `{"message": {"content": "…"}, "done": false}` … `{"done": true, "eval_count": 42}`.
//! An `error` key may arrive on any line and fails the run with its message.
//! Mind maps ask for JSON through `format`, as far down the ladder as the
//! server needs (see `structured.rs`); `options.num_ctx` is set.
//! Usage comes from `prompt_eval_count` and `eval_count`.

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

pub const DEFAULT_URL: &str = "http://127.0.0.1:11434";
/// Context window asked for (tokens).
pub const NUM_CTX: u32 = 16_384;

pub struct OllamaBackend {
    client: reqwest::Client,
    base: String,
    model: String,
    prompts: Prompts,
    limits: http::AnswerLimits,
    reachable: Arc<AtomicBool>,
    ladder: Ladder,
}

/// Ollama's own rule: a model name without a tag means `:latest`.
pub fn with_tag(model: &str) -> String {
    let name = model.rsplit('/').next().unwrap_or(model);
    if name.contains(':') {
        model.to_string()
    } else {
        format!("{model}:latest")
    }
}

impl OllamaBackend {
    pub fn new(base: Option<&str>, model: &str, prompts: Prompts) -> Result<Self, String> {
        Ok(Self {
            client: http::client()?,
            base: base
                .unwrap_or(DEFAULT_URL)
                .trim_end_matches('/')
                .to_string(),
            model: with_tag(model),
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

    fn body(&self, request: &LlmRequest, rung: Rung) -> Value {
        let mut body = json!({
            "model": self.model,
            "messages": self.prompts.messages(request),
            "stream": true,
            "options": {"num_ctx": NUM_CTX, "num_predict": self.limits.max_tokens},
        });
        match rung {
            Rung::JsonSchema => body["format"] = mind_map_schema(),
            Rung::JsonObject => body["format"] = json!("json"),
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
        let url = http::join(&self.base, "/api/chat");
        let body = self.body(&request, rung);
        let response = http::send_with_retries(
            || self.client.post(&url).json(&body),
            &format!("Ollama at {url}"),
        )
        .await?;
        self.reachable.store(true, Ordering::Relaxed);
        let mut lines = Lines::new(response);
        let mut text = String::new();
        let mut streamed = 0u64;
        let mut completion_tokens = None;
        let mut prompt_tokens = None;
        while let Some(line) = lines.next().await? {
            if line.trim().is_empty() {
                continue;
            }
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                tracing::debug!("Ollama sent a line that is not JSON; ignored");
                continue;
            };
            if let Some(error) = value.get("error") {
                let message = error
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| error.to_string());
                return Err(LlmError::new(
                    LlmErrorKind::Other,
                    format!("Ollama: {}", http::server_message(&message)),
                ));
            }
            if let Some(piece) = value.pointer("/message/content").and_then(Value::as_str)
                && !piece.is_empty()
            {
                self.limits.append(&mut text, piece)?;
                streamed += 1;
                progress.add_tokens(1);
            }
            if value.get("done").and_then(Value::as_bool) == Some(true) {
                completion_tokens = value.get("eval_count").and_then(Value::as_u64);
                prompt_tokens = value.get("prompt_eval_count").and_then(Value::as_u64);
                break;
            }
        }
        let estimated_prompt = || {
            self.prompts
                .messages(&request)
                .iter()
                .map(|m| Usage::estimate(&m.content))
                .sum()
        };
        Ok(LlmResponse {
            text,
            model: self.model.clone(),
            usage: Usage {
                prompt_tokens: prompt_tokens.unwrap_or_else(estimated_prompt),
                completion_tokens: completion_tokens.unwrap_or(streamed),
            },
        })
    }
}

impl Backend for OllamaBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "ollama".into(),
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
            let server = format!("Ollama at {}", self.base);
            structured::generate(&self.ladder, &server, request, |request, rung| {
                self.chat(request, rung, progress)
            })
            .await
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let server = format!("Ollama at {}", self.base);
            let request = self.client.get(http::join(&self.base, "/api/tags"));
            let result = http::model_names(request, ("Ollama", &self.base), "models", "name")
                .await
                .and_then(|names| {
                    if names.contains(&self.model) {
                        return Ok(());
                    }
                    let have = if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    };
                    Err(format!(
                        "{server} has no model {} (it has: {have}); run `ollama pull {}`",
                        self.model, self.model
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
    fn model_names_without_a_tag_mean_latest() {
        assert_eq!(with_tag("llama3.2"), "llama3.2:latest");
        assert_eq!(with_tag("qwen2.5:14b"), "qwen2.5:14b");
        assert_eq!(with_tag("hf.co/org/model"), "hf.co/org/model:latest");
        assert_eq!(
            with_tag("registry:5000/model"),
            "registry:5000/model:latest"
        );
    }
}
