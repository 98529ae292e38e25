//! A session's latest results as memory keeps them.
//!
//! With a database, a result's body leaves memory once the file holds it
//! and it has waited [`SessionLimits::spill_after`](super::SessionLimits):
//! what stays is what the store's own decisions read (the generation it
//! covers, its run id). A run that builds on it reads the body back from
//! the file (see `SessionStore::run_input`), and so does a view that shows
//! it. Without a database nothing is ever in the file, so nothing leaves.

use std::time::{Duration, SystemTime};

use super::{OpResult, Operation, SessionId, SessionStore};
use crate::events::RunId;

/// One operation's latest result.
///
/// Once filed it is two numbers, and the body, the model's name and the
/// timings are the file's alone. A result in memory sits in a box, so a
/// slot is 24 bytes either way; it was about 150, the model's name aside.
#[derive(Debug)]
pub(super) enum HeldResult {
    /// Memory holds the result; `in_file` once the database committed it
    /// (this run id's).
    Held {
        result: Box<OpResult>,
        in_file: bool,
    },
    /// Its body left memory: the file holds it.
    Filed {
        covered_generation: u64,
        run_id: RunId,
    },
}

impl HeldResult {
    /// A result just made (`in_file`: false) or read from the file (true).
    pub fn new(result: OpResult, in_file: bool) -> Self {
        Self::Held {
            result: Box::new(result),
            in_file,
        }
    }

    pub fn covered_generation(&self) -> u64 {
        match self {
            Self::Held { result, .. } => result.covered_generation,
            Self::Filed {
                covered_generation, ..
            } => *covered_generation,
        }
    }

    pub fn run_id(&self) -> RunId {
        match self {
            Self::Held { result, .. } => result.run_id,
            Self::Filed { run_id, .. } => *run_id,
        }
    }

    /// The result, while memory holds its body.
    pub fn held(&self) -> Option<&OpResult> {
        match self {
            Self::Held { result, .. } => Some(result),
            Self::Filed { .. } => None,
        }
    }

    /// The database committed run `run_id`'s result: if it is this one,
    /// its body may leave memory.
    pub fn written(&mut self, run_id: RunId) {
        if let Self::Held { result, in_file } = self
            && result.run_id == run_id
        {
            *in_file = true;
        }
    }

    /// Lets the body go when the file holds it and it has waited `after`
    /// since it was made: a run right behind still reads it from memory.
    /// `now` is asked only then.
    pub fn settle(&mut self, now: impl FnOnce() -> SystemTime, after: Duration) {
        if let Self::Held {
            result,
            in_file: true,
        } = self
            && result.finished_at + after <= now()
        {
            *self = Self::Filed {
                covered_generation: result.covered_generation,
                run_id: result.run_id,
            };
        }
    }
}

/// The latest result of an operation, as [`SessionStore::result`] finds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Latest {
    /// Memory holds it.
    Held(OpResult),
    /// Its body is in the file only: read the result from there.
    InFile,
}

impl SessionStore {
    /// The latest result of `op`, or where to read it.
    pub fn result(&self, session: &SessionId, op: Operation) -> Option<Latest> {
        let shard = self.lock(session);
        let kept = shard.held.get(session)?.results.get(op)?.as_ref()?;
        Some(match kept.held() {
            Some(result) => Latest::Held(result.clone()),
            None => Latest::InFile,
        })
    }

    /// Whether memory holds the body of `op`'s latest result (`None`
    /// without a result); [`SessionStore::result`] without the copy.
    pub fn result_held(&self, session: &SessionId, op: Operation) -> Option<bool> {
        let shard = self.lock(session);
        let kept = shard.held.get(session)?.results.get(op)?.as_ref()?;
        Some(kept.held().is_some())
    }

    /// The generation `op`'s latest result covers (0 without one).
    pub fn covered(&self, session: &SessionId, op: Operation) -> u64 {
        self.lock(session)
            .held
            .get(session)
            .map_or(0, |record| record.covered(op))
    }

    /// The database committed run `run_id`'s result of `op`: once it has
    /// waited, its body leaves memory.
    pub fn result_written(&self, session: &SessionId, op: Operation, run_id: RunId) {
        let mut shard = self.lock(session);
        if let Some(record) = shard.held.get_mut(session) {
            if let Some(Some(kept)) = record.results.get_mut(op) {
                kept.written(run_id);
            }
            self.trim(record);
        }
    }

    /// Lets go of what memory need no longer hold in every session (lines
    /// and result bodies that have waited since a session last spoke):
    /// what happens as a session speaks, for those that fell silent.
    pub fn settle(&self) {
        for mut shard in self.each_shard() {
            for record in shard.held.values_mut() {
                self.trim(record);
            }
        }
    }
}
