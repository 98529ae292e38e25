//! The messages inflight sends to WebSocket subscribers and upstream to
//! feeds, in the original system's envelope:
//!
//! ```json
//! {"type": "processing_status", "data": {...}, "timestamp": "2024-01-01T12:00:00Z", "sessionId": "session-123"}
//! ```
//!
//! `processing_status` goes out on every start, finish and skip;
//! `{op}_update` (`summary_update`, `mind_map_update`, `action_items_update`…)
//! when a result is stored.

use std::time::SystemTime;

use serde::Serialize;

use crate::engine::{Engine, OpResult};
use crate::events::Event;
use crate::model::{Operation, SessionId};
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

/// A result's `data`: `{session_id, <op name>: body, covered_generation,
/// model, processing_time}`, in that order (the original's for
/// `summary_update` and `mind_map_update`).
struct ResultData<'a> {
    session: &'a SessionId,
    op: Operation,
    result: &'a OpResult,
}

impl Serialize for ResultData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(5))?;
        map.serialize_entry("session_id", self.session)?;
        map.serialize_entry(
            self.op.as_str(),
            &crate::ops::output::WireRef(&self.result.body),
        )?;
        map.serialize_entry("covered_generation", &self.result.covered_generation)?;
        map.serialize_entry("model", &self.result.model)?;
        map.serialize_entry(
            "processing_time",
            &self.result.processing_time.as_secs_f64(),
        )?;
        map.end()
    }
}

/// `{op}_update` for a stored result: `summary_update` and
/// `mind_map_update` as the original sends them, and the same for every
/// other operation.
pub fn result_update(
    session: &SessionId,
    op: Operation,
    result: &OpResult,
    at: SystemTime,
) -> Option<String> {
    envelope(
        &format!("{op}_update"),
        session,
        ResultData {
            session,
            op,
            result,
        },
        at,
    )
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
            .and_then(|r| result_update(session, op, &r, now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ResultBody;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn every_operation_has_its_update_message_named_after_it() {
        let session = SessionId::parse("s").unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_704_110_400);
        let result = |body| OpResult {
            body,
            covered_generation: 4,
            run_id: 9,
            model: "m".into(),
            processing_time: Duration::from_millis(1500),
            finished_at: at,
            truncated: false,
        };
        assert_eq!(
            result_update(
                &session,
                Operation::SUMMARY,
                &result(ResultBody::Text("We ship.".into())),
                at
            )
            .unwrap(),
            r#"{"type":"summary_update","data":{"session_id":"s","summary":"We ship.","covered_generation":4,"model":"m","processing_time":1.5},"timestamp":"2024-01-01T12:00:00Z","sessionId":"s"}"#
        );
        let actions = Operation::named("wire_action_items").unwrap();
        let body = ResultBody::Json(serde_json::json!({"items": [{"owner": "ana"}]}));
        assert_eq!(
            result_update(&session, actions, &result(body), at).unwrap(),
            r#"{"type":"wire_action_items_update","data":{"session_id":"s","wire_action_items":{"items":[{"owner":"ana"}]},"covered_generation":4,"model":"m","processing_time":1.5},"timestamp":"2024-01-01T12:00:00Z","sessionId":"s"}"#
        );
    }

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
