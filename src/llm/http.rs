//! What the HTTP backends share: the client, retries with backoff, reading a
//! streamed body line by line, and readable errors.
//!
//! Retries happen only before the answer starts streaming, and only for
//! failures that another try can fix: a refused or timed-out connection,
//! 429 and 503 (honouring `Retry-After`, in seconds or as an HTTP date, up
//! to [`MAX_RETRY_AFTER`]; a longer wait is left to the run's own retry,
//! which the error carries it to). Any other status fails the run at once
//! with the server's own message; a context-length refusal, in any
//! server's words, is [`LlmErrorKind::ContextExceeded`]. A request whose
//! connection closed before any byte of the answer (a pooled connection
//! the server had already closed, or a server that dropped it on reading
//! the request) is sent once more at once, on another connection; a
//! second such close fails the call as [`LlmErrorKind::Dropped`], not as
//! unreachable: the server was there and took the request.
//!
//! Nothing a server sends is held without a bound: an answer stops at
//! [`AnswerLimits::max_answer_bytes`], an error body is read up to
//! [`MAX_ERROR_BODY_BYTES`], a model list up to [`MAX_MODEL_LIST_BYTES`]
//! within [`MODEL_LIST_TIMEOUT`], and every message a server writes is
//! stripped of control characters and cut before anyone sees it.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Response, StatusCode};

use super::{LlmError, LlmErrorKind};

/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries after the first try.
pub const MAX_RETRIES: u32 = 3;
/// The first backoff; it doubles each retry.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait a `Retry-After` may ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Longest line accepted from a stream.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Most of an error body read; the rest is never downloaded.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Most of a model list read.
pub const MAX_MODEL_LIST_BYTES: usize = 4 << 20;
/// How long a model-list call may take in all.
pub const MODEL_LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest server message shown (errors, in characters).
pub const MAX_SERVER_MESSAGE_CHARS: usize = 300;

/// What an answer may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerLimits {
    /// Sent to the server: `num_predict` (Ollama), `max_tokens` (OpenAI).
    pub max_tokens: u32,
    /// An answer longer than this ends the run as failed.
    pub max_answer_bytes: usize,
    /// The context window in tokens, from `--llm-context`: what the server
    /// says of its own is then not asked.
    pub context: Option<u32>,
}

impl Default for AnswerLimits {
    fn default() -> Self {
        Self {
            max_tokens: 1024,
            max_answer_bytes: 256 * 1024,
            context: None,
        }
    }
}

impl AnswerLimits {
    /// Adds a streamed piece to `text`, or fails the run when the answer
    /// would pass the byte cap (a server that streams forever).
    pub fn append(&self, text: &mut String, piece: &str) -> Result<(), LlmError> {
        if text.len() + piece.len() > self.max_answer_bytes {
            return Err(LlmError::other(format!(
                "the answer passed {} bytes (--max-answer-bytes) and was cut off",
                self.max_answer_bytes
            )));
        }
        text.push_str(piece);
        Ok(())
    }
}

/// A message a server wrote, fit to show: no control characters, cut.
pub fn server_message(raw: &str) -> String {
    crate::text::strip_controls(raw)
        .chars()
        .take(MAX_SERVER_MESSAGE_CHARS)
        .collect()
}

/// Up to `max` bytes of a body; the rest is never read.
pub(crate) async fn read_capped(response: Response, max: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = max - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == max {
            break;
        }
    }
    Ok(body)
}

/// The shared client: connect timeout set, no overall timeout (the run's
/// deadline bounds the whole call).
pub fn client() -> Result<reqwest::Client, String> {
    crate::net::http_client(reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT))
}

/// Joins a base URL and a path, with or without slashes around them.
pub fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Sends the request built by `build`, retrying as the module docs say.
/// Returns the response once its status is a success.
pub async fn send_with_retries(
    build: impl Fn() -> reqwest::RequestBuilder,
    what: &str,
) -> Result<Response, LlmError> {
    let mut attempt = 0;
    let mut resent_after_a_close = false;
    loop {
        let wait = match build().send().await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => {
                let status = response.status();
                let retry_after = retry_after(&response, std::time::SystemTime::now());
                let body = read_error_body(response).await;
                if let Some(refusal) = body.refusal {
                    return Err(LlmError::new(
                        LlmErrorKind::ContextExceeded {
                            window: refusal.window,
                            requested: refusal.requested,
                        },
                        format!("{what} answered {status}: {}", body.message),
                    ));
                }
                let retryable = matches!(
                    status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                );
                let too_long = retry_after.is_some_and(|wait| wait > MAX_RETRY_AFTER);
                if !retryable || attempt >= MAX_RETRIES || too_long {
                    return Err(LlmError {
                        retry_after: retry_after.filter(|_| retryable),
                        ..LlmError::new(
                            LlmErrorKind::Refused {
                                status: status.as_u16(),
                            },
                            format!("{what} answered {status}: {}", body.message),
                        )
                    });
                }
                tracing::debug!(attempt, %status, "{what} is busy; retrying");
                retry_after.unwrap_or_else(|| backoff(attempt))
            }
            Err(e) if (e.is_connect() || e.is_timeout()) && attempt < MAX_RETRIES => {
                tracing::debug!(attempt, "cannot reach {what}: {e}; retrying");
                backoff(attempt)
            }
            Err(e) if e.is_timeout() => {
                return Err(LlmError::new(
                    LlmErrorKind::TimedOut,
                    format!("{what} did not answer in time: {}", error_chain(&e)),
                ));
            }
            Err(e) if e.is_connect() => {
                return Err(LlmError::new(
                    LlmErrorKind::Unreachable,
                    format!("cannot reach {what}: {}", error_chain(&e)),
                ));
            }
            // Connected, sent, and the connection closed before an answer.
            Err(e) if !resent_after_a_close => {
                resent_after_a_close = true;
                tracing::debug!(
                    "{what} closed the connection before answering: {e}; sending again"
                );
                continue;
            }
            Err(e) => {
                return Err(LlmError::new(
                    LlmErrorKind::Dropped,
                    format!(
                        "{what} closed the connection before answering: {}",
                        error_chain(&e)
                    ),
                ));
            }
        };
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF * 2u32.pow(attempt.min(6))
}

fn retry_after(response: &Response, now: std::time::SystemTime) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    parse_retry_after(value.to_str().ok()?, now)
}

/// A `Retry-After` value: seconds, or an HTTP date (a date already past
/// asks for no wait).
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An error answer: the server's message, and what it says of the context
/// window when it is a context-length refusal.
struct ErrorBody {
    message: String,
    refusal: Option<super::context::Refusal>,
}

/// The server's error message: `error` or `error.message` of a JSON body, or
/// the start of the body as text. Reads at most [`MAX_ERROR_BODY_BYTES`].
async fn read_error_body(response: Response) -> ErrorBody {
    let text = match read_capped(response, MAX_ERROR_BODY_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            return ErrorBody {
                message: format!("(unreadable body: {e})"),
                refusal: None,
            };
        }
    };
    let json = serde_json::from_str::<serde_json::Value>(&text).ok();
    let error = json.as_ref().and_then(|v| v.get("error"));
    let from_json = error.and_then(|error| {
        error
            .as_str()
            .or_else(|| error.get("message").and_then(|m| m.as_str()))
            .map(str::to_string)
    });
    let message = from_json.unwrap_or(text);
    ErrorBody {
        refusal: error
            .and_then(refusal_in_json)
            .or_else(|| super::context::parse_refusal(&message)),
        message: server_message(&message),
    }
}

/// llama.cpp's server names its refusal by type and gives the numbers as
/// fields: `{"type": "exceed_context_size_error", "n_ctx": 2048,
/// "n_prompt_tokens": 3000}`.
fn refusal_in_json(error: &serde_json::Value) -> Option<super::context::Refusal> {
    let kind = error.get("type").and_then(|t| t.as_str())?;
    let code = error
        .get("code")
        .and_then(|c| c.as_str())
        .unwrap_or_default();
    if kind != "exceed_context_size_error" && code != "context_length_exceeded" {
        return None;
    }
    let number = |field: &str| {
        error
            .get(field)
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let message = error
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    let from_text = super::context::parse_refusal(message).unwrap_or_default();
    Some(super::context::Refusal {
        window: number("n_ctx").or(from_text.window),
        requested: number("n_prompt_tokens").or(from_text.requested),
    })
}

/// A small JSON answer that a server may not give (an endpoint only some
/// servers have): `None` on any failure, status or unreadable body.
pub async fn optional_json(request: reqwest::RequestBuilder) -> Option<serde_json::Value> {
    let response = request.timeout(MODEL_LIST_TIMEOUT).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let bytes = read_capped(response, MAX_MODEL_LIST_BYTES).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The model names a server lists: `answer[list][*][field]` of the JSON
/// answer to `request`. Errors name the server as `who` at `base`.
pub async fn model_names(
    request: reqwest::RequestBuilder,
    server: (&str, &str),
    list: &str,
    field: &str,
) -> Result<Vec<String>, String> {
    Ok(model_list(request, server, list)
        .await?
        .iter()
        .filter_map(|m| m.get(field).and_then(serde_json::Value::as_str))
        .map(str::to_string)
        .collect())
}

/// The entries of a server's model list: `answer[list][*]`.
pub async fn model_list(
    request: reqwest::RequestBuilder,
    (who, base): (&str, &str),
    list: &str,
) -> Result<Vec<serde_json::Value>, String> {
    let server = format!("{who} at {base}");
    let response = request
        .timeout(MODEL_LIST_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("{who} is not reachable at {base}: {}", error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(format!(
            "{server} answered {} to the model list",
            response.status()
        ));
    }
    let body = read_capped(response, MAX_MODEL_LIST_BYTES)
        .await
        .map_err(|e| format!("{server} sent an unreadable model list: {e}"))?;
    let mut answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("{server} sent an unreadable model list: {e}"))?;
    Ok(match answer.get_mut(list).map(serde_json::Value::take) {
        Some(serde_json::Value::Array(items)) => items,
        _ => Vec::new(),
    })
}

/// The error and its causes, `: `-joined (reqwest hides the useful part).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Reads a streamed body as lines (without their `\n` or `\r\n`).
pub struct Lines {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
    done: bool,
    received: bool,
}

impl Lines {
    pub fn new(response: Response) -> Self {
        Self {
            stream: response.bytes_stream().boxed(),
            buffer: Vec::new(),
            done: false,
            received: false,
        }
    }

    /// Whether any byte of the body has arrived.
    pub fn received(&self) -> bool {
        self.received
    }

    /// The next line; `Ok(None)` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<String>, LlmError> {
        loop {
            if let Some(at) = self.buffer.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=at).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            if self.done {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                let rest = std::mem::take(&mut self.buffer);
                return Ok(Some(String::from_utf8_lossy(&rest).into_owned()));
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.received |= !chunk.is_empty();
                    self.buffer.extend_from_slice(&chunk);
                    if self.buffer.len() > MAX_LINE_BYTES && !self.buffer.contains(&b'\n') {
                        return Err(LlmError::other(format!(
                            "the server sent a line over {MAX_LINE_BYTES} bytes"
                        )));
                    }
                }
                Some(Err(e)) => {
                    return Err(LlmError::new(
                        LlmErrorKind::Dropped,
                        format!("the answer broke off: {}", error_chain(&e)),
                    ));
                }
                None => self.done = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
