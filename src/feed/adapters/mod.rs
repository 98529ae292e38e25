//! Feed formats: each maps its messages to the native records
//! ([`FeedMessage`]). A [`Decoder`] belongs to one connection; it holds what
//! a format needs between messages (the session of an AssemblyAI stream,
//! the sliding window of WhisperLive) and, with [`FeedFormat::Auto`], picks
//! the format from the first message it recognises.

mod assemblyai;
mod deepgram;
mod whisperlive;

use serde_json::Value;

use super::protocol::{self, FeedMessage, FrameError};
use crate::model::SessionId;

/// A feed's message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FeedFormat {
    /// Detected from the first message.
    Auto,
    /// inflight's own protocol (`docs/feed-protocol.md`).
    Native,
    /// Deepgram live streaming `Results`.
    Deepgram,
    /// WhisperLive `{uid, segments}`.
    Whisperlive,
    /// AssemblyAI Universal Streaming (v3) `Begin` / `Turn` / `Termination`.
    Assemblyai,
}

impl FeedFormat {
    pub fn name(self) -> &'static str {
        match self {
            FeedFormat::Auto => "auto",
            FeedFormat::Native => "native",
            FeedFormat::Deepgram => "deepgram",
            FeedFormat::Whisperlive => "whisperlive",
            FeedFormat::Assemblyai => "assemblyai",
        }
    }
}

/// Turns one connection's frames into native records.
#[derive(Debug)]
pub struct Decoder {
    format: FeedFormat,
    /// Names sessions of formats that carry no id of their own (Deepgram
    /// without a request id).
    fallback_session: String,
    assemblyai: assemblyai::State,
    whisperlive: whisperlive::State,
}

impl Decoder {
    pub fn new(format: FeedFormat, fallback_session: impl Into<String>) -> Self {
        Self {
            format,
            fallback_session: fallback_session.into(),
            assemblyai: Default::default(),
            whisperlive: Default::default(),
        }
    }

    /// The format in use (`Auto` until a message was recognised).
    pub fn format(&self) -> FeedFormat {
        self.format
    }

    /// Drops what is kept for sessions `keep` says no to (those the engine
    /// no longer holds), so per-session state dies with its session.
    pub fn retain(&mut self, keep: impl Fn(&SessionId) -> bool) {
        self.whisperlive.retain(keep);
    }

    /// Decodes one text frame into zero or more records.
    pub fn decode(&mut self, frame: &str) -> Result<Vec<FeedMessage>, FrameError> {
        if self.format == FeedFormat::Native {
            return protocol::parse(frame).map(|m| vec![m]);
        }
        let value: Value =
            serde_json::from_str(frame).map_err(|e| FrameError::InvalidJson(e.to_string()))?;
        if self.format == FeedFormat::Auto {
            self.format =
                detect(&value).ok_or_else(|| FrameError::UnknownType(describe(&value)))?;
            tracing::info!(format = self.format.name(), "feed format detected");
        }
        match self.format {
            FeedFormat::Native | FeedFormat::Auto => protocol::parse(frame).map(|m| vec![m]),
            FeedFormat::Deepgram => deepgram::decode(&value, &self.fallback_session),
            FeedFormat::Whisperlive => self.whisperlive.decode(&value),
            FeedFormat::Assemblyai => self.assemblyai.decode(&value),
        }
    }
}

/// Which format a message belongs to.
fn detect(value: &Value) -> Option<FeedFormat> {
    match value.get("type").and_then(Value::as_str) {
        Some("transcript" | "session_end" | "hello") => Some(FeedFormat::Native),
        Some("Results" | "Metadata" | "UtteranceEnd" | "SpeechStarted") => {
            Some(FeedFormat::Deepgram)
        }
        Some("Begin" | "Turn" | "Termination") => Some(FeedFormat::Assemblyai),
        _ if value.get("uid").is_some() => Some(FeedFormat::Whisperlive),
        _ => None,
    }
}

fn describe(value: &Value) -> String {
    match value.get("type").and_then(Value::as_str) {
        Some(kind) => kind.chars().take(40).collect(),
        None => "(a message of no known format)".into(),
    }
}

/// A session id from a format's own field, checked like any other.
fn session(raw: &str) -> Result<crate::model::SessionId, FrameError> {
    crate::model::SessionId::parse(raw).map_err(|e| FrameError::BadSessionId(e.to_string()))
}

/// A transcript record, cleaned and cut as native ones are.
fn transcript(
    session_id: crate::model::SessionId,
    seq: Option<u64>,
    raw_text: &str,
    speaker: Option<String>,
    start: Option<f64>,
    end: Option<f64>,
    is_final: bool,
) -> FeedMessage {
    let mut text = crate::text::strip_controls(raw_text).trim().to_string();
    let cut = crate::text::cut_to(&mut text, protocol::MAX_TEXT_BYTES);
    FeedMessage::Transcript {
        transcript: crate::model::Transcript {
            session_id,
            seq,
            text,
            speaker,
            start: start.filter(|s| s.is_finite()),
            end: end.filter(|s| s.is_finite()),
            is_final,
            kind: None,
        },
        cut,
    }
}

#[cfg(test)]
mod tests;
