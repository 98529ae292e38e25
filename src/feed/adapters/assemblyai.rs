//! AssemblyAI Universal Streaming (v3). `Begin` names the session (`id`);
//! each `Turn` carries the turn's `transcript` so far, its `turn_order` and
//! `end_of_turn`; `Termination` ends the session. A turn is final at
//! `end_of_turn`; its sequence number is `turn_order + 1`, so the formatted
//! repeat of an ended turn is dropped as a duplicate. Word times are
//! milliseconds.

use serde_json::Value;

use super::{session, transcript};
use crate::feed::protocol::{FeedMessage, FrameError};
use crate::model::SessionId;

#[derive(Debug, Default)]
pub struct State {
    session: Option<SessionId>,
}

fn word_seconds(value: &Value, pointer: &str) -> Option<f64> {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .map(|ms| ms / 1000.0)
}

impl State {
    pub fn decode(&mut self, value: &Value) -> Result<Vec<FeedMessage>, FrameError> {
        match value.get("type").and_then(Value::as_str) {
            Some("Begin") => {
                let id = value
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or(FrameError::MissingField("id"))?;
                self.session = Some(session(id)?);
                Ok(Vec::new())
            }
            Some("Turn") => {
                let id = self
                    .session
                    .clone()
                    .ok_or(FrameError::MissingField("Begin before Turn"))?;
                let text = value
                    .get("transcript")
                    .and_then(Value::as_str)
                    .ok_or(FrameError::MissingField("transcript"))?;
                if text.trim().is_empty() {
                    return Ok(Vec::new());
                }
                let end_of_turn = value
                    .get("end_of_turn")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let seq = value
                    .get("turn_order")
                    .and_then(Value::as_u64)
                    .map(|n| n.checked_add(1).ok_or(FrameError::SeqTooLarge(n)))
                    .transpose()?;
                let seq = crate::feed::protocol::checked_seq(seq)?;
                let words_len = value
                    .get("words")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let start = word_seconds(value, "/words/0/start");
                let end = words_len
                    .checked_sub(1)
                    .and_then(|last| word_seconds(value, &format!("/words/{last}/end")));
                Ok(vec![transcript(
                    id,
                    if end_of_turn { seq } else { None },
                    text,
                    None,
                    start,
                    end,
                    end_of_turn,
                )])
            }
            Some("Termination") => Ok(self
                .session
                .take()
                .map(FeedMessage::SessionEnd)
                .into_iter()
                .collect()),
            Some(other) => Err(FrameError::UnknownType(other.chars().take(40).collect())),
            None => Err(FrameError::MissingField("type")),
        }
    }
}
