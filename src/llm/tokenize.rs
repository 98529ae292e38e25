//! Counting a prompt's tokens with the server's own tokenizer, where it
//! has one: `POST /tokenize` on llama.cpp's server (`{"content"}`, answered
//! with `tokens`) and vLLM (`{"prompt"}`, answered with `count`), and
//! `POST /extras/tokenize/count` on llama-cpp-python (`{"input"}`, answered
//! with `count`). The first count finds which one the server has; a server
//! with none is asked no more, and prompts are then estimated (see
//! `context.rs`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

/// How long a count may take before the estimate is used instead.
pub const COUNT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most of a count's answer read (a token list for a long prompt).
const MAX_ANSWER_BYTES: usize = 4 << 20;

const UNTRIED: u8 = 0;
const TOKENIZE: u8 = 1;
const EXTRAS: u8 = 2;
const NONE: u8 = 3;

/// Which tokenizer endpoint a server has, as found.
#[derive(Debug, Default)]
pub struct Tokenizer {
    found: AtomicU8,
}

impl Tokenizer {
    /// The server's count of `text`'s tokens, or `None` when it has no
    /// tokenizer or the count failed (the caller then estimates).
    pub async fn count(
        &self,
        client: &reqwest::Client,
        base: &str,
        model: &str,
        text: &str,
    ) -> Option<u64> {
        let found = self.found.load(Ordering::Relaxed);
        let order: &[u8] = match found {
            NONE => return None,
            TOKENIZE => &[TOKENIZE],
            EXTRAS => &[EXTRAS],
            _ => &[TOKENIZE, EXTRAS],
        };
        for &endpoint in order {
            let (path, body) = match endpoint {
                TOKENIZE => (
                    "/tokenize",
                    json!({"model": model, "content": text, "prompt": text, "add_special": false}),
                ),
                _ => (
                    "/extras/tokenize/count",
                    json!({"model": model, "input": text}),
                ),
            };
            match ask(client, &super::http::join(base, path), &body).await {
                Asked::Count(n) => {
                    self.found.store(endpoint, Ordering::Relaxed);
                    return Some(n);
                }
                // Not this server's endpoint: try the next one.
                Asked::Missing => continue,
                // There, but it failed this time: estimate, ask again later.
                Asked::Failed => return None,
            }
        }
        if found == UNTRIED {
            tracing::debug!(
                "the server at {base} has no tokenizer endpoint; prompts are estimated"
            );
            self.found.store(NONE, Ordering::Relaxed);
        }
        None
    }
}

enum Asked {
    Count(u64),
    Missing,
    Failed,
}

async fn ask(client: &reqwest::Client, url: &str, body: &Value) -> Asked {
    let response = match client
        .post(url)
        .json(body)
        .timeout(COUNT_TIMEOUT)
        .send()
        .await
    {
        Ok(response) => response,
        Err(_) => return Asked::Failed,
    };
    let status = response.status().as_u16();
    if matches!(status, 404 | 405 | 501) {
        return Asked::Missing;
    }
    if !response.status().is_success() {
        // A 400 or 422: the endpoint is there but reads another body; the
        // next one may be this server's.
        return if matches!(status, 400 | 422) {
            Asked::Missing
        } else {
            Asked::Failed
        };
    }
    let Ok(bytes) = super::http::read_capped(response, MAX_ANSWER_BYTES).await else {
        return Asked::Failed;
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(answer) => read_count(&answer).map_or(Asked::Missing, Asked::Count),
        Err(_) => Asked::Missing,
    }
}

/// `count`, or the length of `tokens`.
fn read_count(answer: &Value) -> Option<u64> {
    answer
        .get("count")
        .and_then(Value::as_u64)
        .or_else(|| answer.get("tokens")?.as_array().map(|t| t.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_either_answer() {
        assert_eq!(read_count(&json!({"tokens": [1, 2, 3]})), Some(3));
        assert_eq!(
            read_count(&json!({"count": 7, "max_model_len": 2048, "tokens": [1]})),
            Some(7)
        );
        assert_eq!(read_count(&json!({"detail": "Not Found"})), None);
    }
}
