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
//! so later runs are sized right from the start.
//!
//! With several instances (`--redis`), a run takes its cluster lease once
//! it has a permit, before its first call, and keeps it through its steps;
//! one that finds the lease held follows the holder's run instead (see
//! `lease.rs`).

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::Shared;
use super::lease::{self, Followed, LeaseKeeper, LostLease, RemoteEnd};
use super::permits::CallEnd;
use super::store::{OpResult, RunInput};
use crate::cluster::{Ending, Finished, Lease, Start};
use crate::events::{Event, Outcome};
use crate::llm::{LlmErrorKind, LlmRequest, Progress, Usage, prompts, structured};
use crate::ops::OutputKind;
use crate::state::{FinishOutcome, RunGuard};

/// Times a step is asked again with less transcript after its prompt did
/// not fit the context window.
pub const MAX_SHRINKS: u32 = 4;
/// Times one run asks a step again after the server failed it for being
/// made alongside other calls (the limit falls each time, so a few do).
pub const MAX_CROWDED: u32 = 3;

/// Starts the run on its own task.
pub(super) fn spawn(shared: Arc<Shared>, guard: RunGuard) {
    let runs = shared.runs.clone();
    runs.spawn(run_until_settled(shared, guard));
}

async fn run_until_settled(shared: Arc<Shared>, mut guard: RunGuard) {
    loop {
        let ended = execute(&shared, &mut guard).await;
        if let Some(keeper) = &ended.lease {
            Box::pin(cluster_finish(&shared, &guard, keeper, &ended)).await;
        }
        let session = guard.session().clone();
        let latest = || shared.store.generation(&session);
        if ended.at_the_llm {
            guard.failed_at_the_llm();
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
                    back_off(&shared, &guard, attempt).await;
                    if let Some(wait) = ended.retry_after {
                        retry_after(&shared, &guard, wait).await;
                    }
                } else if let Some(started) = ended.first_start {
                    keep_min_interval(&shared, &guard, started).await;
                }
            }
            FinishOutcome::Ended | FinishOutcome::Stale => return,
        }
    }
}

/// Gives the lease back and tells the other instances how the run ended;
/// when one of them asked for more than the run read, the run gets a
/// follow-up as if the request had come here.
async fn cluster_finish(shared: &Shared, guard: &RunGuard, keeper: &LeaseKeeper, ended: &Ended) {
    let Some(link) = shared.cluster.get() else {
        return;
    };
    let ending = Ending {
        covered_generation: ended.read_generation,
        outcome: ended.outcome.as_str(),
        error: ended.error.as_deref(),
    };
    match link.cluster.finish(&keeper.lease, ending).await {
        Ok(Finished::Released) => {}
        Ok(Finished::MoreWanted) => {
            guard.want_follow_up();
        }
        Ok(Finished::Lost) => tracing::info!(
            session_id = %guard.session(),
            op = %guard.op(),
            fence = keeper.lease.fence,
            "a later run had started elsewhere; this run's end changed nothing there"
        ),
        // The lease expires by itself; a pending request stays for the
        // reconcile loop.
        Err(e) => tracing::warn!(
            session_id = %guard.session(),
            op = %guard.op(),
            "could not give the lease back: {e}"
        ),
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
    /// The cluster lease it held, to give back.
    lease: Option<Box<LeaseKeeper>>,
    /// It failed at its LLM call or timed out: a failure worth a retry.
    at_the_llm: bool,
    /// The server's `Retry-After` on the call that failed.
    retry_after: Option<std::time::Duration>,
}

impl Ended {
    fn new(outcome: Outcome, error: impl Into<String>) -> Self {
        Self {
            outcome,
            error: Some(error.into()),
            first_start: None,
            read_generation: 0,
            lease: None,
            at_the_llm: false,
            retry_after: None,
        }
    }

    fn ok() -> Self {
        Self {
            outcome: Outcome::Ok,
            error: None,
            first_start: None,
            read_generation: 0,
            lease: None,
            at_the_llm: false,
            retry_after: None,
        }
    }

    /// A failure of the LLM call (or its deadline).
    fn at_the_llm(self) -> Self {
        Self {
            at_the_llm: true,
            ..self
        }
    }
}

/// Carries the run through its calls; see the module docs.
async fn execute(shared: &Shared, guard: &mut RunGuard) -> Ended {
    let cancel = guard.cancel_token().clone();
    let (session, op) = (guard.session().clone(), guard.op());
    let link = shared.cluster.get();
    let mut lease: Option<Box<LeaseKeeper>> = None;
    let mut first_start = None;
    let mut read_generation = 0;
    let mut takeover = false;
    // Transcript characters a step may read, once a prompt did not fit.
    let mut shrunk: Option<usize> = None;
    let mut shrinks = 0;
    // Calls of this run crowded out by others in flight, each asked again.
    let mut crowded = 0;
    let end = |ended: Ended, lease: Option<Box<LeaseKeeper>>, first_start, read_generation| Ended {
        first_start,
        read_generation,
        lease,
        ..ended
    };
    let stopped = || Ended::new(Outcome::Cancelled, "stopped by the operator");
    loop {
        // A backlog's later steps queue behind the work waiting now, so a
        // long catch-up takes turns with the live sessions instead of
        // holding the LLM until it is done.
        let priority = match first_start {
            None => shared.store.oldest_uncovered(&session, op),
            Some(_) => shared.store.next_arrival(),
        };
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return end(stopped(), lease, first_start, read_generation),
            why = lost(&mut lease) => return lease_lost(shared, lease, why, first_start, read_generation),
            permit = shared.permits.acquire(priority) => match permit {
                Ok(permit) => permit,
                Err(_) => return end(
                    Ended::new(Outcome::Failed, "the engine is shutting down"),
                    lease, first_start, read_generation,
                ),
            },
        };
        if first_start.is_none()
            && lease.is_none()
            && shared.config.incremental
            && shared.store.covers_all(&session, op)
        {
            // Covered meanwhile: with several instances, a follow-up asked
            // for a line while this one followed another's run, and that
            // instance's next run covered it before this one had a permit.
            // Nothing to send, and no lease to take for it.
            guard.found_nothing_new();
            read_generation = shared.store.generation(&session);
            guard.mark_covered(read_generation);
            return end(Ended::ok(), lease, first_start, read_generation);
        }
        if let (Some(link), None) = (link, &lease) {
            // Listening before asking, so an end right after is not missed.
            let watching = link.watch((session.clone(), op));
            let generation = shared.store.generation(&session);
            match Box::pin(link.cluster.try_start(&session, op, generation)).await {
                Ok(Start::Started(held)) => {
                    link.counted_start(takeover);
                    guard.mark_held(link.instance());
                    lease = Some(Box::new(LeaseKeeper::new(link, held)));
                }
                Ok(Start::HeldElsewhere(holder)) => {
                    drop(permit);
                    match Box::pin(lease::follow(link, &watching, guard, holder)).await {
                        Followed::Ended(remote) => {
                            if remote.outcome == Outcome::Cancelled {
                                // A cancelled end brings no follow-up; what
                                // was asked meanwhile is asked again later.
                                link.defer((session.clone(), op));
                            }
                            return followed_end(shared, guard, remote);
                        }
                        Followed::Stopped => return stopped(),
                        Followed::Abandoned if shared.runs.is_closed() => {
                            return Ended::new(
                                Outcome::Cancelled,
                                "the process is stopping: it takes no work over",
                            );
                        }
                        Followed::Abandoned => {
                            takeover = true;
                            guard.mark_free();
                            continue;
                        }
                    }
                }
                Err(e) => {
                    link.counted_refused_start();
                    link.defer((session.clone(), op));
                    return Ended::new(
                        Outcome::Failed,
                        format!("not started: no run starts without its lease ({e})"),
                    );
                }
            }
        }
        let input = shared.store.run_input(
            &session,
            op,
            shared.config.incremental,
            shrunk.unwrap_or(prompts::MAX_TRANSCRIPT_CHARS),
            shared.backend.prompt_room(op),
        );
        let more = input.more;
        let lines_read = input.utterances.len();
        let chars_read: usize = input
            .utterances
            .iter()
            .map(|u| prompts::line_chars(u.speaker.as_deref(), &u.text))
            .sum();
        read_generation = input.generation;
        if input.utterances.is_empty() && input.previous.is_some() && first_start.is_none() {
            // Nothing said since the result it would update (a follow-up
            // for what another instance or an earlier step covered): no
            // call to write the same result again.
            guard.found_nothing_new();
            guard.mark_covered(input.generation);
            return end(Ended::ok(), lease, first_start, read_generation);
        }
        let Some(deadline) = guard.mark_running(input.generation) else {
            return end(stopped(), lease, first_start, read_generation);
        };
        first_start.get_or_insert_with(Instant::now);
        let held = lease.as_ref().map(|keeper| Box::new(keeper.lease.clone()));
        let step = tokio::select! {
            biased;
            _ = cancel.cancelled() => return end(stopped(), lease, first_start, read_generation),
            why = lost(&mut lease) => return lease_lost(shared, lease, why, first_start, read_generation),
            _ = tokio::time::sleep_until(deadline) => return end(
                Ended::new(Outcome::TimedOut, format!(
                    "no answer within {} of the call's start",
                    humantime::format_duration(shared.state.op_timeout())
                )).at_the_llm(),
                lease, first_start, read_generation,
            ),
            step = call(shared, guard, input, held.as_deref()) => step,
        };
        let call_end = match &step {
            Ok(_) => CallEnd::Ok,
            Err(failed) => failed.end,
        };
        let crowded_out = shared.permits.learn(&permit, call_end);
        drop(permit);
        match step {
            Ok(Called { usage, truncated }) => {
                guard.spent(usage);
                guard.kept_step(read_generation);
                if truncated {
                    guard.answer_truncated();
                }
                if !more {
                    return end(Ended::ok(), lease, first_start, read_generation);
                }
                if !guard.mark_waiting() {
                    return end(stopped(), lease, first_start, read_generation);
                }
            }
            Err(failed) if failed.too_long && lines_read > 1 && shrinks < MAX_SHRINKS => {
                guard.spent(failed.usage);
                shrinks += 1;
                shrunk = Some(chars_read * 2 / 3);
                tracing::info!(
                    session_id = %session,
                    op = %op,
                    run_id = guard.run_id(),
                    lines = lines_read,
                    "the prompt did not fit the LLM server's context window ({}); asking again with less transcript",
                    failed.message
                );
                if !guard.mark_waiting() {
                    return end(stopped(), lease, first_start, read_generation);
                }
            }
            Err(failed) if crowded_out && crowded < MAX_CROWDED => {
                // The server failed the call because others were in flight
                // (an empty answer, 503, a dropped connection); the limit
                // has fallen. The step is asked again, not the run failed.
                guard.spent(failed.usage);
                crowded += 1;
                tracing::info!(
                    session_id = %session,
                    op = %op,
                    run_id = guard.run_id(),
                    "the LLM server failed a call made alongside others ({}); asking again",
                    failed.message
                );
                if !guard.mark_waiting() {
                    return end(stopped(), lease, first_start, read_generation);
                }
            }
            Err(failed) => {
                guard.spent(failed.usage);
                let mut ended = Ended::new(Outcome::Failed, failed.message).at_the_llm();
                ended.retry_after = failed.retry_after;
                return end(ended, lease, first_start, read_generation);
            }
        }
    }
}

/// Resolves with why the held lease was lost; never, without one.
///
/// Every cluster step a run awaits is boxed: a run's future is kept for as
/// long as it waits for a permit (thousands at once under overload), and
/// without a cluster it must not carry the size of Redis calls it never
/// makes.
async fn lost(lease: &mut Option<Box<LeaseKeeper>>) -> LostLease {
    match lease {
        Some(keeper) => Box::pin(keeper.lost()).await,
        None => std::future::pending().await,
    }
}

/// The run's lease was lost: it stops at once, so no two runs overlap.
/// Lost to an unreachable Redis, its work is asked for again once Redis
/// answers.
fn lease_lost(
    shared: &Shared,
    lease: Option<Box<LeaseKeeper>>,
    why: LostLease,
    first_start: Option<Instant>,
    read_generation: u64,
) -> Ended {
    let why = match (why, shared.cluster.get(), &lease) {
        (LostLease::Unreachable(why), Some(link), Some(keeper)) => {
            link.defer((keeper.lease.session.clone(), keeper.lease.op));
            why
        }
        (LostLease::Unreachable(why) | LostLease::Taken(why), _, _) => why,
    };
    if let Some(link) = shared.cluster.get() {
        link.counted_lost_lease();
    }
    if let Some(keeper) = &lease {
        tracing::warn!(
            session_id = %keeper.lease.session,
            op = %keeper.lease.op,
            "run stopped: {why}"
        );
    }
    Ended {
        outcome: Outcome::Cancelled,
        error: Some(format!("stopped: {why}")),
        first_start,
        read_generation,
        lease,
        at_the_llm: false,
        retry_after: None,
    }
}

/// The run this one followed ended on another instance: so does this one.
fn followed_end(shared: &Shared, guard: &RunGuard, remote: RemoteEnd) -> Ended {
    let covered = match shared.cluster.get() {
        Some(link) => link.generation_here(
            guard.session(),
            remote.covered_generation,
            &remote.instance,
            || shared.store.generation(guard.session()),
        ),
        None => remote.covered_generation,
    };
    guard.mark_covered(covered);
    Ended {
        outcome: remote.outcome,
        error: remote
            .error
            .map(|error| format!("on {}: {error}", remote.instance)),
        first_start: None,
        read_generation: covered,
        lease: None,
        at_the_llm: false,
        retry_after: None,
    }
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
/// With a cluster lease, the result is kept only if the lease's run is
/// still the current one (its fence), and then reaches every instance.
async fn call(
    shared: &Shared,
    guard: &RunGuard,
    input: RunInput,
    lease: Option<&Lease>,
) -> Result<Called, CallFailed> {
    let (session, op) = (guard.session(), guard.op());
    let progress = Arc::new(Progress::default());
    let _tracked = shared.progress.track(guard.run_id(), progress.clone());
    let started = Instant::now();
    let mut request = LlmRequest::new(session.clone(), op, input.utterances);
    request.previous = input.previous;
    let response = match shared.backend.generate(request, &progress).await {
        Ok(response) => response,
        Err(error) => {
            let end = crowded_or_not(&error.kind);
            let too_long = matches!(error.kind, LlmErrorKind::ContextExceeded { .. });
            if let LlmErrorKind::BadAnswer { answer } = error.kind {
                shared.store.put_rejected(session, op, answer);
            }
            return Err(CallFailed {
                end,
                too_long,
                retry_after: error.retry_after,
                ..CallFailed::other(error.message, error.usage)
            });
        }
    };
    let usage = response.usage;
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
    // Boxed: kept across the cluster's await, it would otherwise grow
    // every run's future.
    let result = Box::new(OpResult {
        body,
        covered_generation: input.generation,
        run_id: guard.run_id(),
        model: response.model,
        processing_time: started.elapsed(),
        finished_at: SystemTime::now(),
        truncated: response.truncated,
    });
    if let (Some(link), Some(lease)) = (shared.cluster.get(), lease) {
        Box::pin(super::remote::share_result(link, lease, &result))
            .await
            .map_err(|why| CallFailed::other(why, usage))?;
    }
    let mut write = shared.db.get().is_some().then(|| result.clone());
    // With several instances, results are numbered in the order they are
    // kept here, whoever made them (see `SessionStore::put_result`).
    let clustered = shared.cluster.get().is_some();
    let kept = shared.store.put_result(session, op, *result, |r| {
        if clustered {
            r.run_id = shared.state.take_run_id();
        }
    });
    if let Some(run_id) = kept {
        if let Some(mut result) = write.take() {
            result.run_id = run_id;
            super::durable::write_result(shared, session, op, &result, usage);
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
