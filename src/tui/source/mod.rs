//! What the dashboard reads: one interface, two sources.
//!
//! [`embedded::Embedded`] is the engine in this process; [`remote::Remote`]
//! is an engine elsewhere, read over its API by `inflight attach`;
//! [`replayed::Replayed`] is a recording played back (`inflight replay`). The main
//! loop and every view work on either, through [`Source`]: the latest
//! snapshot, one session's details, the log lines, the link to the engine,
//! and the app's commands carried out with their answers coming back.

pub mod embedded;
pub mod remote;
pub mod replayed;

use std::future::Future;

use tokio::time::Instant;

use crate::engine::{SessionDetail, Snapshot, TriggerAnswer};
use crate::events::RunId;
use crate::logs::LogBuffer;
use crate::model::{Operation, SessionId};
use crate::tui::app::Command;

/// How the dashboard is tied to its engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// The engine runs in this process.
    Embedded,
    /// Attached to a server that answers.
    Connected { server: String },
    /// Attached, and the server stopped answering at `since`: the picture
    /// is the last one it gave; reconnecting.
    Lost {
        server: String,
        since: Instant,
        attempt: u32,
        error: String,
    },
    /// A recording played back (`inflight replay`).
    Replay(ReplayAt),
}

/// Where a replay is.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayAt {
    /// Microseconds into the recording, and its length.
    pub at_us: u64,
    pub length_us: u64,
    /// The recording's start on the wall clock.
    pub started_unix_us: u64,
    pub playing: bool,
    pub speed: f64,
}

impl ReplayAt {
    /// The replay's time on the recording's wall clock.
    pub fn recorded_time(&self) -> std::time::SystemTime {
        std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_micros(self.started_unix_us + self.at_us)
    }
}

/// The answer to a command, for the message line.
#[derive(Debug, Clone)]
pub enum Answer {
    Triggered {
        session: SessionId,
        answers: Vec<(Operation, TriggerAnswer)>,
    },
    Cancelled {
        session: SessionId,
        stopped: Vec<(Operation, Option<RunId>)>,
    },
    /// A session read from the database (or not found there).
    Stored {
        session: SessionId,
        detail: Option<Box<SessionDetail>>,
    },
    /// The session's own budget was lifted.
    BudgetLifted { session: SessionId },
    /// The session's own budget was raised: by this much in all.
    BudgetRaised {
        session: SessionId,
        tokens: u64,
        cost: crate::spend::Cost,
    },
    /// The command could not be carried out; says why.
    Refused(String),
}

/// Something that woke the main loop.
#[derive(Debug)]
pub enum Wake {
    /// The engine's state may have changed.
    Changed,
    Answer(Answer),
}

/// What the dashboard reads and asks, wherever the engine runs.
pub trait Source {
    /// The engine now (or, when its link is lost, as last seen).
    fn snapshot(&mut self) -> Snapshot;
    /// One session's details, kept fresh while asked for.
    fn detail(&mut self, session: &SessionId) -> Option<SessionDetail>;
    /// The log lines the log pane filters.
    fn logs(&self) -> &LogBuffer;
    fn link(&self) -> Link;
    /// Why triggers and cancels are not allowed, when they are not.
    fn read_only(&self) -> Option<String>;
    /// Starts a command; its answer comes back through [`Source::wake`].
    fn carry_out(&mut self, command: Command);
    /// Waits until something changed or an answer came.
    fn wake(&mut self) -> impl Future<Output = Wake>;
}
