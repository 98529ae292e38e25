//! The native feed protocol: JSON text frames, one message each.
//!
//! ```json
//! {"type": "transcript", "session_id": "sess-0001", "seq": 17, "text": "We ship on Friday.",
//!  "speaker": "spk1", "start": 51.0, "end": 53.5, "final": true}
//! {"type": "session_end", "session_id": "sess-0001"}
//! ```
//!
//! `seq` is optional (when present, replays are dropped by it), `final`
//! defaults to `true`. On connect a client sends
//! `{"type": "hello", "client": "inflight/<version>", "resume": {"<session>": <last seq>}}`.
//! Parsing never panics: every bad frame maps to a [`FrameError`] that the
//! client counts by kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::feeds::BadFrame;
use crate::model::{SessionId, Transcript};
use crate::text;

/// Frames larger than this are refused.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Transcript text longer than this is cut (and counted).
pub const MAX_TEXT_BYTES: usize = 32 * 1024;

/// One understood message.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedMessage {
    /// `cut` is true when the text was longer than [`MAX_TEXT_BYTES`].
    Transcript {
        transcript: Transcript,
        cut: bool,
    },
    SessionEnd(SessionId),
    /// A `hello` (sent by clients; a server may read it).
    Hello {
        resume: BTreeMap<String, u64>,
    },
}

/// The largest `seq` accepted: 2^53, the largest integer every JSON
/// implementation reads exactly. A frame above it would make every later
/// frame of its session look like a replay: one hostile frame would mute it.
pub const MAX_SEQ: u64 = 1 << 53;

/// Why a frame was not understood.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameError {
    InvalidJson(String),
    UnknownType(String),
    BadSessionId(String),
    MissingField(&'static str),
    SeqTooLarge(u64),
    /// A session `kind` that is not `[a-z][a-z0-9_]{0,31}`.
    BadKind(String),
}

impl FrameError {
    pub fn kind(&self) -> BadFrame {
        match self {
            FrameError::InvalidJson(_) | FrameError::MissingField(_) => BadFrame::InvalidJson,
            FrameError::UnknownType(_) => BadFrame::UnknownType,
            FrameError::BadSessionId(_) => BadFrame::BadSessionId,
            FrameError::SeqTooLarge(_) => BadFrame::BadSeq,
            FrameError::BadKind(_) => BadFrame::InvalidJson,
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::InvalidJson(e) => write!(f, "invalid JSON: {e}"),
            FrameError::UnknownType(t) => {
                write!(f, "unknown message type {:?}", text::strip_controls(t))
            }
            FrameError::BadSessionId(e) => write!(f, "bad session id: {e}"),
            FrameError::MissingField(name) => write!(f, "missing field {name:?}"),
            FrameError::SeqTooLarge(seq) => write!(f, "seq {seq} is above 2^53"),
            FrameError::BadKind(kind) => write!(
                f,
                "bad session kind {kind:?}: a-z, 0-9 and _, starting with a letter, at most 32"
            ),
        }
    }
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    session_id: Option<String>,
    seq: Option<u64>,
    text: Option<String>,
    speaker: Option<String>,
    start: Option<f64>,
    end: Option<f64>,
    #[serde(rename = "final")]
    is_final: Option<bool>,
    #[serde(rename = "kind")]
    session_kind: Option<String>,
    resume: Option<BTreeMap<String, u64>>,
}

/// A `seq` as given, refused when above [`MAX_SEQ`].
pub fn checked_seq(seq: Option<u64>) -> Result<Option<u64>, FrameError> {
    match seq {
        Some(seq) if seq > MAX_SEQ => Err(FrameError::SeqTooLarge(seq)),
        seq => Ok(seq),
    }
}

/// Parses one native text frame.
///
/// ```
/// use inflight::feed::protocol::{parse, FeedMessage};
///
/// let frame = r#"{"type": "transcript", "session_id": "s-1", "seq": 3, "text": "We ship on Friday."}"#;
/// let Ok(FeedMessage::Transcript { transcript, .. }) = parse(frame) else { panic!() };
/// assert!(transcript.is_final, "final defaults to true");
/// assert!(parse(r#"{"type": "weather"}"#).is_err());
/// ```
pub fn parse(frame: &str) -> Result<FeedMessage, FrameError> {
    let frame: Frame =
        serde_json::from_str(frame).map_err(|e| FrameError::InvalidJson(e.to_string()))?;
    understand(frame)
}

/// Parses one native message already read as JSON (an item of a pushed
/// batch).
pub fn parse_value(value: serde_json::Value) -> Result<FeedMessage, FrameError> {
    let frame: Frame =
        serde_json::from_value(value).map_err(|e| FrameError::InvalidJson(e.to_string()))?;
    understand(frame)
}

fn understand(frame: Frame) -> Result<FeedMessage, FrameError> {
    let session = || -> Result<SessionId, FrameError> {
        let raw = frame
            .session_id
            .as_deref()
            .ok_or(FrameError::MissingField("session_id"))?;
        SessionId::parse(raw).map_err(|e| FrameError::BadSessionId(e.to_string()))
    };
    match frame.kind.as_str() {
        "transcript" => {
            let session_id = session()?;
            let raw = frame
                .text
                .as_deref()
                .ok_or(FrameError::MissingField("text"))?;
            let mut text = text::strip_controls(raw).into_owned();
            let cut = text::cut_to(&mut text, MAX_TEXT_BYTES);
            let speaker = frame
                .speaker
                .as_deref()
                .map(|s| {
                    let mut s = text::strip_controls(s).into_owned();
                    text::cut_to(&mut s, 64);
                    s
                })
                .filter(|s| !s.is_empty());
            Ok(FeedMessage::Transcript {
                transcript: Transcript {
                    session_id,
                    seq: checked_seq(frame.seq)?,
                    text,
                    speaker,
                    start: frame.start.filter(|s| s.is_finite()),
                    end: frame.end.filter(|s| s.is_finite()),
                    is_final: frame.is_final.unwrap_or(true),
                    kind: match frame.session_kind {
                        Some(kind) if crate::ops::well_formed(&kind) => Some(kind),
                        Some(kind) => {
                            let mut shown = text::strip_controls(&kind).into_owned();
                            text::cut_to(&mut shown, 40);
                            return Err(FrameError::BadKind(shown));
                        }
                        None => None,
                    },
                },
                cut,
            })
        }
        "session_end" => Ok(FeedMessage::SessionEnd(session()?)),
        "hello" => Ok(FeedMessage::Hello {
            resume: frame.resume.unwrap_or_default(),
        }),
        other => Err(FrameError::UnknownType(other.chars().take(40).collect())),
    }
}

/// The `hello` a client sends on every connect.
#[derive(Debug, Serialize)]
pub struct Hello<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub client: String,
    pub resume: &'a BTreeMap<String, u64>,
}

impl<'a> Hello<'a> {
    pub fn new(resume: &'a BTreeMap<String, u64>) -> Self {
        Self {
            kind: "hello",
            client: format!("inflight/{}", env!("CARGO_PKG_VERSION")),
            resume,
        }
    }
}

/// A transcript as a native frame (the replay server's output).
pub fn transcript_frame(transcript: &Transcript) -> String {
    let mut frame = serde_json::json!({
        "type": "transcript",
        "session_id": transcript.session_id,
        "text": transcript.text,
        "final": transcript.is_final,
    });
    if let Some(seq) = transcript.seq {
        frame["seq"] = seq.into();
    }
    if let Some(speaker) = &transcript.speaker {
        frame["speaker"] = speaker.as_str().into();
    }
    if let Some(kind) = &transcript.kind {
        frame["kind"] = kind.as_str().into();
    }
    if let Some(start) = transcript.start {
        frame["start"] = start.into();
    }
    if let Some(end) = transcript.end {
        frame["end"] = end.into();
    }
    frame.to_string()
}

/// A `session_end` frame.
pub fn session_end_frame(session: &SessionId) -> String {
    serde_json::json!({"type": "session_end", "session_id": session}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_kind_is_read_and_a_malformed_one_refused() {
        let msg = parse(r#"{"type":"transcript","session_id":"s","text":"hi","kind":"standup"}"#)
            .unwrap();
        let FeedMessage::Transcript { transcript, .. } = msg else {
            panic!("{msg:?}")
        };
        assert_eq!(transcript.kind.as_deref(), Some("standup"));
        let bad =
            parse(r#"{"type":"transcript","session_id":"s","text":"hi","kind":"Sales Call"}"#);
        assert!(matches!(bad, Err(FrameError::BadKind(_))), "{bad:?}");
        let none = parse(r#"{"type":"transcript","session_id":"s","text":"hi"}"#).unwrap();
        let FeedMessage::Transcript { transcript, .. } = none else {
            panic!()
        };
        assert_eq!(transcript.kind, None);
    }

    #[test]
    fn a_seq_above_2_pow_53_is_refused() {
        let frame = |seq: u64| {
            format!(r#"{{"type":"transcript","session_id":"s","seq":{seq},"text":"x"}}"#)
        };
        assert!(parse(&frame(MAX_SEQ)).is_ok());
        assert_eq!(
            parse(&frame(MAX_SEQ + 1)).unwrap_err(),
            FrameError::SeqTooLarge(MAX_SEQ + 1)
        );
        let err = parse(&frame(u64::MAX)).unwrap_err();
        assert_eq!(err.kind(), BadFrame::BadSeq);
    }

    #[test]
    fn transcripts_parse_with_defaults() {
        let msg = parse(r#"{"type":"transcript","session_id":"s-1","seq":17,"text":"We ship on Friday.","speaker":"spk1","start":51.0,"end":53.5}"#).unwrap();
        let FeedMessage::Transcript { transcript, cut } = msg else {
            panic!("expected a transcript, got {msg:?}")
        };
        assert!(!cut);
        assert!(transcript.is_final);
        assert_eq!(transcript.seq, Some(17));
        assert_eq!(transcript.speaker.as_deref(), Some("spk1"));
        assert_eq!(
            parse(&transcript_frame(&transcript)).unwrap(),
            FeedMessage::Transcript {
                transcript,
                cut: false
            }
        );
    }

    #[test]
    fn bad_frames_are_classified() {
        assert_eq!(parse("{").unwrap_err().kind(), BadFrame::InvalidJson);
        assert_eq!(
            parse(r#"{"type":"weather"}"#).unwrap_err().kind(),
            BadFrame::UnknownType
        );
        assert_eq!(
            parse(r#"{"type":"transcript","session_id":"a b","text":"x"}"#)
                .unwrap_err()
                .kind(),
            BadFrame::BadSessionId
        );
        assert_eq!(
            parse(r#"{"type":"transcript","session_id":"ab"}"#).unwrap_err(),
            FrameError::MissingField("text")
        );
        let deep = "[".repeat(10_000);
        assert_eq!(parse(&deep).unwrap_err().kind(), BadFrame::InvalidJson);
    }

    #[test]
    fn text_is_cleaned_and_cut() {
        let long = "é".repeat(MAX_TEXT_BYTES);
        let frame = serde_json::json!({"type":"transcript","session_id":"s","text": format!("\u{1b}[2J{long}")}).to_string();
        let Ok(FeedMessage::Transcript { transcript, cut }) = parse(&frame) else {
            panic!("expected a transcript")
        };
        assert!(cut);
        assert!(transcript.text.len() <= MAX_TEXT_BYTES);
        assert!(!transcript.text.contains('\u{1b}'));
    }
}
