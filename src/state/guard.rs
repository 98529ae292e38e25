//! The run guard: the one handle that can end a run.
//!
//! A run ends exactly once: through [`RunGuard::finish`] with its outcome, or
//! — when the guard is dropped unfinished by a panic or an aborted task — as
//! `cancelled`. Either way the manager frees the slot, unless the run was
//! already stopped by the operator (then the finish is stale and ignored).

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Phase, ProcessingStateManager, Slot};
use crate::events::{Event, Outcome, RunId};
use crate::model::{Operation, SessionId};

/// What a finish did.
#[derive(Debug)]
pub enum FinishOutcome {
    /// The slot is free (or, if it was the session's last, the entry is gone).
    Ended,
    /// Requests arrived during the run and the session moved on: the slot
    /// passed to this follow-up run, which the caller must now run.
    FollowUp(RunGuard),
    /// The run had already been stopped; nothing changed.
    Stale,
}

/// Holds a `(session, op)` slot for one run. See the module docs.
pub struct RunGuard {
    manager: Arc<ProcessingStateManager>,
    session: SessionId,
    op: Operation,
    run_id: RunId,
    follow_up: bool,
    cancel: CancellationToken,
    deadline: Instant,
    ended: bool,
}

impl fmt::Debug for RunGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunGuard")
            .field("session", &self.session)
            .field("op", &self.op)
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl RunGuard {
    pub(super) fn new(
        manager: Arc<ProcessingStateManager>,
        session: SessionId,
        op: Operation,
        slot: &Slot,
    ) -> Self {
        Self {
            manager,
            session,
            op,
            run_id: slot.view.run_id,
            follow_up: slot.view.follow_up,
            cancel: slot.cancel.clone(),
            deadline: slot.view.deadline,
            ended: false,
        }
    }

    pub fn session(&self) -> &SessionId {
        &self.session
    }

    pub fn op(&self) -> Operation {
        self.op
    }

    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// True when this run was started by a pending flag.
    pub fn is_follow_up(&self) -> bool {
        self.follow_up
    }

    /// Cancelled when the operator stops the run.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// When the run is to be given up as timed out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The run got its LLM permit and read the session up to `generation`.
    /// Returns false when the run was stopped meanwhile.
    pub fn mark_running(&self, generation: u64) -> bool {
        let started = self
            .manager
            .set_phase(&self.session, self.op, self.run_id, |run| {
                run.phase = Phase::Running;
                run.covered_generation = Some(generation);
            });
        if started {
            self.manager.events.emit(Event::OpStarted {
                session: self.session.clone(),
                op: self.op,
                run_id: self.run_id,
                covered_generation: generation,
            });
        }
        started
    }

    /// Ends the run. `latest_generation` is asked, inside the manager's lock,
    /// for the session's newest generation, to decide on a follow-up run.
    pub fn finish(
        mut self,
        outcome: Outcome,
        error: Option<String>,
        latest_generation: &dyn Fn() -> u64,
    ) -> FinishOutcome {
        self.ended = true;
        self.manager.end_run(
            &self.session,
            self.op,
            self.run_id,
            outcome,
            error,
            Some(latest_generation),
        )
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if !self.ended {
            let outcome = self.manager.end_run(
                &self.session,
                self.op,
                self.run_id,
                Outcome::Cancelled,
                Some("the run was dropped before it finished".into()),
                None,
            );
            debug_assert!(!matches!(outcome, FinishOutcome::FollowUp(_)));
        }
    }
}
