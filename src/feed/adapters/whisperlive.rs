//! WhisperLive. Each message `{uid, segments: [{start, end, text, completed}]}`
//! re-sends a sliding window of recent segments (times as strings or
//! numbers). Segments are keyed by their start: a completed one becomes a
//! final record the first time it is seen (later edits of it are ignored:
//! what was ingested stays), and the newest incomplete one is the live
//! partial line. Status messages (`{uid, message}`, `{uid, status}`) carry
//! no words; `DISCONNECT` ends the session.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use super::{session, transcript};
use crate::feed::protocol::{FeedMessage, FrameError};
use crate::model::SessionId;

/// Completed segment starts remembered per session (the window is smaller).
const REMEMBERED: usize = 512;

#[derive(Debug, Default)]
pub struct State {
    finals: HashMap<SessionId, VecDeque<u64>>,
}

/// A start time as a whole number of milliseconds, for exact keys.
fn millis(value: Option<&Value>) -> Option<u64> {
    let seconds = match value? {
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        v => v.as_f64()?,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1000.0).round() as u64)
}

fn seconds(value: Option<&Value>) -> Option<f64> {
    millis(value).map(|ms| ms as f64 / 1000.0)
}

impl State {
    pub fn retain(&mut self, keep: impl Fn(&SessionId) -> bool) {
        self.finals.retain(|session, _| keep(session));
    }

    pub fn decode(&mut self, value: &Value) -> Result<Vec<FeedMessage>, FrameError> {
        let uid = value
            .get("uid")
            .and_then(Value::as_str)
            .ok_or(FrameError::MissingField("uid"))?;
        let id = session(uid)?;
        if value.get("message").and_then(Value::as_str) == Some("DISCONNECT") {
            self.finals.remove(&id);
            return Ok(vec![FeedMessage::SessionEnd(id)]);
        }
        let Some(segments) = value.get("segments").and_then(Value::as_array) else {
            // SERVER_READY, WAIT, language detection and the like.
            return Ok(Vec::new());
        };
        let seen = self.finals.entry(id.clone()).or_default();
        let mut out = Vec::new();
        let mut partial = None;
        for segment in segments {
            let Some(start) = millis(segment.get("start")) else {
                continue;
            };
            let text = segment.get("text").and_then(Value::as_str).unwrap_or("");
            if text.trim().is_empty() {
                continue;
            }
            let completed = segment
                .get("completed")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !completed {
                partial = Some(segment);
                continue;
            }
            if seen.contains(&start) {
                continue;
            }
            if seen.len() == REMEMBERED {
                seen.pop_front();
            }
            seen.push_back(start);
            out.push(transcript(
                id.clone(),
                None,
                text,
                None,
                Some(start as f64 / 1000.0),
                seconds(segment.get("end")),
                true,
            ));
        }
        if let Some(segment) = partial {
            let text = segment.get("text").and_then(Value::as_str).unwrap_or("");
            out.push(transcript(
                id,
                None,
                text,
                None,
                seconds(segment.get("start")),
                seconds(segment.get("end")),
                false,
            ));
        }
        Ok(out)
    }
}
