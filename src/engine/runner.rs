//! The runner: carries one admitted run through its LLM call.
//!
//! A run waits for a global LLM permit (fair FIFO, `--llm-concurrency`), reads
//! the session as it is at that moment, calls the backend, stores the result,
//! and ends through its guard. The whole run races the operator's cancel
//! token and its deadline; whichever comes first ends it, and dropping the
//! call's future drops whatever the backend had open. When the guard hands
//! back a follow-up run (a coalesced request), the same task runs it at once.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::Shared;
use super::store::{OpResult, ResultBody};
use crate::events::{Event, Outcome};
use crate::llm::{LlmRequest, Progress, mind_map};
use crate::model::Operation;
use crate::state::{FinishOutcome, RunGuard};

/// Starts the run on its own task.
pub(super) fn spawn(shared: Arc<Shared>, guard: RunGuard) {
    let runs = shared.runs.clone();
    runs.spawn(run_until_settled(shared, guard));
}

async fn run_until_settled(shared: Arc<Shared>, mut guard: RunGuard) {
    loop {
        let (outcome, error) = execute(&shared, &guard).await;
        let session = guard.session().clone();
        let latest = || shared.store.generation(&session);
        match guard.finish(outcome, error, &latest) {
            FinishOutcome::FollowUp(next) => guard = next,
            FinishOutcome::Ended | FinishOutcome::Stale => return,
        }
    }
}

async fn execute(shared: &Shared, guard: &RunGuard) -> (Outcome, Option<String>) {
    let cancel = guard.cancel_token().clone();
    tokio::select! {
        biased;
        _ = cancel.cancelled() => (Outcome::Cancelled, Some("stopped by the operator".into())),
        _ = tokio::time::sleep_until(guard.deadline()) => (
            Outcome::TimedOut,
            Some(format!(
                "no result within {}",
                humantime::format_duration(shared.state.op_timeout())
            )),
        ),
        result = call(shared, guard) => match result {
            Ok(()) => (Outcome::Ok, None),
            Err(error) => (Outcome::Failed, Some(error)),
        },
    }
}

async fn call(shared: &Shared, guard: &RunGuard) -> Result<(), String> {
    let _permit = shared
        .permits
        .acquire()
        .await
        .map_err(|_| "the engine is shutting down".to_string())?;
    let (session, op) = (guard.session(), guard.op());
    let input = shared
        .store
        .run_input(session, op, shared.config.incremental_summaries);
    if !guard.mark_running(input.generation) {
        return Err("stopped before it started".into());
    }
    let progress = Arc::new(Progress::default());
    let _tracked = shared.progress.track(guard.run_id(), progress.clone());
    let started = Instant::now();
    let request = LlmRequest {
        session: session.clone(),
        op,
        utterances: input.utterances,
        previous_summary: input.previous_summary,
    };
    let response = shared
        .backend
        .generate(request, &progress)
        .await
        .map_err(|e| e.to_string())?;
    let body = match op {
        Operation::Summary => {
            ResultBody::Summary(crate::text::strip_controls_keep_lines(&response.text).into_owned())
        }
        Operation::MindMap => match mind_map::parse_lenient(&response.text) {
            Ok(map) => ResultBody::MindMap(clean_labels(map)),
            Err(why) => {
                let error = format!("{why}; the answer began: {:?}", preview(&response.text));
                shared.store.put_rejected(session, op, response.text);
                return Err(error);
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
    if shared.store.put_result(session, op, result) {
        shared.events.emit(Event::ResultReady {
            session: session.clone(),
            op,
            run_id: guard.run_id(),
            covered_generation: input.generation,
        });
    }
    Ok(())
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

fn preview(text: &str) -> String {
    text.chars().take(120).collect()
}
