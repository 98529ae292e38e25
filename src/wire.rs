//! The messages inflight sends to WebSocket subscribers and upstream to
//! feeds, in the original system's envelope:
//!
//! ```json
//! {"type": "processing_status", "data": {...}, "timestamp": "2024-01-01T12:00:00Z", "sessionId": "session-123"}
//! ```
//!
//! `processing_status` goes out on every start, finish and skip;
//! `summary_update` and `mind_map_update` when a result is stored.

use std::time::SystemTime;

use serde::Serialize;

use crate::engine::{Engine, OpResult, ResultBody};
use crate::events::Event;
use crate::model::{MindMap, Operation, SessionId};
use crate::state::ProcessingStatus;

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: T,
    timestamp: String,
    #[serde(rename = "sessionId")]
    session_id: &'a SessionId,
}

/// RFC 3339 in UTC with whole seconds, as the original system writes it.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn envelope<T: Serialize>(
    kind: &str,
    session: &SessionId,
    data: T,
    at: SystemTime,
) -> Option<String> {
    serde_json::to_string(&Envelope {
        kind,
        data,
        timestamp: timestamp(at),
        session_id: session,
    })
    .ok()
}

/// The original `processing_status` message.
pub fn processing_status(status: &ProcessingStatus, at: SystemTime) -> Option<String> {
    envelope("processing_status", &status.session_id, status, at)
}

#[derive(Serialize)]
struct SummaryData<'a> {
    session_id: &'a SessionId,
    summary: &'a str,
    covered_generation: u64,
    model: &'a str,
    processing_time: f64,
}

#[derive(Serialize)]
struct MindMapData<'a> {
    session_id: &'a SessionId,
    mind_map: &'a MindMap,
    covered_generation: u64,
    model: &'a str,
    processing_time: f64,
}

/// `summary_update` or `mind_map_update` for a stored result.
pub fn result_update(session: &SessionId, result: &OpResult, at: SystemTime) -> Option<String> {
    let processing_time = result.processing_time.as_secs_f64();
    match &result.body {
        ResultBody::Text(summary) => envelope(
            "summary_update",
            session,
            SummaryData {
                session_id: session,
                summary,
                covered_generation: result.covered_generation,
                model: &result.model,
                processing_time,
            },
            at,
        ),
        ResultBody::Tree(mind_map) => envelope(
            "mind_map_update",
            session,
            MindMapData {
                session_id: session,
                mind_map,
                covered_generation: result.covered_generation,
                model: &result.model,
                processing_time,
            },
            at,
        ),
    }
}

/// Which messages an event calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Status,
    Result(Operation),
}

/// The message kind an event calls for, if any.
pub fn wanted(event: &Event) -> Option<(SessionId, Wanted)> {
    match event {
        Event::ResultReady { session, op, .. } => Some((session.clone(), Wanted::Result(*op))),
        e if e.changes_processing_status() => e.session().map(|s| (s.clone(), Wanted::Status)),
        _ => None,
    }
}

/// Builds the message for an event from the engine's current state.
pub fn message_for(engine: &Engine, session: &SessionId, wanted: Wanted) -> Option<String> {
    let now = SystemTime::now();
    match wanted {
        Wanted::Status => processing_status(&engine.status(session), now),
        Wanted::Result(op) => engine
            .result(session, op)
            .and_then(|r| result_update(session, &r, now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn envelopes_have_the_original_shape() {
        let session = SessionId::parse("session-123").unwrap();
        let status = ProcessingStatus {
            mind_map_processing: true,
            any_processing: true,
            mind_map_start_time: Some(1640995200.0),
            ..ProcessingStatus::idle(session)
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_704_110_400);
        assert_eq!(
            processing_status(&status, at).unwrap(),
            r#"{"type":"processing_status","data":{"session_id":"session-123","summary_processing":false,"mind_map_processing":true,"any_processing":true,"summary_start_time":null,"mind_map_start_time":1640995200.0},"timestamp":"2024-01-01T12:00:00Z","sessionId":"session-123"}"#
        );
    }
}
