//! What happened, as one stream: the engine's events and the bus that carries them.
//!
//! Every state change worth showing — a transcript in, a run queued, started,
//! skipped or finished, a session cleaned up, a result ready, a feed up or
//! down — is one [`Event`]. [`EventBus::emit`] logs it through `tracing`
//! (the fields `session_id`, `op`, `run_id`, `duration_ms`) and hands it to every
//! subscriber of one `tokio::sync::broadcast` channel. A subscriber that falls
//! behind loses the oldest events (it is told how many); the engine never waits.

use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::model::{Operation, SessionId};

/// A run's identity: grows with every run the process starts, so a finish
/// carrying an older id than the slot's current one is recognised as stale.
pub type RunId = u64;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    Cancelled,
    TimedOut,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut => "timed_out",
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    TranscriptReceived {
        session: SessionId,
        generation: u64,
        is_final: bool,
    },
    /// A run was admitted and waits for an LLM permit.
    OpQueued {
        session: SessionId,
        op: Operation,
        run_id: RunId,
        follow_up: bool,
    },
    /// A run got its permit and is calling the LLM.
    OpStarted {
        session: SessionId,
        op: Operation,
        run_id: RunId,
        covered_generation: u64,
    },
    /// A request was refused because a run of the same op is in flight.
    OpSkipped {
        session: SessionId,
        op: Operation,
        running_run_id: RunId,
        since: SystemTime,
        pending: bool,
    },
    OpFinished {
        session: SessionId,
        op: Operation,
        run_id: RunId,
        duration: Duration,
        outcome: Outcome,
        error: Option<String>,
    },
    /// The session has no run in flight any more; its in-flight entry is gone.
    SessionCleaned {
        session: SessionId,
    },
    ResultReady {
        session: SessionId,
        op: Operation,
        run_id: RunId,
        covered_generation: u64,
    },
    FeedConnected {
        feed: usize,
        url: String,
    },
    FeedDisconnected {
        feed: usize,
        url: String,
        reason: String,
    },
}

impl Event {
    /// The session the event is about, if any.
    pub fn session(&self) -> Option<&SessionId> {
        match self {
            Event::TranscriptReceived { session, .. }
            | Event::OpQueued { session, .. }
            | Event::OpStarted { session, .. }
            | Event::OpSkipped { session, .. }
            | Event::OpFinished { session, .. }
            | Event::SessionCleaned { session }
            | Event::ResultReady { session, .. } => Some(session),
            Event::FeedConnected { .. } | Event::FeedDisconnected { .. } => None,
        }
    }

    /// True for the events after which a session's processing status changed
    /// or was refused: the moments the seed sends `processing_status`.
    pub fn changes_processing_status(&self) -> bool {
        matches!(
            self,
            Event::OpQueued { .. } | Event::OpFinished { .. } | Event::OpSkipped { .. }
        )
    }
}

/// How many events a slow subscriber may lag behind before it loses the oldest.
pub const EVENT_BUFFER: usize = 8192;

/// The one broadcast of events, with logging on the way in.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        Self { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Logs the event and sends it to every subscriber; never blocks.
    pub fn emit(&self, event: Event) {
        log(&event);
        // No subscriber is not an error: events are for whoever listens.
        let _ = self.sender.send(event);
    }
}

fn log(event: &Event) {
    match event {
        Event::TranscriptReceived {
            session,
            generation,
            is_final,
        } => tracing::trace!(session_id = %session, generation, is_final, "transcript received"),
        Event::OpQueued {
            session,
            op,
            run_id,
            follow_up,
        } => {
            tracing::debug!(session_id = %session, op = %op, run_id, follow_up, "processing admitted, waiting for an LLM permit")
        }
        Event::OpStarted {
            session,
            op,
            run_id,
            covered_generation,
        } => {
            tracing::info!(session_id = %session, op = %op, run_id, covered_generation, "processing started")
        }
        Event::OpSkipped {
            session,
            op,
            running_run_id,
            pending,
            since,
        } => {
            let running_ms = since.elapsed().map(|d| d.as_millis()).unwrap_or(0);
            tracing::info!(session_id = %session, op = %op, run_id = running_run_id, running_ms, pending, "already processing, skipped")
        }
        Event::OpFinished {
            session,
            op,
            run_id,
            duration,
            outcome,
            error,
        } => {
            let duration_ms = duration.as_millis() as u64;
            match (outcome, error) {
                (Outcome::Ok, _) => {
                    tracing::info!(session_id = %session, op = %op, run_id, duration_ms, outcome = outcome.as_str(), "processing finished")
                }
                (_, Some(error)) => {
                    tracing::warn!(session_id = %session, op = %op, run_id, duration_ms, outcome = outcome.as_str(), error = %error, "processing ended")
                }
                (_, None) => {
                    tracing::warn!(session_id = %session, op = %op, run_id, duration_ms, outcome = outcome.as_str(), "processing ended")
                }
            }
        }
        Event::SessionCleaned { session } => {
            tracing::debug!(session_id = %session, "no processing left, session state cleaned up")
        }
        Event::ResultReady {
            session,
            op,
            run_id,
            covered_generation,
        } => {
            tracing::debug!(session_id = %session, op = %op, run_id, covered_generation, "result ready")
        }
        Event::FeedConnected { feed, url } => tracing::info!(feed, url = %url, "feed connected"),
        Event::FeedDisconnected { feed, url, reason } => {
            tracing::warn!(feed, url = %url, reason = %reason, "feed disconnected")
        }
    }
}
