//! The run guard: the one handle that can end a run.
//!
//! A run ends exactly once: through [`RunGuard::finish`] with its outcome, or
//! — when the guard is dropped unfinished by a panic or an aborted task — as
//! `cancelled`. Either way the manager frees the slot, unless the run was
//! already stopped by the operator (then the finish is stale and ignored).

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use super::{InFlight, Phase, ProcessingStateManager, Slot};
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
    cancel: super::RunCancel,
    /// Tokens spent so far, recorded when the run ends.
    usage: crate::llm::Usage,
    ended: bool,
    /// For a retry: which one (1 for the first).
    retry: Option<u32>,
    notes: RunNotes,
}

/// What a run noted on its way, recorded when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunNotes {
    /// Whether a failure of this run may be retried (a failed LLM call or
    /// a timeout, not a refusal of the engine's own).
    pub retryable: bool,
    /// It found nothing new to send and made no call.
    pub nothing_new: bool,
    /// Answers of its calls that the server cut at the token limit.
    pub truncated: u32,
    /// The newest generation a result of one of its steps covers: counted
    /// covered however the run ends (a backlog's later step may fail after
    /// earlier ones were stored).
    pub kept: Option<u64>,
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
            usage: Default::default(),
            ended: false,
            retry: slot.view.retry,
            notes: RunNotes::default(),
        }
    }

    /// For a retry of a failed run: which one (1 for the first).
    pub fn retry(&self) -> Option<u32> {
        self.retry
    }

    /// The run's failure came from its LLM call (or its deadline): one the
    /// manager may retry (see [`super::StateConfig::retries`]).
    pub fn failed_at_the_llm(&mut self) {
        self.notes.retryable = true;
    }

    /// A call's answer was cut at the token limit (its result is kept,
    /// marked truncated): counted apart.
    pub fn answer_truncated(&mut self) {
        self.notes.truncated += 1;
    }

    /// A step's result, covering `generation`, was stored.
    pub fn kept_step(&mut self, generation: u64) {
        self.notes.kept = Some(self.notes.kept.map_or(generation, |g| g.max(generation)));
        self.manager
            .advance_covered(&self.session, self.op, self.run_id, generation);
    }

    /// The run found nothing said since the result it would update: it
    /// ends `ok` without a call, counted apart.
    pub fn found_nothing_new(&mut self) {
        self.notes.nothing_new = true;
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
    pub fn cancel_token(&self) -> &super::RunCancel {
        &self.cancel
    }

    /// Adds tokens the run spent; they are recorded when it ends.
    pub fn spent(&mut self, usage: crate::llm::Usage) {
        self.usage = self.usage.plus(usage);
    }

    /// The tokens and cost of the run's calls so far.
    pub fn usage(&self) -> crate::llm::Usage {
        self.usage
    }

    /// The run got its LLM permit and read the session up to `generation`:
    /// its call starts now. Returns the call's deadline (`--op-timeout`
    /// from now), or `None` when the run was stopped meanwhile.
    pub fn mark_running(&self, generation: u64) -> Option<Instant> {
        let now = Instant::now();
        let deadline = now + self.manager.op_timeout();
        let started = self
            .manager
            .set_phase(&self.session, self.op, self.run_id, |run| {
                run.waited = run.waited_until(now);
                run.phase = Phase::Running;
                run.started = Some(now);
                run.deadline = Some(deadline);
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
        started.then_some(deadline)
    }

    /// The run's call is done but it has more to cover: it waits for a
    /// permit again (a catch-up step). False when it was stopped meanwhile.
    pub fn mark_waiting(&self) -> bool {
        self.wait_again(|_| {})
    }

    /// Back to waiting for a permit, from now; `also` changes the rest.
    fn wait_again(&self, also: impl FnOnce(&mut InFlight)) -> bool {
        let now = Instant::now();
        self.manager
            .set_phase(&self.session, self.op, self.run_id, |run| {
                run.phase = Phase::Queued;
                run.queued_since = now;
                run.started = None;
                run.deadline = None;
                also(run);
            })
    }

    /// With several instances: the run holds its lease, as `instance`.
    pub fn mark_held(&self, instance: &str) -> bool {
        self.manager
            .set_phase(&self.session, self.op, self.run_id, |run| {
                run.instance = Some(instance.to_string());
            })
    }

    /// With several instances: another instance runs this `(session, op)`
    /// now, so this run follows it instead of calling the LLM. It shows as
    /// running there; the deadline is that instance's to keep. False when
    /// the run was stopped meanwhile.
    pub fn mark_elsewhere(&self, instance: &str) -> bool {
        let now = Instant::now();
        self.manager
            .set_phase(&self.session, self.op, self.run_id, |run| {
                run.waited = run.waited_until(now);
                run.phase = Phase::Running;
                run.started.get_or_insert(now);
                run.deadline = None;
                run.instance = Some(instance.to_string());
            })
    }

    /// The run this one followed on another instance is gone without an
    /// end: this run waits for a permit again, to take the work over.
    pub fn mark_free(&self) -> bool {
        self.wait_again(|run| run.instance = None)
    }

    /// The run another instance made for this one read up to `generation`.
    pub fn mark_covered(&self, generation: u64) -> bool {
        self.manager
            .set_phase(&self.session, self.op, self.run_id, |run| {
                run.covered_generation = Some(generation);
            })
    }

    /// Asks for a follow-up when this run ends, as a request refused while
    /// it ran would (without counting a skip): another instance asked for
    /// more than this run read.
    pub fn want_follow_up(&self) -> bool {
        self.manager
            .set_phase(&self.session, self.op, self.run_id, |run| {
                run.pending = true;
            })
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
            self.usage,
            Some(latest_generation),
            self.notes,
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
                self.usage,
                None,
                RunNotes::default(),
            );
            debug_assert!(!matches!(outcome, FinishOutcome::FollowUp(_)));
        }
    }
}
