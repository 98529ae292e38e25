//! Recordings: what crossed the engine's edges while it ran, written down
//! so that an incident can be replayed after it.
//!
//! A recording is a file of JSON lines, one [`Record`] each, and can be
//! appended to:
//!
//! - it opens with a [`Record::Header`]: the format's version, when the
//!   recording started, and the engine's settings. Every later record's
//!   `at` counts microseconds from that start, so times stay exact and
//!   small. A file appended to (or rotated) gets a header again;
//! - then, as they happened: every transcript as it arrived and every
//!   session end (with the feed that sent it); every admission, skip,
//!   start, end and result of a run; every LLM call's answer or error,
//!   with when it was sent and when it ended; `stop`, when the process
//!   began to stop; and `gap`, when the writer could not keep up and
//!   dropped records (it says how many).
//!
//! Where each part lives:
//! - `client.rs`: `inflight record --from`, a server recorded from outside
//!   over its API's live stream of records;
//! - `tap.rs`: the [`Tap`] on the engine's event bus, where every record
//!   starts: to the file, to clients recording over the API, or nowhere;
//! - `writer.rs`: the [`Recorder`] the tap hands records to, and the
//!   thread that writes them, rotates the file by size or age and keeps a
//!   bounded number of old files;
//! - `reader.rs`: reading a recording back, up to the first damage, and
//!   refusing a version this build does not know;
//! - `backend.rs`: the LLM backend that records every call, and the one
//!   that answers a replay's calls as they were recorded;
//! - `replay.rs`: the recorded transcripts fed through today's engine on a
//!   paused clock ([`Sim`]), and the comparison of the two outcomes;
//! - `player.rs`: the dashboard's replay, the same engine played at a
//!   speed, paused, stepped and sought, in a thread of its own;
//! - `report.rs`: that comparison as a table or as JSON;
//! - `sample.rs`: the demo recorded on a paused clock, for tests and
//!   benchmarks.

mod backend;
mod client;
mod player;
mod reader;
mod replay;
pub mod report;
pub mod sample;
mod tap;
mod ties;
mod writer;

pub use backend::{RecordingBackend, ReplayBackend};
pub use client::{Recorded, record_from};
pub use player::{Control, Frame, Player, SPEEDS};
pub use reader::{Damage, Reading, length, read};
pub use replay::{Comparison, Difference, Outcome, ReplaySettings, Sim, Tally, Totals, replay};
pub use tap::{LIVE_BUFFER, Live, Tap};
pub use writer::{RecordOptions, Recorder};

use serde::{Deserialize, Serialize};

use crate::events::Outcome as RunOutcome;
use crate::llm::Usage;
use crate::model::{Operation, SessionId, Transcript};

/// The format's version: a reader refuses a recording of a later one.
pub const FORMAT_VERSION: u32 = 1;

/// The first record's `k`, which says the file is a recording at all.
pub const HEADER_KIND: &str = "recording";

/// The engine's settings as a recording keeps them: what a replay runs
/// with unless told otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub llm_concurrency: usize,
    pub min_interval_ms: u64,
    /// `coalesce` or `skip`, per operation.
    pub on_busy: Vec<(Operation, String)>,
    pub incremental: bool,
    pub automatic_ops: Vec<Operation>,
    pub end_ops: Vec<Operation>,
    pub op_timeout_ms: u64,
    pub retries: u32,
    pub retry_backoff_ms: u64,
}

impl Settings {
    pub fn of(config: &crate::engine::EngineConfig) -> Self {
        use crate::state::Policy;
        Self {
            llm_concurrency: config.llm_concurrency,
            min_interval_ms: config.min_interval.as_millis() as u64,
            on_busy: config
                .state
                .policy
                .iter()
                .map(|(op, policy)| {
                    let name = match policy {
                        Policy::Skip => "skip",
                        Policy::Coalesce => "coalesce",
                    };
                    (op, name.to_string())
                })
                .collect(),
            incremental: config.incremental,
            automatic_ops: config.automatic_ops.clone(),
            end_ops: config.end_ops.clone(),
            op_timeout_ms: config.state.op_timeout.as_millis() as u64,
            retries: config.state.retries,
            retry_backoff_ms: config.retry_backoff.as_millis() as u64,
        }
    }
}

/// A transcript as recorded: the feed protocol's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub session: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<f64>,
    #[serde(rename = "final")]
    pub is_final: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl Line {
    pub fn of(t: &Transcript) -> Self {
        Self {
            session: t.session_id.clone(),
            seq: t.seq,
            text: t.text.clone(),
            speaker: t.speaker.clone(),
            start: t.start,
            end: t.end,
            is_final: t.is_final,
            kind: t.kind.clone(),
        }
    }

    pub fn transcript(&self) -> Transcript {
        Transcript {
            session_id: self.session.clone(),
            seq: self.seq,
            text: self.text.clone(),
            speaker: self.speaker.clone(),
            start: self.start,
            end: self.end,
            is_final: self.is_final,
            kind: self.kind.clone(),
        }
    }
}

/// An LLM call's answer as recorded: its text, or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Text {
        text: String,
        model: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    Error {
        /// `unreachable`, `dropped`, `timed_out`, `refused`,
        /// `context_exceeded`, `bad_answer` or `other`.
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        message: String,
        /// What a `bad_answer` said (empty when it said nothing): the
        /// engine reads an empty one as a server taking too many calls.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<String>,
    },
    /// The run was stopped while the call was out: no answer came.
    Unanswered,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// One line of a recording. `at` is microseconds since the recording's
/// start (its header's `started_unix_us`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Record {
    /// Opens a file, and every segment appended to it.
    #[serde(rename = "recording")]
    Header {
        version: u32,
        /// The inflight that wrote it.
        inflight: String,
        started_unix_us: u64,
        settings: Settings,
    },
    /// A transcript arrived, from feed `feed` (its place in the list).
    Transcript {
        at: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feed: Option<usize>,
        line: Line,
    },
    /// A feed said the session ended.
    End {
        at: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feed: Option<usize>,
        session: SessionId,
    },
    Queued {
        at: u64,
        session: SessionId,
        op: Operation,
        run: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        follow_up: bool,
    },
    Started {
        at: u64,
        session: SessionId,
        op: Operation,
        run: u64,
        covered: u64,
    },
    /// `n` requests (one unless said) met run `running` in flight; the
    /// writer counts the skips of one run that reach it together in one
    /// record, at the first one's time.
    Skipped {
        at: u64,
        session: SessionId,
        op: Operation,
        running: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pending: bool,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        n: u64,
    },
    Finished {
        at: u64,
        session: SessionId,
        op: Operation,
        run: u64,
        outcome: RunOutcome,
        ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Result {
        at: u64,
        session: SessionId,
        op: Operation,
        run: u64,
        covered: u64,
    },
    /// One LLM call: sent at `at`, its first answer token seen at `first`
    /// (to within 10 ms; none when it sent none), ended at `end`.
    Llm {
        at: u64,
        session: SessionId,
        op: Operation,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first: Option<u64>,
        end: u64,
        answer: Answer,
        #[serde(default)]
        usage: Usage,
    },
    /// The writer fell behind and dropped this many records.
    Gap { at: u64, lost: u64 },
    /// The process began to stop: no new work; the runs in flight had
    /// `drain_ms` to finish before the rest were cancelled.
    Stop { at: u64, drain_ms: u64 },
}

impl Record {
    /// When it happened, in microseconds since its recording's start
    /// (`None` for a header).
    pub fn at(&self) -> Option<u64> {
        match self {
            Record::Header { .. } => None,
            Record::Transcript { at, .. }
            | Record::End { at, .. }
            | Record::Queued { at, .. }
            | Record::Started { at, .. }
            | Record::Skipped { at, .. }
            | Record::Finished { at, .. }
            | Record::Result { at, .. }
            | Record::Llm { at, .. }
            | Record::Gap { at, .. }
            | Record::Stop { at, .. } => Some(*at),
        }
    }

    /// The record of an engine event worth keeping, at `at`.
    pub fn of_event(at: u64, event: &crate::events::Event) -> Option<Self> {
        use crate::events::Event;
        Some(match event {
            Event::OpQueued {
                session,
                op,
                run_id,
                follow_up,
            } => Record::Queued {
                at,
                session: session.clone(),
                op: *op,
                run: *run_id,
                follow_up: *follow_up,
            },
            Event::OpStarted {
                session,
                op,
                run_id,
                covered_generation,
            } => Record::Started {
                at,
                session: session.clone(),
                op: *op,
                run: *run_id,
                covered: *covered_generation,
            },
            Event::OpSkipped {
                session,
                op,
                running_run_id,
                pending,
                ..
            } => Record::Skipped {
                at,
                session: session.clone(),
                op: *op,
                running: *running_run_id,
                pending: *pending,
                n: 1,
            },
            Event::OpFinished {
                session,
                op,
                run_id,
                duration,
                outcome,
                error,
            } => Record::Finished {
                at,
                session: session.clone(),
                op: *op,
                run: *run_id,
                outcome: *outcome,
                ms: duration.as_millis() as u64,
                error: error.clone(),
            },
            Event::ResultReady {
                session,
                op,
                run_id,
                covered_generation,
            } => Record::Result {
                at,
                session: session.clone(),
                op: *op,
                run: *run_id,
                covered: *covered_generation,
            },
            Event::TranscriptReceived { .. }
            | Event::SessionCleaned { .. }
            | Event::FeedConnected { .. }
            | Event::FeedDisconnected { .. } => return None,
        })
    }
}
