//! What happened, as one stream: the engine's events and the bus that carries them.
//!
//! Every state change worth showing — a transcript in, a run queued, started,
//! skipped or finished, a session cleaned up, a result ready, a feed up or
//! down — is one [`Event`]. [`EventBus::emit`] logs it through `tracing`
//! (the fields `session_id`, `op`, `run_id`, `duration_ms`) and hands it to every
//! subscriber of one `tokio::sync::broadcast` channel. A subscriber that falls
//! behind loses the oldest events (it is told how many); the engine never waits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::model::{Operation, SessionId};

/// A run's identity: grows with every run the process starts, so a finish
/// carrying an older id than the slot's current one is recognised as stale.
pub type RunId = u64;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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

    /// True for the events `/ws` subscribers are sent a message for: a
    /// changed processing status, or a new result.
    pub fn for_subscribers(&self) -> bool {
        self.changes_processing_status() || matches!(self, Event::ResultReady { .. })
    }

    /// True for the events after which a session's processing status changed
    /// or was refused: the moments the original system sends `processing_status`.
    pub fn changes_processing_status(&self) -> bool {
        matches!(
            self,
            Event::OpQueued { .. } | Event::OpFinished { .. } | Event::OpSkipped { .. }
        )
    }
}

/// How many events a slow subscriber may lag behind before it loses the oldest.
pub const EVENT_BUFFER: usize = 8192;
/// How many events for `/ws` subscribers are kept for one that reconnects.
pub const REPLAY_RING: usize = 4096;

/// An event's number: every event `/ws` carries ([`Event::for_subscribers`])
/// gets the next one, from 1, so a client of the whole stream sees them
/// one after the other and can tell a gap.
pub type EventId = u64;

/// The one broadcast of events, with logging on the way in.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    journal: Arc<Mutex<Journal>>,
    /// Where records go (`--record`, clients recording over the API).
    tap: Arc<crate::record::Tap>,
}

/// Numbers the events `/ws` subscribers see and keeps the newest, so one
/// that reconnects can be sent what it missed.
struct Journal {
    next_id: EventId,
    ring: VecDeque<(EventId, Event)>,
    /// The newest id pushed out of the ring: a subscriber that saw less
    /// than this missed something the ring no longer has.
    evicted_through: EventId,
}

/// Where a resumed subscription starts.
#[derive(Debug)]
pub struct Resumed {
    /// The events after the one the subscriber named, still in the ring.
    pub replay: Vec<(EventId, Event)>,
    /// Some events it missed are gone (or its id is from another process):
    /// it must read the state afresh.
    pub too_old: bool,
    /// The id of the first event `receiver` will get; later ones count up.
    pub next_id: EventId,
    pub receiver: broadcast::Receiver<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            sender,
            journal: Arc::new(Mutex::new(Journal {
                next_id: 1,
                ring: VecDeque::new(),
                evicted_through: 0,
            })),
            tap: Arc::default(),
        }
    }

    /// Where the engine's records go.
    pub fn tap(&self) -> &Arc<crate::record::Tap> {
        &self.tap
    }

    /// The tap, while something records.
    pub fn recording(&self) -> Option<&crate::record::Tap> {
        self.tap.active().then_some(&*self.tap)
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Subscribes after event `seen`: what the ring still holds after it,
    /// then everything new, with no gap and no event twice (numbering and
    /// sending happen under one lock).
    pub fn resume(&self, seen: EventId) -> Resumed {
        let journal = self.journal();
        let receiver = self.sender.subscribe();
        let too_old = seen < journal.evicted_through || seen >= journal.next_id;
        let replay = journal
            .ring
            .iter()
            .filter(|(id, _)| *id > seen)
            .cloned()
            .collect();
        Resumed {
            replay,
            too_old,
            next_id: journal.next_id,
            receiver,
        }
    }

    /// Logs the event, numbers it and sends it to every subscriber; never
    /// blocks.
    pub fn emit(&self, event: Event) {
        log(&event);
        self.tap.event(&event);
        let mut journal = self.journal();
        if event.for_subscribers() {
            let id = journal.next_id;
            journal.next_id += 1;
            if journal.ring.len() == REPLAY_RING
                && let Some((old, _)) = journal.ring.pop_front()
            {
                journal.evicted_through = old;
            }
            journal.ring.push_back((id, event.clone()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(n: u64) -> Event {
        Event::OpSkipped {
            session: SessionId::parse("s").unwrap(),
            op: Operation::SUMMARY,
            running_run_id: n,
            since: SystemTime::UNIX_EPOCH,
            pending: false,
        }
    }

    fn transcript() -> Event {
        Event::TranscriptReceived {
            session: SessionId::parse("s").unwrap(),
            generation: 1,
            is_final: true,
        }
    }

    #[test]
    fn a_resumed_subscriber_gets_what_it_missed_then_the_rest_in_order() {
        let bus = EventBus::new();
        bus.emit(skipped(1)); // id 1
        bus.emit(transcript()); // no id: /ws carries no message for it
        bus.emit(skipped(3)); // id 2: the one after the last
        let mut resumed = bus.resume(1);
        assert!(!resumed.too_old);
        assert_eq!(resumed.next_id, 3);
        assert_eq!(resumed.replay, [(2, skipped(3))]);
        bus.emit(skipped(4));
        assert_eq!(resumed.receiver.try_recv().unwrap(), skipped(4));
        assert!(bus.resume(3).replay.is_empty() && !bus.resume(3).too_old);
        assert!(
            bus.resume(4).too_old,
            "an id not given yet: another process's"
        );
    }

    #[test]
    fn a_subscriber_behind_the_ring_is_told_to_reload() {
        let bus = EventBus::new();
        let total = REPLAY_RING as u64 + 10;
        for n in 1..=total {
            bus.emit(skipped(n));
        }
        assert!(bus.resume(5).too_old, "events 6..=10 are gone");
        let recent = bus.resume(total - 3);
        assert!(!recent.too_old);
        let ids: Vec<EventId> = recent.replay.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [total - 2, total - 1, total]);
        assert!(
            !bus.resume(10).too_old,
            "the oldest evicted was 10: 11 on are kept"
        );
    }
}
