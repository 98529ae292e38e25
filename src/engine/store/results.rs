//! A session's latest results as memory keeps them.
//!
//! With a database, a result's body leaves memory once the file holds it
//! and it has waited [`SessionLimits::spill_after`](super::SessionLimits):
//! what stays is what the store's own decisions read (the generation it
//! covers, its run id). A run that builds on it reads the body back from
//! the file (see `SessionStore::run_input`), and so does a view that shows
//! it. Without a database nothing is ever in the file, so nothing leaves.

use std::time::{Duration, SystemTime};

use super::{OpResult, Operation, ResultBody, SessionId, SessionStore};
use crate::events::RunId;

/// One operation's latest result.
#[derive(Debug)]
pub(super) struct HeldResult {
    /// Once `filed`, its body is an empty stand-in: the file holds the
    /// real one, and nothing outside this file sees the stand-in.
    result: OpResult,
    /// The database committed this result (this run id's).
    in_file: bool,
    /// Its body left memory.
    filed: bool,
}

impl HeldResult {
    /// A result just made (`in_file`: false) or read from the file (true).
    pub fn new(result: OpResult, in_file: bool) -> Self {
        Self {
            result,
            in_file,
            filed: false,
        }
    }

    pub fn covered_generation(&self) -> u64 {
        self.result.covered_generation
    }

    pub fn run_id(&self) -> RunId {
        self.result.run_id
    }

    /// The result, while memory holds its body.
    pub fn held(&self) -> Option<&OpResult> {
        (!self.filed).then_some(&self.result)
    }

    /// The database committed run `run_id`'s result: if it is this one,
    /// its body may leave memory.
    pub fn written(&mut self, run_id: RunId) {
        if self.result.run_id == run_id {
            self.in_file = true;
        }
    }

    /// The file holds it and memory still holds its body.
    pub fn may_settle(&self) -> bool {
        self.in_file && !self.filed
    }

    /// Lets the body go when the file holds it and it has waited `after`
    /// since it was made: a run right behind still reads it from memory.
    pub fn settle(&mut self, now: SystemTime, after: Duration) {
        if self.may_settle() && self.result.finished_at + after <= now {
            self.result.body = ResultBody::Text(String::new());
            self.filed = true;
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
