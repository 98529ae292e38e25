//! Helpers shared by the integration tests: waiting on the engine's
//! events, test transcripts and sessions, log capture; and, one module
//! each, the peers a test starts (a feed, an API server, a scripted HTTP
//! server, the real binary as a child, a real redis-server, Prometheus'
//! promtool).
#![allow(dead_code)]

pub mod api_server;
pub mod blocking;
pub mod child;
pub mod feed;
pub mod promtool;
pub mod redis_server;
pub mod scripted;
pub mod test_deps;

use std::time::Duration;

use inflight::engine::Engine;
use inflight::events::Event;
use inflight::model::{SessionId, Transcript};
use tokio::sync::broadcast;

pub fn sid(raw: &str) -> SessionId {
    SessionId::parse(raw).expect("test session ids are valid")
}

pub fn final_line(session: &str, seq: u64, text: &str) -> Transcript {
    Transcript {
        session_id: sid(session),
        seq: Some(seq),
        text: text.into(),
        speaker: Some(format!("spk{}", seq % 3)),
        start: Some(seq as f64 * 2.0),
        end: Some(seq as f64 * 2.0 + 1.5),
        is_final: true,
        kind: None,
    }
}

/// Receives events until `done` says so, checking after every event.
/// Panics with `what` after `limit` (real or paused time).
pub async fn wait_until(
    events: &mut broadcast::Receiver<Event>,
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                panic!("event bus closed while waiting for {what}")
            }
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// Waits for the first event that `pick` maps to `Some`.
pub async fn next_matching<T>(
    events: &mut broadcast::Receiver<Event>,
    limit: Duration,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => panic!("lost {n} events"),
            Ok(Err(broadcast::error::RecvError::Closed)) => panic!("event bus closed"),
            Err(_) => panic!("no matching event in time"),
        }
    }
}

/// Makes `name` a session the engine holds without asking for any run: one
/// partial line (partials never request runs). Triggers need a known session.
pub fn open_session(engine: &Engine, name: &str) -> SessionId {
    let session = sid(name);
    engine.ingest(
        Transcript {
            session_id: session.clone(),
            seq: None,
            text: "…".into(),
            speaker: None,
            start: None,
            end: None,
            is_final: false,
            kind: None,
        },
        None,
    );
    session
}

/// Captures this thread's log lines until the guard drops. Rebuilds tracing's
/// callsite cache after installing the capture, so a callsite first hit on
/// another thread (with no subscriber) is not left switched off here.
pub fn capture_logs() -> (inflight::logs::LogBuffer, tracing::subscriber::DefaultGuard) {
    use tracing_subscriber::layer::SubscriberExt;
    let logs = inflight::logs::LogBuffer::new();
    let guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(inflight::logs::CaptureLayer::new(logs.clone())),
    );
    tracing::callsite::rebuild_interest_cache();
    (logs, guard)
}

pub fn is_idle_and(engine: &Engine, sessions: &[SessionId], generation: u64) -> bool {
    engine.is_idle() && sessions.iter().all(|s| engine.generation(s) == generation)
}
