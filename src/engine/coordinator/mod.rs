//! Who else a run must agree with before it calls the model, keeps a
//! result, and ends: the coordinator.
//!
//! A run's path is the same whoever coordinates it (see `runner.rs`): it
//! **takes** its `(session, op)` once it holds an LLM permit, before its
//! first call; it **keeps** each step's result; it **finishes**, giving
//! back what it took. What those three steps mean is the coordinator's:
//!
//! - [`Alone`] (`alone.rs`): one instance. The state manager's slot already
//!   makes the run the only one of its `(session, op)`, so taking always
//!   succeeds, a result is always kept, budgets are the engine's own, and
//!   finishing has nothing to give back.
//! - [`Redis`] (`redis.rs`): several instances (`--redis`). Taking is the
//!   cluster lease, or following the instance that holds it; keeping is
//!   the result's fence check; a call's spending is reserved in Redis
//!   against budgets every instance shares; finishing releases the lease
//!   and tells the others how the run ended.
//!
//! The runner is generic over the coordinator, so a run without a cluster
//! carries none of the cluster's state, and a new coordinator is one new
//! module implementing [`Coordinator`].

mod alone;
mod redis;

use std::future::Future;

pub(super) use alone::Alone;
pub(super) use redis::Redis;

use super::permits::Permit;
use super::store::OpResult;
use crate::events::Outcome;
use crate::llm::Usage;
use crate::spend::Budget;
use crate::state::RunGuard;

/// How a run agrees with the others doing the same work.
pub(super) trait Coordinator: Sync {
    /// What a run holds from taking to finishing: nothing alone, the lease
    /// in a cluster.
    type Claim: Send + Sync;
    /// What a step's result is kept under, taken from the claim for the
    /// step's call (the claim itself stays with the run, which watches it).
    type Fence: Send + Sync;
    /// A call's estimate, counted with the others until it is settled.
    type Reservation: Send;

    /// Results are numbered here as they are kept, whoever made them, so
    /// that every instance's results arrive in one order.
    const NUMBERS_RESULTS: bool;

    /// Takes the guard's `(session, op)` for this run, before its first
    /// call. `permit` is the LLM permit the run holds: given back with the
    /// claim, or dropped while another instance's run is followed.
    /// `takeover` says the run takes over work whose holder went away.
    fn take(
        &self,
        guard: &RunGuard,
        permit: Permit,
        takeover: bool,
    ) -> impl Future<Output = Taking<Self::Claim>> + Send;

    /// Resolves, with why, when the claim is lost; never while it holds.
    /// Cancel-safe: the runner polls it beside every wait.
    fn lost(claim: &mut Self::Claim) -> impl Future<Output = Lost> + Send;

    /// The run stops because its claim was lost: what is owed to the work
    /// it leaves (asked for again later, counted).
    fn after_loss(&self, claim: &Self::Claim, why: &Lost);

    /// A kept result's revision for webhooks: grows per (session, op), and
    /// every instance agrees on it. `kept` is the result's run id here.
    fn revision(fence: Option<&Self::Fence>, kept: crate::events::RunId) -> u64;

    /// What the step about to call keeps its result under.
    fn fence(claim: &Self::Claim) -> Self::Fence;

    /// Lets a step's result be kept, or says why another's must win.
    fn keep(
        &self,
        fence: &Self::Fence,
        result: &OpResult,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Before a call: counts its estimated spending `ahead` against the
    /// budgets shared with the others, if they have room. Alone there are
    /// none to share (the engine's ledger holds the budgets).
    fn reserve(
        &self,
        fence: &Self::Fence,
        guard: &RunGuard,
        ahead: Usage,
    ) -> impl Future<Output = Reserve<Self::Reservation>> + Send;

    /// After the call: what it spent replaces its estimate.
    fn settle(
        &self,
        reservation: Self::Reservation,
        spent: Usage,
    ) -> impl Future<Output = ()> + Send;

    /// Gives the claim back, saying how the run ended; asks the guard for
    /// a follow-up when more was wanted meanwhile.
    fn finish(
        &self,
        claim: Self::Claim,
        guard: &RunGuard,
        ending: Ending<'_>,
    ) -> impl Future<Output = ()> + Send;
}

/// What taking a run found.
pub(super) enum Taking<C> {
    /// This run is the one: its claim, and its permit back.
    Taken(C, Permit),
    /// Another instance ran it; this run ends the same way, covering what
    /// that one covered (in this instance's count).
    Followed {
        outcome: Outcome,
        error: Option<String>,
        covered_generation: u64,
    },
    /// The run that held it went away with no end: get a permit again and
    /// take the work over.
    Abandoned,
    /// The operator stopped the run while it waited.
    Stopped,
    /// It cannot be taken now: the run ends so (the work is asked for
    /// again once it can be).
    Refused { outcome: Outcome, error: String },
}

/// What reserving a call's spending found.
pub(super) enum Reserve<R> {
    /// Counted: the call may start.
    Room(R),
    /// This budget, shared with the others, has no room for it.
    Spent(Budget),
    /// The call must not start, and why.
    Refused { outcome: Outcome, error: String },
}

/// How a run ended, as its coordinator is told.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ending<'a> {
    pub outcome: Outcome,
    pub error: Option<&'a str>,
    /// The transcript generation the run's last call read.
    pub covered_generation: u64,
}

/// Why a run lost its claim.
pub(super) enum Lost {
    /// A later run started (elsewhere): it covers this one's work.
    Taken(String),
    /// The coordinator could not be asked: the work is asked for again once
    /// it can.
    Unreachable(String),
}

impl Lost {
    pub fn why(&self) -> &str {
        match self {
            Lost::Taken(why) | Lost::Unreachable(why) => why,
        }
    }
}
