//! What the HTTP backends share: the client, retries with backoff, reading a
//! streamed body line by line, and readable errors.
//!
//! Retries happen only before the answer starts streaming, and only for
//! failures that another try can fix: a refused or timed-out connection,
//! 429 and 503 (honouring `Retry-After` in seconds). Any other status fails
//! the run at once with the server's own message. A request whose
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
}

impl Default for AnswerLimits {
    fn default() -> Self {
        Self {
            max_tokens: 1024,
            max_answer_bytes: 256 * 1024,
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
async fn read_capped(response: Response, max: usize) -> Result<Vec<u8>, reqwest::Error> {
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
                let retry_after = retry_after(&response);
                let body = read_error_body(response).await;
                let retryable = matches!(
                    status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                );
                if !retryable || attempt >= MAX_RETRIES {
                    return Err(LlmError::new(
                        LlmErrorKind::Refused {
                            status: status.as_u16(),
                        },
                        format!("{what} answered {status}: {body}"),
                    ));
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

fn retry_after(response: &Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The server's error message: `error` or `error.message` of a JSON body, or
/// the start of the body as text. Reads at most [`MAX_ERROR_BODY_BYTES`].
async fn read_error_body(response: Response) -> String {
    let text = match read_capped(response, MAX_ERROR_BODY_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("(unreadable body: {e})"),
    };
    let from_json = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            error
                .as_str()
                .or_else(|| error.get("message").and_then(|m| m.as_str()))
                .map(str::to_string)
        });
    server_message(&from_json.unwrap_or(text))
}

/// The model names a server lists: `answer[list][*][field]` of the JSON
/// answer to `request`. Errors name the server as `who` at `base`.
pub async fn model_names(
    request: reqwest::RequestBuilder,
    (who, base): (&str, &str),
    list: &str,
    field: &str,
) -> Result<Vec<String>, String> {
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
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("{server} sent an unreadable model list: {e}"))?;
    Ok(answer
        .get(list)
        .and_then(serde_json::Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|m| m.get(field).and_then(serde_json::Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
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
}

impl Lines {
    pub fn new(response: Response) -> Self {
        Self {
            stream: response.bytes_stream().boxed(),
            buffer: Vec::new(),
            done: false,
        }
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
