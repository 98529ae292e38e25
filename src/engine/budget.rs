//! Budgets, as the engine holds them: a spent budget admits no run of the
//! sessions it covers, and a call that would overshoot one is not started
//! (the rules are `spend::Ledger`'s). The session is marked with the
//! budget (`⊘ budget` in the views) until a run of it is admitted again;
//! its latest results stay, covering what they covered.

use super::{Engine, Shared};
use crate::llm::{Usage, Utterance};
use crate::model::SessionId;
use crate::spend::Budget;

/// Why an operator's change to a session's budget was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetChange {
    /// The engine does not hold the session.
    NoSession,
    /// No budget per session is set: there is nothing to lift or raise.
    NoSessionBudget,
}

impl Engine {
    /// Lifts the session's own budget, an operator's decision: its runs go
    /// on past it (the hourly budgets still hold), starting now for what
    /// it said meanwhile.
    pub fn lift_budget(&self, session: &SessionId) -> Result<(), BudgetChange> {
        self.session_budget_set(session)?;
        self.shared.store.lift_budget(session);
        self.in_cluster(session, |cluster, session| async move {
            cluster.lift_budget(&session).await
        });
        tracing::warn!(
            session_id = %session,
            "the session's budget was lifted by the operator: its runs go on"
        );
        self.admit_automatic(session);
        Ok(())
    }

    /// Raises the session's own budget by `by` (by one more of each
    /// session budget set, when `None`), an operator's decision: its runs
    /// go on until the raised budget is spent. Answers what the session's
    /// budget was raised by in all.
    pub fn raise_budget(
        &self,
        session: &SessionId,
        by: Option<Usage>,
    ) -> Result<Usage, BudgetChange> {
        let budgets = self.session_budget_set(session)?;
        let by = by.unwrap_or(Usage {
            cost: budgets.session_cost.unwrap_or_default(),
            ..Usage::tokens(budgets.session_tokens.unwrap_or(0), 0)
        });
        let raised = self
            .shared
            .store
            .raise_budget(session, by)
            .ok_or(BudgetChange::NoSession)?;
        self.in_cluster(session, move |cluster, session| async move {
            cluster.raise_budget(&session, by).await
        });
        tracing::warn!(
            session_id = %session,
            raised_tokens = by.prompt_tokens,
            raised_cost = %by.cost.shown(),
            "the session's budget was raised by the operator: its runs go on"
        );
        self.admit_automatic(session);
        Ok(raised)
    }

    /// The budgets, when the session is held and a budget per session is
    /// set.
    fn session_budget_set(
        &self,
        session: &SessionId,
    ) -> Result<crate::spend::Budgets, BudgetChange> {
        if !self.shared.store.contains(session) {
            return Err(BudgetChange::NoSession);
        }
        let budgets = self.shared.ledger.budgets();
        if budgets.session_tokens.is_none() && budgets.session_cost.is_none() {
            return Err(BudgetChange::NoSessionBudget);
        }
        Ok(budgets)
    }

    /// Budgets are shared in a cluster: so is an operator's change, for
    /// the runs the other instances hold.
    fn in_cluster<F, Fut>(&self, session: &SessionId, change: F)
    where
        F: FnOnce(crate::cluster::Cluster, SessionId) -> Fut,
        Fut:
            std::future::Future<Output = Result<(), crate::cluster::ClusterError>> + Send + 'static,
    {
        let (Some(link), Ok(runtime)) = (
            self.shared.cluster.get(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let changing = change(link.cluster.clone(), session.clone());
        let session = session.clone();
        runtime.spawn(async move {
            if let Err(e) = changing.await {
                tracing::warn!(session_id = %session, "the budget changed on this instance only: {e}");
            }
        });
    }

    /// Admits the session's automatic operations, for what it said while
    /// its budget stopped it.
    fn admit_automatic(&self, session: &SessionId) {
        let kind = self.kind_of(session);
        for op in &self.shared.config.automatic_ops {
            if self.runs_for(*op, kind.as_deref()) {
                self.admit(session, *op, None);
            }
        }
    }
}

/// What the session has spent so far: every operation's ended runs, and
/// `running` (a run's calls so far, not yet in its counters).
fn session_spent(shared: &Shared, session: &SessionId, running: Usage) -> Usage {
    shared.state.session_usage(session).plus(running)
}

/// A call about to start: its prompt, estimated, and what its run has
/// spent so far.
pub(super) struct Call {
    pub ahead: Usage,
    pub running: Usage,
}

impl Call {
    /// A call that sends `utterances` after `previous` (four characters a
    /// token), priced as the model asked for would price it, for a run
    /// that has spent `running`.
    pub fn of(
        shared: &Shared,
        utterances: &[Utterance],
        previous: Option<&str>,
        running: Usage,
    ) -> Self {
        let text = crate::llm::prompts::transcript_text(utterances);
        let tokens = (Usage::estimate(&text) + previous.map_or(0, Usage::estimate)).max(1);
        let model = shared.backend.info().model;
        let ahead = shared
            .config
            .prices
            .priced(&[model.as_str()], Usage::tokens(tokens, 0));
        Self { ahead, running }
    }
}

/// Whether any budget is set.
pub(super) fn any(shared: &Shared) -> bool {
    shared.ledger.budgets().any()
}

/// The budget that stops a run of `session` now, if any: at admission
/// (`call` is `None`), a budget already spent; before a call, one the
/// call's prompt would overshoot. Marks the session with it (said once in
/// the log), or clears the mark when there is room.
pub(super) fn over(shared: &Shared, session: &SessionId, call: Option<Call>) -> Option<Budget> {
    if !any(shared) {
        return None;
    }
    // A session's own budget, once it stopped a call, stays spent: what
    // the session spent only grows, and so does its next prompt. Without
    // this, every new line would admit a run only to stop it at its call.
    let own = !shared.store.budget_lifted(session);
    if own
        && call.is_none()
        && let Some(budget) = shared.store.over_budget(session)
        && budget.per_session()
    {
        return Some(budget);
    }
    let call = call.unwrap_or(Call {
        ahead: Usage::default(),
        running: Usage::default(),
    });
    let spent = session_spent(shared, session, call.running);
    let feed = shared.store.feed_of(session);
    // What an operator raised the session's budget by is spending
    // forgiven.
    let raised = shared.store.budget_raised(session);
    let counted = Usage {
        // A raise is counted in prompt tokens (`raise_budget`).
        prompt_tokens: (spent.prompt_tokens + spent.completion_tokens)
            .saturating_sub(raised.prompt_tokens),
        cost: crate::spend::Cost(spent.cost.0.saturating_sub(raised.cost.0)),
        ..Usage::default()
    };
    let budget = shared.ledger.over(counted, own, feed, call.ahead);
    if mark(shared, session, budget) {
        tracing::warn!(
            session_id = %session,
            budget = budget.map(Budget::as_str),
            spent_tokens = spent.prompt_tokens + spent.completion_tokens,
            spent_cost = %spent.cost.shown(),
            "budget spent: no run of this session starts until there is room"
        );
    }
    budget
}

/// Marks the session with `budget` (or clears the mark); true when a
/// budget is newly marked, to be said once in the log.
fn mark(shared: &Shared, session: &SessionId, budget: Option<Budget>) -> bool {
    let before = shared.store.set_over_budget(session, budget);
    budget.is_some() && before != budget
}

/// A budget shared with the other instances had no room for a call of
/// `session`: the session is marked with it, and an hourly budget admits
/// nothing it covers here until the next minute, when it is asked again.
pub(super) fn spent_elsewhere(shared: &Shared, session: &SessionId, budget: Budget) {
    let feed = shared.store.feed_of(session);
    shared.ledger.spent_elsewhere(budget, feed);
    if mark(shared, session, Some(budget)) {
        tracing::warn!(
            session_id = %session,
            budget = budget.as_str(),
            "budget spent, counted by every instance: no run of this session starts until there is room"
        );
    }
}

/// Counts a call's spending against the hourly budgets.
pub(super) fn record(shared: &Shared, session: &SessionId, usage: Usage) {
    if any(shared) {
        shared.ledger.record(shared.store.feed_of(session), usage);
    }
}
