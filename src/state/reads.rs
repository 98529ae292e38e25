//! What the manager tells: whether a session is processing and its
//! original status JSON, one operation's view, every session's operations
//! for a snapshot (a chunk of sessions per lock), the lifetime counters,
//! and forgetting a session.

use super::{
    InFlight, OpCounters, OpStats, OpView, ProcessingStateManager, ProcessingStatus, VISIT_CHUNK,
    status,
};
use crate::model::{Operation, SessionId};
use crate::ops::OpMap;

/// One session's operations as [`ProcessingStateManager::visit_sessions`]
/// shows them, read under the manager's lock.
pub struct SessionOps<'a> {
    entry: Option<&'a super::SessionEntry>,
    empty: &'a OpStats,
}

impl<'a> SessionOps<'a> {
    /// `op`'s run in flight, if any, and its statistics.
    pub fn get(&self, op: Operation) -> (Option<&'a InFlight>, &'a OpStats) {
        match self.entry {
            Some(entry) => (
                entry.slot(op).map(|slot| &slot.view),
                entry.stats.get(op).unwrap_or(self.empty),
            ),
            None => (None, self.empty),
        }
    }
}

impl ProcessingStateManager {
    /// The original `is_processing`: `None` asks about any operation.
    pub fn is_processing(&self, session: &SessionId, op: Option<Operation>) -> bool {
        let tables = self.lock();
        match tables
            .sessions
            .get(session)
            .and_then(|e| e.in_flight.as_ref())
        {
            None => false,
            Some(slots) => match op {
                Some(op) => slots.get(op).is_some_and(Option::is_some),
                None => slots.values().any(Option::is_some),
            },
        }
    }

    /// The original `get_processing_status`; unknown sessions are idle.
    pub fn status(&self, session: &SessionId) -> ProcessingStatus {
        let tables = self.lock();
        let mut status = ProcessingStatus::idle(session.clone());
        if let Some(slots) = tables
            .sessions
            .get(session)
            .and_then(|e| e.in_flight.as_ref())
        {
            let start = |op: Operation| {
                slots
                    .get(op)?
                    .as_ref()
                    .map(|slot| status::unix_seconds(slot.view.since))
            };
            status.summary_start_time = start(Operation::SUMMARY);
            status.mind_map_start_time = start(Operation::MIND_MAP);
            status.summary_processing = status.summary_start_time.is_some();
            status.mind_map_processing = status.mind_map_start_time.is_some();
            for (op, started) in &mut status.others.0 {
                *started = start(*op);
            }
            status.any_processing = status.summary_processing
                || status.mind_map_processing
                || status.others.0.iter().any(|(_, s)| s.is_some());
        }
        status
    }

    /// One operation of one session, as views see it.
    pub fn op_view(&self, session: &SessionId, op: Operation) -> OpView {
        let tables = self.lock();
        match tables.sessions.get(session) {
            Some(entry) => OpView {
                in_flight: entry.slot(op).map(|slot| slot.view.clone()),
                stats: entry.stats.get(op).cloned().unwrap_or_default(),
            },
            None => OpView::default(),
        }
    }

    /// What every ended run of the session cost, all operations together:
    /// what its budget is held against (no statistics copied).
    pub fn session_usage(&self, session: &SessionId) -> crate::llm::Usage {
        let tables = self.lock();
        tables
            .sessions
            .get(session)
            .map_or_else(Default::default, |entry| {
                entry
                    .stats
                    .values()
                    .fold(crate::llm::Usage::default(), |sum, stats| {
                        sum.plus(stats.counts.usage())
                    })
            })
    }

    /// Calls `visit` once per item of `items` with that session's in-flight
    /// runs and statistics; `visit` must be quick. The lock is taken for
    /// [`VISIT_CHUNK`] items at a time, so a snapshot of many sessions never
    /// holds up an admission for long; each item's view is consistent.
    pub fn visit_sessions<T>(
        &self,
        items: &mut [T],
        session_of: impl Fn(&T) -> &SessionId,
        mut visit: impl FnMut(&mut T, SessionOps<'_>),
    ) {
        let empty = OpStats::default();
        for chunk in items.chunks_mut(VISIT_CHUNK) {
            let tables = self.lock();
            for item in chunk.iter_mut() {
                let entry = tables.sessions.get(session_of(item));
                visit(
                    item,
                    SessionOps {
                        entry,
                        empty: &empty,
                    },
                );
            }
        }
    }

    /// Drops a session's statistics, unless a run of it is in flight or
    /// `also` says no. `also` runs inside the manager's lock, so nothing can
    /// be admitted for the session between its answer and the removal.
    /// Returns whether the session went.
    pub fn forget_if(&self, session: &SessionId, also: impl FnOnce() -> bool) -> bool {
        let mut tables = self.lock();
        if tables
            .sessions
            .get(session)
            .is_some_and(|entry| entry.in_flight.is_some())
            || !also()
        {
            return false;
        }
        tables.sessions.remove(session);
        true
    }

    /// Each operation's counts since the process started, forgotten
    /// sessions included: they only grow.
    pub fn lifetime(&self) -> OpMap<OpCounters> {
        self.lock().lifetime.clone()
    }
}
