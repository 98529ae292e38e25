//! Deepgram live streaming. A `Results` message carries
//! `channel.alternatives[0].transcript`, `is_final`, `start` and `duration`
//! (seconds); `metadata.request_id` names the stream. `Metadata`,
//! `UtteranceEnd` and `SpeechStarted` carry no words and are passed over.
//! Empty transcripts (silence) make no record.

use serde_json::Value;

use super::{session, transcript};
use crate::feed::protocol::{FeedMessage, FrameError};

pub fn decode(value: &Value, fallback_session: &str) -> Result<Vec<FeedMessage>, FrameError> {
    match value.get("type").and_then(Value::as_str) {
        Some("Results") => {}
        Some("Metadata" | "UtteranceEnd" | "SpeechStarted") => return Ok(Vec::new()),
        Some(other) => return Err(FrameError::UnknownType(other.chars().take(40).collect())),
        None => return Err(FrameError::MissingField("type")),
    }
    let text = value
        .pointer("/channel/alternatives/0/transcript")
        .and_then(Value::as_str)
        .ok_or(FrameError::MissingField(
            "channel.alternatives[0].transcript",
        ))?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let id = value
        .pointer("/metadata/request_id")
        .and_then(Value::as_str)
        .unwrap_or(fallback_session);
    let start = value.get("start").and_then(Value::as_f64);
    let end = match (start, value.get("duration").and_then(Value::as_f64)) {
        (Some(s), Some(d)) => Some(s + d),
        _ => None,
    };
    let speaker = value
        .pointer("/channel/alternatives/0/words/0/speaker")
        .and_then(Value::as_u64)
        .map(|n| format!("speaker {n}"));
    let is_final = value
        .get("is_final")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(vec![transcript(
        session(id)?,
        None,
        text,
        speaker,
        start,
        end,
        is_final,
    )])
}
