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

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::Shared;
use super::store::{OpResult, ResultBody, RunInput};
use crate::events::{Event, Outcome};
use crate::llm::{LlmErrorKind, LlmRequest, Progress, Usage, mind_map, prompts, structured};
use crate::model::Operation;
use crate::state::{FinishOutcome, RunGuard};

/// Starts the run on its own task.
pub(super) fn spawn(shared: Arc<Shared>, guard: RunGuard) {
    let runs = shared.runs.clone();
    runs.spawn(run_until_settled(shared, guard));
}

async fn run_until_settled(shared: Arc<Shared>, mut guard: RunGuard) {
    loop {
        let (outcome, error, started) = execute(&shared, &mut guard).await;
        let session = guard.session().clone();
        let latest = || shared.store.generation(&session);
        match guard.finish(outcome, error, &latest) {
            FinishOutcome::FollowUp(next) => {
                guard = next;
                if let Some(started) = started {
                    keep_min_interval(&shared, &guard, started).await;
                }
            }
            FinishOutcome::Ended | FinishOutcome::Stale => return,
        }
    }
}

/// Waits until `--min-interval` after `previous_start` (the follow-up
/// shows as queued meanwhile); an operator's cancel ends the wait.
async fn keep_min_interval(shared: &Shared, guard: &RunGuard, previous_start: Instant) {
    let not_before = previous_start + shared.config.min_interval;
    tokio::select! {
        _ = guard.cancel_token().cancelled() => {}
        _ = tokio::time::sleep_until(not_before) => {}
    }
}

/// How a run ended, and when its first call started (if one did).
type Ended = (Outcome, Option<String>, Option<Instant>);

async fn execute(shared: &Shared, guard: &mut RunGuard) -> Ended {
    let cancel = guard.cancel_token().clone();
    let (session, op) = (guard.session().clone(), guard.op());
    let mut first_start = None;
    let stopped = |first_start| {
        (
            Outcome::Cancelled,
            Some("stopped by the operator".to_string()),
            first_start,
        )
    };
    loop {
        let priority = shared.store.oldest_uncovered(&session, op);
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return stopped(first_start),
            permit = shared.permits.acquire(priority) => match permit {
                Ok(permit) => permit,
                Err(_) => return (
                    Outcome::Failed,
                    Some("the engine is shutting down".into()),
                    first_start,
                ),
            },
        };
        let input = shared.store.run_input(
            &session,
            op,
            shared.config.incremental,
            prompts::MAX_TRANSCRIPT_CHARS,
        );
        let more = input.more;
        let Some(deadline) = guard.mark_running(input.generation) else {
            return stopped(first_start);
        };
        first_start.get_or_insert_with(Instant::now);
        let step = tokio::select! {
            biased;
            _ = cancel.cancelled() => return stopped(first_start),
            _ = tokio::time::sleep_until(deadline) => return (
                Outcome::TimedOut,
                Some(format!(
                    "no answer within {} of the call's start",
                    humantime::format_duration(shared.state.op_timeout())
                )),
                first_start,
            ),
            step = call(shared, guard, input) => step,
        };
        drop(permit);
        match step {
            Ok(usage) => {
                guard.spent(usage);
                if !more {
                    return (Outcome::Ok, None, first_start);
                }
                if !guard.mark_waiting() {
                    return stopped(first_start);
                }
            }
            Err((error, usage)) => {
                guard.spent(usage);
                return (Outcome::Failed, Some(error), first_start);
            }
        }
    }
}

/// One LLM call and its result; the tokens it cost, also when it failed.
async fn call(
    shared: &Shared,
    guard: &RunGuard,
    input: RunInput,
) -> Result<Usage, (String, Usage)> {
    let (session, op) = (guard.session(), guard.op());
    let progress = Arc::new(Progress::default());
    let _tracked = shared.progress.track(guard.run_id(), progress.clone());
    let started = Instant::now();
    let mut request = LlmRequest::new(session.clone(), op, input.utterances);
    request.previous = input.previous;
    let response = match shared.backend.generate(request, &progress).await {
        Ok(response) => response,
        Err(error) => {
            if let LlmErrorKind::BadAnswer { answer } = error.kind {
                shared.store.put_rejected(session, op, answer);
            }
            return Err((error.message, error.usage));
        }
    };
    let usage = response.usage;
    let body = match op {
        Operation::Summary => {
            ResultBody::Summary(crate::text::strip_controls_keep_lines(&response.text).into_owned())
        }
        Operation::MindMap => match mind_map::parse_lenient(&response.text) {
            Ok(map) => ResultBody::MindMap(clean_labels(map)),
            Err(why) => {
                let error = format!(
                    "{why}; the answer began: {:?}",
                    structured::preview(&response.text)
                );
                shared.store.put_rejected(session, op, response.text);
                return Err((error, usage));
            }
        },
    };
    let result = OpResult {
        body,
        covered_generation: input.generation,
        run_id: guard.run_id(),
        model: response.model,
        processing_time: started.elapsed(),
        finished_at: SystemTime::now(),
    };
    let write = shared.db.get().is_some().then(|| result.clone());
    if shared.store.put_result(session, op, result) {
        if let Some(result) = write {
            super::durable::write_result(shared, session, op, &result, usage);
        }
        shared.events.emit(Event::ResultReady {
            session: session.clone(),
            op,
            run_id: guard.run_id(),
            covered_generation: input.generation,
        });
    }
    Ok(usage)
}

/// Labels come from a model: no control characters reach a view.
fn clean_labels(mut map: crate::model::MindMap) -> crate::model::MindMap {
    fn clean(node: &mut crate::model::MindMapNode) {
        node.label = crate::text::strip_controls(&node.label).into_owned();
        node.children.iter_mut().for_each(clean);
    }
    clean(&mut map.root);
    map
}
