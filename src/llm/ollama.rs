//! Ollama: `POST /api/chat` with `stream: true`, answered as NDJSON lines
//! `{"message": {"content": "…"}, "done": false}` … `{"done": true, "eval_count": 42}`.
//! An `error` key may arrive on any line and fails the run with its message.
//! Mind maps ask for JSON through `format`, as far down the ladder as the
//! server needs (see `structured.rs`); `options.num_ctx` is set.
//! Usage comes from `prompt_eval_count` and `eval_count`.
//!
//! Ollama cuts a prompt longer than `num_ctx` without a word, so every
//! prompt is sized to fit before it is sent (see `context.rs`): the window
//! is the `num_ctx` asked for (`--llm-context`, else [`NUM_CTX`]), or the
//! model's own `context_length` from `/api/show` when that is smaller. An
//! answer ended at `num_predict` (`done_reason: "length"`) is marked
//! truncated.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use super::context::ContextWindow;
use super::http::{self, Lines};
use super::prompts::Prompts;
use super::structured::{self, Ladder, Rung};
use super::{
    Backend, BackendInfo, BoxFuture, LlmError, LlmErrorKind, LlmRequest, LlmResponse, Progress,
    Usage,
};
use crate::ops::output::Format;

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
    context: ContextWindow,
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
            context: Self::window(None),
        })
    }

    pub fn with_limits(mut self, limits: http::AnswerLimits) -> Self {
        self.limits = limits;
        self.context = Self::window(limits.context);
        self
    }

    /// The window asked for: the flag's, else [`NUM_CTX`]; inflight sets
    /// it, so it is known from the start.
    fn window(flag: Option<u32>) -> ContextWindow {
        let window = ContextWindow::new(flag);
        window.learn_from_server(NUM_CTX);
        window
    }

    /// The model's own `context_length` from its card (`/api/show`, under
    /// `model_info` as `<architecture>.context_length`).
    async fn read_model_card(&self) {
        let request = self
            .client
            .post(http::join(&self.base, "/api/show"))
            .json(&json!({"model": self.model}));
        let Some(card) = http::optional_json(request).await else {
            return;
        };
        let length = card
            .get("model_info")
            .and_then(Value::as_object)
            .and_then(|info| {
                info.iter()
                    .find(|(key, _)| key.ends_with(".context_length"))
                    .and_then(|(_, v)| v.as_u64())
            })
            .and_then(|n| u32::try_from(n).ok());
        if let Some(length) = length
            && self.context.tokens().is_none_or(|asked| length < asked)
        {
            self.context.learn_from_server(length);
        }
    }

    fn body(&self, request: &LlmRequest, rung: Rung) -> Value {
        let mut body = json!({
            "model": self.model,
            "messages": self.prompts.messages(request),
            "stream": true,
            "options": {
                "num_ctx": self.context.tokens().unwrap_or(NUM_CTX),
                "num_predict": self.context.answer_tokens(self.limits.max_tokens),
            },
        });
        match rung {
            Rung::JsonSchema => {
                if let Some(Format::Json { schema, .. }) = structured::format(request.op) {
                    body["format"] = schema;
                }
            }
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
        let prompt_chars: usize = self
            .prompts
            .messages(&request)
            .iter()
            .map(|m| m.content.chars().count())
            .sum();
        let answer = self.context.answer_tokens(self.limits.max_tokens);
        if let Some(room) = self.context.prompt_tokens(self.limits.max_tokens) {
            let tokens = self.context.estimate(prompt_chars);
            if tokens > u64::from(room) {
                let window = self.context.tokens().unwrap_or_default();
                return Err(LlmError::new(
                    LlmErrorKind::ContextExceeded {
                        window: Some(window),
                        requested: u32::try_from(tokens).ok().map(|t| t.saturating_add(answer)),
                    },
                    format!(
                        "the prompt takes about {tokens} tokens and its answer up to {answer}: \
                         more than num_ctx {window} holds (not sent; Ollama would cut it)"
                    ),
                ));
            }
        }
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
        let mut truncated = false;
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
                truncated = value.get("done_reason").and_then(Value::as_str) == Some("length");
                break;
            }
        }
        // A count near the window may be a prompt Ollama cut: not learnt from.
        if let (Some(tokens), Some(window)) = (prompt_tokens, self.context.tokens())
            && tokens < u64::from(window) * 9 / 10
        {
            self.context.observe(prompt_chars, tokens);
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
            usage: Usage::tokens(
                prompt_tokens.unwrap_or_else(estimated_prompt),
                completion_tokens.unwrap_or(streamed),
            ),
            truncated,
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
            context: self.context.info(),
            slots: None,
        }
    }

    fn prompt_room(&self, op: crate::model::Operation) -> Option<usize> {
        let chars = self.context.prompt_chars(self.limits.max_tokens)?;
        Some(chars.saturating_sub(self.prompts.fixed_chars(op)))
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
            self.read_model_card().await;
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
