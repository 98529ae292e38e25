//! The runner: carries one admitted run through its LLM calls.
//!
//! A run waits for an LLM permit (see `permits.rs`: the session that has
//! waited longest for fresh results goes first), reads the session as it is
//! at that moment, calls the backend and stores the result. Its deadline
//! (`--op-timeout`) starts when the call starts: waiting for a permit is a
//! phase of its own and never times a call out. When more was said than one
//! prompt window holds, the run goes on in steps, oldest text first, each
//! waiting for a permit again, until it has covered what was there; every
//! step's result is stored as it comes. The operator's cancel ends the run
//! in any phase, and dropping a call's future drops whatever the backend
//! had open. When the guard hands back a follow-up (a coalesced request),
//! the same task runs it, no sooner than `--min-interval` after the
//! previous run's first call started.
//!
//! A step whose prompt does not fit the server's context window (the
//! server refused it, or the backend counted it and did not send it) is
//! asked again at once with a third less transcript, up to
//! [`MAX_SHRINKS`] times; the backend keeps what it learnt of the window,
//! so later runs are sized right from the start. A step the server failed
//! for being made alongside other calls (see `permits.rs`) is asked again
//! once a permit comes, up to [`MAX_CROWDED`] times.
//!
//! Whoever else must agree to a run is its coordinator's business
//! (`coordinator/`): the run takes its `(session, op)` once it has a
//! permit, before its first call, keeps each step's result through it, and
//! finishes with it. Alone, each of those succeeds at once; in a cluster
//! (`--redis`), they are the lease, its fence and its release, and a run
//! whose lease is held elsewhere follows the holder's run instead.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::Shared;
use super::coordinator::{Alone, Coordinator, Ending, Lost, Redis, Reserve, Taking};
use super::permits::{CallEnd, Permit, QueuedRun};
use super::store::{InFile, OpResult, ReadBack, RunInput};
use crate::events::{Event, Outcome};
use crate::llm::{LlmErrorKind, LlmRequest, Progress, Usage, prompts, structured};
use crate::model::{Operation, SessionId};
use crate::ops::OutputKind;
use crate::state::{FinishOutcome, RunGuard};

/// Times a step is asked again with less transcript after its prompt did
/// not fit the context window.
pub const MAX_SHRINKS: u32 = 4;
/// Times one run asks a step again after the server failed it for being
/// made alongside other calls (the limit falls each time, so a few do).
pub const MAX_CROWDED: u32 = 3;

/// Puts an admitted run in the permits' queue: it gets a task of its own
/// only once it holds a permit (see `permits.rs`), so a run that waits
/// costs a small record, not a parked future.
pub(super) fn enqueue(shared: Arc<Shared>, guard: RunGuard) {
    let priority = shared.store.oldest_uncovered(guard.session(), guard.op());
    let permits = shared.permits.clone();
    permits.enter(priority, Box::new(Waiting { shared, guard }));
}

/// A run in the permits' queue.
struct Waiting {
    shared: Arc<Shared>,
    guard: RunGuard,
}

impl QueuedRun for Waiting {
    fn run_id(&self) -> u64 {
        self.guard.run_id()
    }

    fn is_stopped(&self) -> bool {
        self.guard.cancel_token().is_cancelled()
    }

    fn start(self: Box<Self>, permit: Permit) {
        let Waiting { shared, guard } = *self;
        start(shared, guard, permit);
    }

    fn refuse(self: Box<Self>) {
        let Waiting { shared, guard } = *self;
        let session = guard.session().clone();
        let latest = || shared.store.generation(&session);
        // Stopping: a follow-up handed back is dropped, which ends it too.
        let _ = guard.finish(
            Outcome::Failed,
            Some("the engine is shutting down".into()),
            &latest,
        );
    }
}

/// Starts a run that holds its first permit on a task of its own.
fn start(shared: Arc<Shared>, guard: RunGuard, permit: Permit) {
    // Served from wherever a permit came back; outside a runtime (it is
    // going away) the run is dropped, which ends it as cancelled.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let runs = shared.runs.clone();
    // Spawned as they are, not from a wrapper future: a future that awaits
    // another one it passed its arguments to keeps them twice. Boxed with
    // a cluster, so that a run without one does not carry the size of
    // Redis calls it never makes.
    if shared.cluster.get().is_some() {
        let redis = Redis {
            shared: shared.clone(),
        };
        let run = run_until_settled(shared, guard, redis, permit);
        runs.spawn_on(Box::pin(run), &runtime);
    } else {
        runs.spawn_on(run_until_settled(shared, guard, Alone, permit), &runtime);
    }
}

async fn run_until_settled<C: Coordinator>(
    shared_handle: Arc<Shared>,
    mut guard: RunGuard,
    coordinator: C,
    permit: Permit,
) {
    let (shared, coordinator) = (&*shared_handle, &coordinator);
    let mut permit = Some(permit);
    loop {
        let (ended, claim) = execute(shared, &mut guard, coordinator, permit.take()).await;
        if let Some(claim) = claim {
            let ending = Ending {
                outcome: ended.outcome,
                error: ended.error.as_deref(),
                covered_generation: ended.read_generation,
            };
            coordinator.finish(claim, &guard, ending).await;
        }
        let session = guard.session().clone();
        let guard_op = guard.op();
        let latest = || shared.store.generation(&session);
        if ended.at_the_llm {
            guard.failed_at_the_llm();
        }
        let why = shared.webhooks.get().and(ended.error.clone());
        // The feed's spend grows when the run's does, as it ends: its
        // calls' tokens and cost, all at once.
        if guard.usage() != Usage::default()
            && let Some(feed) = shared.store.feed_of(&session)
        {
            shared.feeds.spent(feed, guard_op, guard.usage());
        }
        match guard.finish(ended.outcome, ended.error, &latest) {
            FinishOutcome::FollowUp(next) => {
                guard = next;
                if let Some(attempt) = guard.retry() {
                    if shared.runs.is_closed() {
                        // Stopping: no retry starts (the guard's drop ends
                        // it as cancelled).
                        return;
                    }
                    back_off(shared, &guard, attempt).await;
                    if let Some(wait) = ended.retry_after {
                        retry_after(shared, &guard, wait).await;
                    }
                } else if let Some(started) = ended.first_start {
                    keep_min_interval(shared, &guard, started).await;
                }
                // The follow-up goes on here when a permit is free at once;
                // otherwise it waits in the queue, and this task ends.
                permit = shared.permits.try_acquire();
                if permit.is_none() {
                    enqueue(shared_handle, guard);
                    return;
                }
            }
            FinishOutcome::Ended => {
                let failed = matches!(ended.outcome, Outcome::Failed | Outcome::TimedOut);
                if failed && !shared.store.covers_all(&session, guard_op) {
                    super::deliveries::stale(shared, &session, guard_op, why.as_deref());
                }
                return;
            }
            FinishOutcome::Stale => return,
        }
    }
}

/// Waits until `--min-interval` after `previous_start` (the follow-up
/// shows as queued meanwhile); an operator's cancel ends the wait.
async fn keep_min_interval(shared: &Shared, guard: &RunGuard, previous_start: Instant) {
    let interval = crate::ops::registry()
        .def(guard.op())
        .and_then(|d| d.min_interval)
        .unwrap_or(shared.config.min_interval);
    let not_before = previous_start + interval;
    tokio::select! {
        _ = guard.cancel_token().cancelled() => {}
        _ = tokio::time::sleep_until(not_before) => {}
    }
}

/// Waits before retry `attempt` (see [`super::EngineConfig::retry_backoff`]);
/// the retry shows as queued meanwhile, and an operator's cancel ends it.
async fn back_off(shared: &Shared, guard: &RunGuard, attempt: u32) {
    let wait = retry_wait(shared.config.retry_backoff, attempt, fastrand::f64());
    tracing::info!(
        session_id = %guard.session(),
        op = %guard.op(),
        run_id = guard.run_id(),
        attempt,
        wait_ms = wait.as_millis() as u64,
        "the run failed with transcripts left uncovered; retrying"
    );
    tokio::select! {
        _ = guard.cancel_token().cancelled() => {}
        _ = tokio::time::sleep(wait) => {}
    }
}

/// The server asked, on its last refusal, to be left alone longer than the
/// backoff waited: the rest of that wait, at most
/// [`super::MAX_RETRY_BACKOFF`] in all.
async fn retry_after(shared: &Shared, guard: &RunGuard, asked: std::time::Duration) {
    let waited = shared.config.retry_backoff;
    let rest = asked.min(super::MAX_RETRY_BACKOFF).saturating_sub(waited);
    if rest.is_zero() {
        return;
    }
    tracing::info!(
        session_id = %guard.session(),
        op = %guard.op(),
        wait_ms = rest.as_millis() as u64,
        "the LLM server asked to be left alone (Retry-After); waiting"
    );
    tokio::select! {
        _ = guard.cancel_token().cancelled() => {}
        _ = tokio::time::sleep(rest) => {}
    }
}

/// `first` doubled for each retry after the first, at most
/// [`super::MAX_RETRY_BACKOFF`], plus up to a quarter of it (`jitter` in
/// 0..1).
fn retry_wait(first: std::time::Duration, attempt: u32, jitter: f64) -> std::time::Duration {
    let doubled = first.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let wait = doubled.min(super::MAX_RETRY_BACKOFF);
    wait + wait.mul_f64(jitter.clamp(0.0, 1.0) / 4.0)
}

/// How a run ended.
struct Ended {
    outcome: Outcome,
    error: Option<String>,
    /// When its first call started, if one did.
    first_start: Option<Instant>,
    /// The generation its last call read (or the run it followed read).
    read_generation: u64,
    /// It failed at its LLM call or timed out: a failure worth a retry.
    at_the_llm: bool,
    /// The server's `Retry-After` on the call that failed.
    retry_after: Option<std::time::Duration>,
}

impl Ended {
    fn new(outcome: Outcome, error: Option<String>) -> Self {
        Self {
            outcome,
            error,
            first_start: None,
            read_generation: 0,
            at_the_llm: false,
            retry_after: None,
        }
    }

    fn ok() -> Self {
        Self::new(Outcome::Ok, None)
    }

    fn failed(outcome: Outcome, error: impl Into<String>) -> Self {
        Self::new(outcome, Some(error.into()))
    }

    fn stopped() -> Self {
        Self::failed(Outcome::Cancelled, "stopped by the operator")
    }

    /// A failure of the LLM call (or its deadline).
    fn at_the_llm(self) -> Self {
        Self {
            at_the_llm: true,
            ..self
        }
    }
}

/// Where a run is, from one step to the next.
struct RunSoFar<Claim> {
    /// What the coordinator gave the run when it took it.
    claim: Option<Claim>,
    /// When its first call started, if one did.
    first_start: Option<Instant>,
    /// The generation its last call read.
    read_generation: u64,
}

impl<Claim> RunSoFar<Claim> {
    /// The run ends `ended`, handing its claim back to be finished.
    fn end(self, ended: Ended) -> (Ended, Option<Claim>) {
        let ended = Ended {
            first_start: self.first_start,
            read_generation: self.read_generation,
            ..ended
        };
        (ended, self.claim)
    }
}

/// Carries the run through its calls; see the module docs. Returns how it
/// ended and, when it took its work, the claim to finish.
async fn execute<C: Coordinator>(
    shared: &Shared,
    guard: &mut RunGuard,
    coordinator: &C,
    mut first_permit: Option<Permit>,
) -> (Ended, Option<C::Claim>) {
    let cancel = guard.cancel_token().clone();
    let (session, op) = (guard.session().clone(), guard.op());
    let mut at = RunSoFar {
        claim: None,
        first_start: None,
        read_generation: 0,
    };
    let mut takeover = false;
    let mut again = AskAgain::default();
    loop {
        // The first step waited in the queue before this task existed. A
        // backlog's later steps queue behind the work waiting now, so a
        // long catch-up takes turns with the live sessions instead of
        // holding the LLM until it is done.
        let priority = || match at.first_start {
            None => shared.store.oldest_uncovered(&session, op),
            Some(_) => shared.store.next_arrival(),
        };
        let permit = match first_permit.take() {
            Some(_) if cancel.is_cancelled() => return at.end(Ended::stopped()),
            Some(permit) => permit,
            None => tokio::select! {
                biased;
                _ = cancel.cancelled() => return at.end(Ended::stopped()),
                why = lost::<C>(&mut at.claim) => return lost_claim(coordinator, at, why),
                permit = shared.permits.acquire(priority()) => match permit {
                    Ok(permit) => permit,
                    Err(_) => return at.end(Ended::failed(Outcome::Failed, "the engine is shutting down")),
                },
            },
        };
        let permit = match at.claim {
            Some(_) => permit,
            None => match take(shared, guard, coordinator, &mut at, permit, takeover).await {
                Ok(Some(permit)) => permit,
                Ok(None) => {
                    takeover = true;
                    continue;
                }
                Err(ended) => return at.end(ended),
            },
        };
        let input = match read_input(shared, &session, op, &again) {
            Ok(input) => input,
            Err(e) => return at.end(Ended::failed(Outcome::Failed, e)),
        };
        let more = input.more;
        let read = Read::of(&input);
        at.read_generation = input.generation;
        if input.utterances.is_empty() && input.previous.is_some() && at.first_start.is_none() {
            // Nothing said since the result it would update (a follow-up
            // for what another instance or an earlier step covered): no
            // call to write the same result again.
            guard.found_nothing_new();
            guard.mark_covered(input.generation);
            return at.end(Ended::ok());
        }
        let fence = at.claim.as_ref().map(C::fence);
        let mut reservation = None;
        if super::budget::any(shared) {
            let call = super::budget::Call::of(
                shared,
                &input.utterances,
                input.previous.as_deref(),
                guard.usage(),
            );
            let ahead = call.ahead;
            let mut spent = super::budget::over(shared, &session, Some(call));
            if spent.is_none()
                && let Some(fence) = fence.as_ref()
            {
                match coordinator.reserve(fence, guard, ahead).await {
                    Reserve::Room(held) => reservation = Some(held),
                    Reserve::Spent(budget) => {
                        super::budget::spent_elsewhere(shared, &session, budget);
                        spent = Some(budget);
                    }
                    Reserve::Refused { outcome, error } => {
                        return at.end(Ended::failed(outcome, error));
                    }
                }
            }
            if let Some(budget) = spent {
                return at.end(Ended::failed(
                    Outcome::Cancelled,
                    format!("not started: the {} budget is spent", budget.as_str()),
                ));
            }
        }
        let Some(deadline) = guard.mark_running(input.generation) else {
            if let Some(held) = reservation {
                coordinator.settle(held, Usage::default()).await;
            }
            return at.end(Ended::stopped());
        };
        at.first_start.get_or_insert_with(Instant::now);
        let step = tokio::select! {
            biased;
            _ = cancel.cancelled() => return at.end(Ended::stopped()),
            why = lost::<C>(&mut at.claim) => return lost_claim(coordinator, at, why),
            _ = tokio::time::sleep_until(deadline) => return at.end(
                Ended::failed(Outcome::TimedOut, format!(
                    "no answer within {} of the call's start",
                    humantime::format_duration(shared.state.op_timeout())
                )).at_the_llm(),
            ),
            step = call(shared, guard, input, coordinator, fence.as_ref()) => step,
        };
        let call_end = match &step {
            Ok(_) => CallEnd::Ok,
            Err(failed) => failed.end,
        };
        if let Some(held) = reservation {
            let spent = match &step {
                Ok(called) => called.usage,
                Err(failed) => failed.usage,
            };
            coordinator.settle(held, spent).await;
        }
        let crowded_out = shared.permits.learn(&permit, call_end);
        drop(permit);
        match step {
            Ok(Called { usage, truncated }) => {
                guard.spent(usage);
                guard.kept_step(at.read_generation);
                if truncated {
                    guard.answer_truncated();
                }
                if !more {
                    return at.end(Ended::ok());
                }
            }
            Err(failed) => {
                guard.spent(failed.usage);
                let Some((why, how)) = again.asks(&failed, crowded_out, read) else {
                    let mut ended = Ended::failed(Outcome::Failed, failed.message).at_the_llm();
                    ended.retry_after = failed.retry_after;
                    return at.end(ended);
                };
                tracing::info!(
                    session_id = %session,
                    op = %op,
                    run_id = guard.run_id(),
                    lines = read.lines,
                    "{why} ({}); asking again{how}",
                    failed.message
                );
            }
        }
        if !guard.mark_waiting() {
            return at.end(Ended::stopped());
        }
    }
}

/// Asks for attempts at what a run reads when lines it needs are in the
/// file only: they may leave memory again between a read and the next ask.
const READ_BACK_TRIES: u32 = 4;

/// What the run's next step reads: from memory, and from the file for the
/// lines memory let go before they were covered.
fn read_input(
    shared: &Shared,
    session: &SessionId,
    op: Operation,
    again: &AskAgain,
) -> Result<RunInput, String> {
    let (mut read_back, mut result, mut tries) = (Vec::new(), None, 0);
    loop {
        tries += 1;
        let asked = shared.store.run_input(
            session,
            op,
            shared.config.incremental,
            again.shrunk.unwrap_or(prompts::MAX_TRANSCRIPT_CHARS),
            shared.backend.prompt_room(op),
            ReadBack {
                lines: &read_back,
                result: result.as_ref(),
                last_try: tries >= READ_BACK_TRIES,
            },
        );
        match asked {
            Ok(input) => return Ok(input),
            // Lines the file lacks are passed over at the last try; a
            // result it lacks cannot be.
            Err(_) if tries > READ_BACK_TRIES => {
                return Err("the result this run builds on is not in the database".into());
            }
            Err(InFile {
                from,
                result: wanted,
            }) => {
                if let Some(from) = from {
                    read_back = super::durable::lines_from(shared, session, from).map_err(|e| {
                        format!("cannot read the session's lines back from the database: {e}")
                    })?;
                }
                if wanted {
                    result = super::durable::result_from(shared, session, op).map_err(|e| {
                        format!("cannot read the previous result back from the database: {e}")
                    })?;
                }
            }
        }
    }
}

/// Before the run's first call: ends it when nothing is left to cover,
/// otherwise has the coordinator take it. `Ok(Some)` goes on with the
/// permit, `Ok(None)` gets a permit again to take abandoned work over, and
/// `Err` ends the run.
async fn take<C: Coordinator>(
    shared: &Shared,
    guard: &mut RunGuard,
    coordinator: &C,
    at: &mut RunSoFar<C::Claim>,
    permit: Permit,
    takeover: bool,
) -> Result<Option<Permit>, Ended> {
    let (session, op) = (guard.session().clone(), guard.op());
    if at.first_start.is_none()
        && shared.config.incremental
        && shared.store.covers_all(&session, op)
    {
        // Covered meanwhile: with several instances, a follow-up asked for
        // a line while this one followed another's run, and that
        // instance's next run covered it before this one had a permit.
        // Nothing to send, and nothing to take for it.
        guard.found_nothing_new();
        at.read_generation = shared.store.generation(&session);
        guard.mark_covered(at.read_generation);
        return Err(Ended::ok());
    }
    match coordinator.take(guard, permit, takeover).await {
        Taking::Taken(claim, permit) => {
            at.claim = Some(claim);
            Ok(Some(permit))
        }
        Taking::Abandoned => Ok(None),
        Taking::Followed {
            outcome,
            error,
            covered_generation,
        } => {
            at.read_generation = covered_generation;
            Err(Ended::new(outcome, error))
        }
        Taking::Stopped => Err(Ended::stopped()),
        Taking::Refused { outcome, error } => Err(Ended::failed(outcome, error)),
    }
}

/// How much transcript a step read.
#[derive(Debug, Clone, Copy)]
struct Read {
    lines: usize,
    chars: usize,
}

impl Read {
    fn of(input: &RunInput) -> Self {
        Self {
            lines: input.utterances.len(),
            chars: input
                .utterances
                .iter()
                .map(|u| prompts::line_chars(u.speaker(), u.text()))
                .sum(),
        }
    }
}

/// When a failed step is asked again within its run, instead of the run
/// failing.
#[derive(Debug, Default)]
struct AskAgain {
    /// Transcript characters a step may read, once a prompt did not fit.
    shrunk: Option<usize>,
    /// Times the prompt was cut for not fitting.
    shrinks: u32,
    /// Calls crowded out by others in flight.
    crowded: u32,
}

impl AskAgain {
    /// Why `failed` is asked again, and how, or `None` when the run fails
    /// with it:
    ///
    /// - the prompt did not fit the context window, and more than one line
    ///   was read: a third less transcript, up to [`MAX_SHRINKS`] times;
    /// - the server failed the call because others were in flight (an
    ///   empty answer, 503, a dropped connection; the limit has fallen): up
    ///   to [`MAX_CROWDED`] times.
    fn asks(
        &mut self,
        failed: &CallFailed,
        crowded_out: bool,
        read: Read,
    ) -> Option<(&'static str, &'static str)> {
        if failed.too_long && read.lines > 1 && self.shrinks < MAX_SHRINKS {
            self.shrinks += 1;
            self.shrunk = Some(read.chars * 2 / 3);
            return Some((
                "the prompt did not fit the LLM server's context window",
                " with less transcript",
            ));
        }
        if crowded_out && self.crowded < MAX_CROWDED {
            self.crowded += 1;
            return Some(("the LLM server failed a call made alongside others", ""));
        }
        None
    }
}

/// Resolves with why the run's claim was lost; never, without one.
async fn lost<C: Coordinator>(claim: &mut Option<C::Claim>) -> Lost {
    match claim {
        Some(claim) => C::lost(claim).await,
        None => std::future::pending().await,
    }
}

/// The run's claim was lost: it stops at once, so no two runs overlap.
fn lost_claim<C: Coordinator>(
    coordinator: &C,
    at: RunSoFar<C::Claim>,
    why: Lost,
) -> (Ended, Option<C::Claim>) {
    if let Some(claim) = &at.claim {
        coordinator.after_loss(claim, &why);
    }
    at.end(Ended::failed(
        Outcome::Cancelled,
        format!("stopped: {}", why.why()),
    ))
}

/// A call that failed: why, what it cost, and what the permits and the run
/// learn from it.
struct CallFailed {
    message: String,
    usage: Usage,
    end: CallEnd,
    /// The prompt did not fit the server's context window.
    too_long: bool,
    retry_after: Option<std::time::Duration>,
}

impl CallFailed {
    fn other(message: String, usage: Usage) -> Self {
        Self {
            message,
            usage,
            end: CallEnd::Other,
            too_long: false,
            retry_after: None,
        }
    }
}

/// A call that gave a result, kept.
struct Called {
    /// The tokens it cost.
    usage: Usage,
    /// The server cut the answer at the token limit.
    truncated: bool,
}

/// One LLM call and its result; the tokens it cost, also when it failed.
/// The result is kept only if the coordinator lets it (in a cluster: the
/// lease's run is still the current one, and the result reaches every
/// instance).
async fn call<C: Coordinator>(
    shared: &Shared,
    guard: &RunGuard,
    input: RunInput,
    coordinator: &C,
    fence: Option<&C::Fence>,
) -> Result<Called, CallFailed> {
    let (session, op) = (guard.session(), guard.op());
    let progress = Arc::new(Progress::default());
    let _tracked = shared.progress.track(guard.run_id(), progress.clone());
    let started = Instant::now();
    let mut request = LlmRequest::new(session.clone(), op, input.utterances);
    request.previous = input.previous;
    let answered = shared.backend.generate(request, &progress).await;
    shared.call_times.record(op, started.elapsed());
    let response = match answered {
        Ok(response) => response,
        Err(error) => {
            let end = crowded_or_not(&error.kind);
            let too_long = matches!(error.kind, LlmErrorKind::ContextExceeded { .. });
            if let LlmErrorKind::BadAnswer { answer } = error.kind {
                shared.store.put_rejected(session, op, answer);
            }
            let usage = priced(shared, None, error.usage);
            super::budget::record(shared, session, usage);
            return Err(CallFailed {
                end,
                too_long,
                retry_after: error.retry_after,
                ..CallFailed::other(error.message, usage)
            });
        }
    };
    let usage = priced(shared, Some(&response.model), response.usage);
    super::budget::record(shared, session, usage);
    let truncated = response.truncated;
    if truncated {
        tracing::warn!(
            session_id = %session,
            op = %op,
            run_id = guard.run_id(),
            "the LLM server cut the answer at the token limit; the result is kept, marked truncated"
        );
    }
    let read = match crate::ops::registry().def(op) {
        Some(def) => OutputKind::read(def, &response.text),
        None => Err(format!("{op} is no longer defined")),
    };
    let body = match read {
        Ok(body) => body,
        Err(why) => {
            let error = format!(
                "{why}; the answer began: {:?}",
                structured::preview(&response.text)
            );
            shared.store.put_rejected(session, op, response.text);
            return Err(CallFailed::other(error, usage));
        }
    };
    // Boxed: kept across the coordinator's await, it would otherwise grow
    // every run's future, waiting for a permit or not.
    let result = Box::new(OpResult {
        body,
        covered_generation: input.generation,
        run_id: guard.run_id(),
        model: response.model,
        processing_time: started.elapsed(),
        finished_at: SystemTime::now(),
        truncated: response.truncated,
    });
    if let Some(fence) = fence {
        coordinator
            .keep(fence, &result)
            .await
            .map_err(|why| CallFailed::other(why, usage))?;
    }
    let wanted = shared.db.get().is_some() || shared.webhooks.get().is_some();
    let mut write = wanted.then(|| result.clone());
    // With several instances, results are numbered in the order they are
    // kept here, whoever made them (see `SessionStore::put_result`).
    let kept = shared.store.put_result(session, op, *result, |r| {
        if C::NUMBERS_RESULTS {
            r.run_id = shared.state.take_run_id();
        }
    });
    if let Some(run_id) = kept {
        if let Some(mut result) = write.take() {
            result.run_id = run_id;
            let revision = C::revision(fence, run_id);
            let outbox = super::deliveries::result_kept(shared, session, op, revision, &result);
            super::durable::write_result(shared, session, op, &result, usage, outbox);
        }
        shared.events.emit(Event::ResultReady {
            session: session.clone(),
            op,
            run_id: guard.run_id(),
            covered_generation: input.generation,
        });
    }
    Ok(Called { usage, truncated })
}

/// Whether a failure is one a server gives when it takes fewer calls at
/// once than it is sent (see `permits.rs`): an empty answer, 429 or 503,
/// a connection that broke off.
fn crowded_or_not(kind: &LlmErrorKind) -> CallEnd {
    match kind {
        LlmErrorKind::BadAnswer { answer } if answer.trim().is_empty() => CallEnd::Crowded,
        LlmErrorKind::Refused { status: 429 | 503 }
        | LlmErrorKind::Unreachable
        | LlmErrorKind::Dropped => CallEnd::Crowded,
        _ => CallEnd::Other,
    }
}

/// A call's tokens with their cost at the price table: the price of the
/// model that answered, else of the model asked for (a local server may
/// answer with its file's path). A call neither prices costs nothing in
/// the figures; that is logged once per model.
fn priced(shared: &Shared, answered: Option<&str>, usage: Usage) -> Usage {
    let prices = &shared.config.prices;
    if prices.is_empty() {
        return usage;
    }
    let asked = shared.backend.info().model;
    let models: Vec<&str> = answered.into_iter().chain([asked.as_str()]).collect();
    if models.iter().all(|model| prices.of(model).is_none()) {
        if shared.unpriced.first_time(models[0]) {
            tracing::warn!(
                model = models[0],
                "no price for this model in the config file's [[prices]]: its calls count no cost"
            );
        }
        return usage;
    }
    prices.priced(&models, usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(too_long: bool) -> CallFailed {
        CallFailed {
            too_long,
            ..CallFailed::other("refused".into(), Usage::default())
        }
    }

    const READ: Read = Read {
        lines: 30,
        chars: 900,
    };

    #[test]
    fn a_prompt_too_long_is_cut_by_a_third_a_few_times_then_fails() {
        let mut again = AskAgain::default();
        for _ in 0..MAX_SHRINKS {
            assert!(again.asks(&failed(true), false, READ).is_some());
            assert_eq!(again.shrunk, Some(600));
        }
        assert!(again.asks(&failed(true), false, READ).is_none());
    }

    #[test]
    fn a_single_line_too_long_is_not_cut() {
        let one = Read {
            lines: 1,
            chars: 900,
        };
        assert!(
            AskAgain::default()
                .asks(&failed(true), false, one)
                .is_none()
        );
    }

    #[test]
    fn a_crowded_out_call_is_asked_again_a_few_times_and_any_other_failure_fails() {
        let mut again = AskAgain::default();
        assert!(again.asks(&failed(false), false, READ).is_none());
        for _ in 0..MAX_CROWDED {
            assert!(again.asks(&failed(false), true, READ).is_some());
        }
        assert!(again.asks(&failed(false), true, READ).is_none());
        assert_eq!(again.shrunk, None, "crowding never cuts the transcript");
    }

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_the_most() {
        let first = std::time::Duration::from_secs(2);
        let wait = |attempt| retry_wait(first, attempt, 0.0).as_secs();
        assert_eq!([wait(1), wait(2), wait(3)], [2, 4, 8]);
        assert_eq!(wait(30), super::super::MAX_RETRY_BACKOFF.as_secs());
        assert_eq!(retry_wait(first, 1, 1.0).as_millis(), 2_500);
    }

    #[test]
    fn the_failures_an_overloaded_server_gives_count_as_crowded() {
        let empty = LlmErrorKind::BadAnswer { answer: " ".into() };
        let bad = LlmErrorKind::BadAnswer {
            answer: "no map".into(),
        };
        assert_eq!(crowded_or_not(&empty), CallEnd::Crowded);
        assert_eq!(crowded_or_not(&LlmErrorKind::Dropped), CallEnd::Crowded);
        assert_eq!(
            crowded_or_not(&LlmErrorKind::Refused { status: 503 }),
            CallEnd::Crowded
        );
        assert_eq!(crowded_or_not(&bad), CallEnd::Other);
        assert_eq!(
            crowded_or_not(&LlmErrorKind::Refused { status: 400 }),
            CallEnd::Other
        );
    }
}
