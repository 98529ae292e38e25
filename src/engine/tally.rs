//! What a `/metrics` scrape reads of the held sessions: a [`SessionTally`].
//!
//! A scrape needs, of each held session, only a few numbers: its tokens per
//! operation (a series each), and whether each operation is queued,
//! running, stale or stopped by a budget (counted across sessions). It used
//! to take the dashboard's snapshot for them, a row of every field for every
//! session and operation: about 900 bytes a session, 9 MB a scrape at
//! 10 000 sessions, every 15 seconds. A tally keeps the session's id and 16
//! bytes an operation.

use crate::model::{Operation, SessionId};
use crate::spend::Budget;
use crate::state::Phase;

/// The held sessions, added up for a scrape (see [`super::Engine::scrape`]).
#[derive(Debug)]
pub struct SessionTally {
    /// The operations counted, in the registry's order; every per-operation
    /// list below follows it.
    pub ops: Vec<Operation>,
    /// Per operation: sessions with a run waiting for its turn.
    pub queued: Vec<u64>,
    /// Per operation: sessions with a run calling the model.
    pub running: Vec<u64>,
    /// Per operation: sessions left stale by failures (see
    /// [`super::snapshot::OpRow::is_stale`]).
    pub stale: Vec<u64>,
    /// Sessions each budget stops, in [`Budget::ALL`]'s order.
    pub over_budget: [u64; Budget::ALL.len()],
    /// The held sessions' ids, in order.
    pub ids: Vec<SessionId>,
    /// Prompt and completion tokens, `ops.len()` to a session, in `ids`'
    /// order.
    tokens: Vec<[u64; 2]>,
}

impl SessionTally {
    pub(super) fn new(ops: Vec<Operation>, sessions: usize) -> Self {
        let n = ops.len();
        Self {
            queued: vec![0; n],
            running: vec![0; n],
            stale: vec![0; n],
            tokens: Vec::with_capacity(sessions * n),
            ids: Vec::with_capacity(sessions),
            ops,
            over_budget: [0; Budget::ALL.len()],
        }
    }

    /// Counts a budget that stops a session.
    pub(super) fn stopped_by(&mut self, budget: Budget) {
        if let Some(i) = Budget::ALL.iter().position(|b| *b == budget) {
            self.over_budget[i] += 1;
        }
    }

    /// Adds the next session's operation `i` (call for every operation of
    /// a session in `ops`' order, the sessions in `ids`' order).
    pub(super) fn add(&mut self, i: usize, phase: Option<Phase>, stale: bool, tokens: [u64; 2]) {
        match phase {
            Some(Phase::Queued) => self.queued[i] += 1,
            Some(Phase::Running) => self.running[i] += 1,
            None => {}
        }
        if stale {
            self.stale[i] += 1;
        }
        self.tokens.push(tokens);
    }

    /// Each held session with its prompt and completion tokens per
    /// operation, in `ops`' order.
    pub fn sessions(&self) -> impl Iterator<Item = (&SessionId, &[[u64; 2]])> {
        let width = self.ops.len().max(1);
        self.ids.iter().zip(self.tokens.chunks(width))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_operations_and_tokens_their_sessions() {
        let ops: Vec<Operation> = crate::ops::registry().ops().take(2).collect();
        assert_eq!(ops.len(), 2, "the built-in operations");
        let mut tally = SessionTally::new(ops, 2);
        tally.ids = vec![
            SessionId::parse("a").unwrap(),
            SessionId::parse("b").unwrap(),
        ];
        tally.add(0, Some(Phase::Queued), false, [1, 2]);
        tally.add(1, Some(Phase::Running), true, [3, 4]);
        tally.add(0, None, true, [5, 6]);
        tally.add(1, Some(Phase::Running), false, [7, 8]);
        tally.stopped_by(Budget::ALL[2]);
        tally.stopped_by(Budget::ALL[2]);
        assert_eq!(tally.queued, [1, 0]);
        assert_eq!(tally.running, [0, 2]);
        assert_eq!(tally.stale, [1, 1]);
        assert_eq!(tally.over_budget[2], 2);
        assert_eq!(tally.over_budget.iter().sum::<u64>(), 2);
        let sessions: Vec<_> = tally.sessions().collect();
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions[0].0.as_str(), "a");
        assert_eq!(sessions[0].1, [[1, 2], [3, 4]]);
        assert_eq!(sessions[1].1, [[5, 6], [7, 8]]);
    }
}
