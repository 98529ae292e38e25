//! Feed health as the engine sees it: one [`FeedStatus`] per `--feed`, updated
//! by its client, and one for the transcripts pushed in (`POST
//! /api/transcripts`, `/ingest`) when pushing is on; read by snapshots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::store::Appended;
use crate::llm::Usage;
use crate::ops::{OpMap, Operation};

/// Where a feed's connection is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FeedState {
    /// Pushed in: waiting for a pusher to connect to `/ingest` (batches
    /// are taken meanwhile).
    Listening,
    Connecting,
    Connected,
    /// Waiting before the next attempt.
    BackingOff {
        #[serde(with = "crate::monotime")]
        until: Instant,
        attempt: u32,
    },
    Closed {
        reason: String,
    },
}

impl FeedState {
    pub fn word(&self) -> &'static str {
        match self {
            FeedState::Listening => "listening",
            FeedState::Connecting => "connecting",
            FeedState::Connected => "connected",
            FeedState::BackingOff { .. } => "backing off",
            FeedState::Closed { .. } => "closed",
        }
    }
}

/// Kinds of bad input a feed can send, each counted on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFrame {
    InvalidJson,
    UnknownType,
    BadSessionId,
    Oversized,
    Binary,
    InvalidUtf8,
    TextCut,
    /// A `seq` above 2^53.
    BadSeq,
}

impl BadFrame {
    pub const ALL: [BadFrame; 8] = [
        BadFrame::InvalidJson,
        BadFrame::UnknownType,
        BadFrame::BadSessionId,
        BadFrame::Oversized,
        BadFrame::Binary,
        BadFrame::InvalidUtf8,
        BadFrame::TextCut,
        BadFrame::BadSeq,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BadFrame::InvalidJson => "invalid_json",
            BadFrame::UnknownType => "unknown_type",
            BadFrame::BadSessionId => "bad_session_id",
            BadFrame::Oversized => "oversized",
            BadFrame::Binary => "binary",
            BadFrame::InvalidUtf8 => "invalid_utf8",
            BadFrame::TextCut => "text_cut",
            BadFrame::BadSeq => "bad_seq",
        }
    }
}

/// One feed's live status; shared between its client and the engine.
#[derive(Debug)]
pub struct FeedStatus {
    pub index: usize,
    /// The feed's URL with its secrets redacted: fit for views and logs.
    pub url: String,
    /// Pushed in, not dialled: it never makes the engine unready.
    pub inbound: bool,
    state: Mutex<FeedState>,
    last_message_at: Mutex<Option<Instant>>,
    pub messages: AtomicU64,
    /// Final transcripts taken in (partials and replays not counted).
    pub transcripts: AtomicU64,
    pub duplicates: AtomicU64,
    /// New sessions refused because the store was full (`--max-sessions`).
    pub refused_sessions: AtomicU64,
    pub connects: AtomicU64,
    /// Times it stopped reading until the database's writer caught up
    /// (`db/pace.rs`).
    pub database_waits: AtomicU64,
    bad: [AtomicU64; BadFrame::ALL.len()],
    /// Tokens and cost of its sessions' LLM calls, per operation.
    spend: Mutex<OpMap<Usage>>,
}

impl FeedStatus {
    fn new(index: usize, url: String, inbound: bool) -> Self {
        Self {
            index,
            url,
            inbound,
            state: Mutex::new(if inbound {
                FeedState::Listening
            } else {
                FeedState::Connecting
            }),
            last_message_at: Mutex::new(None),
            messages: AtomicU64::new(0),
            transcripts: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            refused_sessions: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            database_waits: AtomicU64::new(0),
            bad: Default::default(),
            spend: Mutex::default(),
        }
    }

    pub fn set_state(&self, state: FeedState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    pub fn state(&self) -> FeedState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn saw_message(&self) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        *self
            .last_message_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Counts one transcript as the store took it.
    pub fn count(&self, appended: &Appended) {
        match appended {
            Appended::Duplicate => self.duplicates.fetch_add(1, Ordering::Relaxed),
            Appended::Final { .. } => self.transcripts.fetch_add(1, Ordering::Relaxed),
            Appended::Refused => self.refused_sessions.fetch_add(1, Ordering::Relaxed),
            Appended::Partial { .. } => return,
        };
    }

    pub fn count_bad(&self, kind: BadFrame) -> u64 {
        self.bad[kind as usize].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts one call of `op` for one of its sessions.
    pub fn spent(&self, op: Operation, usage: Usage) {
        let mut spend = self.spend.lock().unwrap_or_else(|e| e.into_inner());
        let total = spend.entry(op);
        *total = total.plus(usage);
    }

    pub fn bad(&self, kind: BadFrame) -> u64 {
        self.bad[kind as usize].load(Ordering::Relaxed)
    }

    pub fn view(&self) -> FeedView {
        FeedView {
            index: self.index,
            url: self.url.clone(),
            inbound: self.inbound,
            state: self.state(),
            last_message_at: *self
                .last_message_at
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            messages: self.messages.load(Ordering::Relaxed),
            transcripts: self.transcripts.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            refused_sessions: self.refused_sessions.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            bad_frames: BadFrame::ALL.iter().map(|k| self.bad(*k)).sum(),
            database_waits: self.database_waits.load(Ordering::Relaxed),
            by_op: self.spend.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// A copy of one feed's status for views.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeedView {
    pub index: usize,
    pub url: String,
    /// Pushed in (`POST /api/transcripts`, `/ingest`), not dialled.
    #[serde(default)]
    pub inbound: bool,
    pub state: FeedState,
    #[serde(with = "crate::monotime::option")]
    pub last_message_at: Option<Instant>,
    pub messages: u64,
    pub transcripts: u64,
    pub duplicates: u64,
    pub refused_sessions: u64,
    pub connects: u64,
    pub bad_frames: u64,
    /// Times it stopped reading to wait for the database's writer.
    #[serde(default)]
    pub database_waits: u64,
    /// Tokens and cost of its sessions' LLM calls, per operation.
    #[serde(default)]
    pub by_op: OpMap<Usage>,
}

impl FeedView {
    /// Tokens and cost of its sessions' LLM calls, all operations.
    pub fn spend(&self) -> Usage {
        self.by_op
            .iter()
            .fold(Usage::default(), |total, (_, usage)| total.plus(*usage))
    }
}

/// All feeds, in the order they were given.
#[derive(Debug, Default)]
pub struct FeedRegistry {
    feeds: Mutex<Vec<Arc<FeedStatus>>>,
}

impl FeedRegistry {
    /// A feed inflight dials (`--feed`).
    pub fn register(&self, url: impl Into<String>) -> Arc<FeedStatus> {
        self.add(url.into(), false)
    }

    /// The transcripts pushed in: one status for every batch and `/ingest`
    /// socket, so a pusher that reconnects resumes its own sessions.
    pub fn register_inbound(&self, name: impl Into<String>) -> Arc<FeedStatus> {
        self.add(name.into(), true)
    }

    fn add(&self, url: String, inbound: bool) -> Arc<FeedStatus> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        let status = Arc::new(FeedStatus::new(feeds.len(), url, inbound));
        feeds.push(status.clone());
        status
    }

    /// The live statuses themselves (per-kind counters and all).
    pub fn statuses(&self) -> Vec<Arc<FeedStatus>> {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The URL (or, pushed in, the name) of feed `index`.
    pub fn url_of(&self, index: usize) -> Option<String> {
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(index)
            .map(|feed| feed.url.clone())
    }

    /// Counts one call of `op` for a session of feed `index`.
    pub fn spent(&self, index: usize, op: Operation, usage: Usage) {
        let feed = self
            .feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(index)
            .cloned();
        if let Some(feed) = feed {
            feed.spent(op, usage);
        }
    }

    pub fn views(&self) -> Vec<FeedView> {
        let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        feeds.iter().map(|f| f.view()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_per_kind_and_returned() {
        let feed = FeedStatus::new(0, "ws://x/".into(), false);
        assert_eq!(feed.count_bad(BadFrame::Binary), 1);
        assert_eq!(feed.count_bad(BadFrame::Binary), 2);
        assert_eq!(feed.count_bad(BadFrame::InvalidJson), 1);
        assert_eq!(feed.bad(BadFrame::Binary), 2);
        assert_eq!(feed.view().bad_frames, 3);
        feed.count(&Appended::Refused);
        feed.count(&Appended::Duplicate);
        feed.count(&Appended::Final { generation: 1 });
        feed.count(&Appended::Partial { generation: 1 });
        let view = feed.view();
        assert_eq!(
            (view.refused_sessions, view.duplicates, view.transcripts),
            (1, 1, 1)
        );
    }
}
