//! A failed run is retried while its session has transcripts no result
//! covers, with a doubling backoff, on a paused clock: the retries take
//! the follow-up's path (one run in flight, the slot held while it waits),
//! stop at `retries`, leave the operation stale, and never start for a
//! session already covered or after a cancel.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{self, final_line, sid};
use inflight::engine::{Engine, EngineConfig, TriggerAnswer};
use inflight::events::{Event, Outcome};
use inflight::llm::{
    Backend, BackendInfo, BoxFuture, LlmError, LlmErrorKind, LlmRequest, LlmResponse, Progress,
    Usage,
};
use inflight::model::Operation;
use inflight::state::StateConfig;
use tokio::time::Instant;

/// Refuses its first `failing` calls as a server that went away would,
/// answers the rest; notes when each call came.
struct Flaky {
    failing: AtomicUsize,
    calls: Mutex<Vec<Instant>>,
    /// The `Retry-After` its refusals carry.
    retry_after: Option<Duration>,
    /// One more call that fails, by its index (from 0).
    fail_call: Option<usize>,
}

impl Flaky {
    fn new(failing: usize) -> Arc<Self> {
        Arc::new(Self {
            failing: AtomicUsize::new(failing),
            calls: Mutex::new(Vec::new()),
            retry_after: None,
            fail_call: None,
        })
    }

    /// When each call came, in seconds from `start`.
    fn calls_since(&self, start: Instant) -> Vec<f64> {
        let calls = self.calls.lock().unwrap();
        calls.iter().map(|at| (*at - start).as_secs_f64()).collect()
    }
}

impl Backend for Flaky {
    fn info(&self) -> BackendInfo {
        BackendInfo::simulated("flaky", "m")
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        _: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            let index = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(Instant::now());
                calls.len() - 1
            };
            let failing = self
                .failing
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
                || self.fail_call == Some(index);
            tokio::time::sleep(Duration::from_millis(100)).await;
            if failing {
                return Err(LlmError {
                    retry_after: self.retry_after,
                    ..LlmError::new(
                        LlmErrorKind::Unreachable,
                        "cannot reach the server: connection refused",
                    )
                });
            }
            let last = request.utterances.last().map_or("", |u| u.text());
            Ok(LlmResponse {
                text: format!("covered up to {last}"),
                model: "m".into(),
                usage: Usage::default(),
                truncated: false,
            })
        })
    }
}

fn engine(backend: Arc<Flaky>, retries: u32) -> Engine {
    engine_with(backend, retries, true)
}

/// `incremental: false` re-reads the session each run, so a run on a
/// covered session still calls.
fn engine_with(backend: Arc<Flaky>, retries: u32, incremental: bool) -> Engine {
    let config = EngineConfig {
        incremental,
        state: StateConfig {
            retries,
            ..Default::default()
        },
        automatic_ops: vec![Operation::SUMMARY],
        retry_backoff: Duration::from_secs(2),
        ..Default::default()
    };
    Engine::new(config, backend)
}

fn summary_row(engine: &Engine, session: &str) -> inflight::engine::OpRow {
    let row = engine.session_detail(&sid(session), 0).unwrap().row;
    row.ops[Operation::SUMMARY].clone()
}

/// Session `s1` says one line; waits for its run to fail. The events from
/// before the line on.
async fn first_failure(engine: &Engine) -> tokio::sync::broadcast::Receiver<Event> {
    let mut events = engine.subscribe();
    engine.ingest(final_line("s1", 1, "We ship on Friday."), None);
    next_failure(&mut events).await;
    events
}

/// Waits for the next run to end failed.
async fn next_failure(events: &mut tokio::sync::broadcast::Receiver<Event>) {
    common::next_matching(events, Duration::from_secs(60), |e| {
        matches!(
            e,
            Event::OpFinished {
                outcome: Outcome::Failed,
                ..
            }
        )
        .then_some(())
    })
    .await;
}

/// The runs' ends, in order, until the engine is idle with `done`.
async fn ends_until(
    engine: &Engine,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    done: impl Fn() -> bool,
) -> Vec<Outcome> {
    let mut ends = Vec::new();
    let limit = tokio::time::Instant::now() + Duration::from_secs(3600);
    while !(engine.is_idle() && done()) {
        match tokio::time::timeout_at(limit, events.recv()).await {
            Ok(Ok(Event::OpFinished { outcome, .. })) => ends.push(outcome),
            Ok(Ok(_)) => {}
            other => panic!("no end in time: {other:?} after {ends:?}"),
        }
    }
    // A run's end goes out after the state it left: read what came with it.
    while let Ok(event) = events.try_recv() {
        if let Event::OpFinished { outcome, .. } = event {
            ends.push(outcome);
        }
    }
    ends
}

#[tokio::test(start_paused = true)]
async fn a_failed_run_is_retried_with_a_doubling_backoff_until_it_covers_the_session() {
    let backend = Flaky::new(2);
    let engine = engine(backend.clone(), 5);
    let mut events = engine.subscribe();
    let start = Instant::now();
    engine.ingest(final_line("s1", 1, "We ship on Friday."), None);
    let ends = ends_until(&engine, &mut events, || {
        engine
            .result(&sid("s1"), Operation::SUMMARY)
            .is_some_and(|r| r.covered_generation == 1)
    })
    .await;
    assert_eq!(ends, [Outcome::Failed, Outcome::Failed, Outcome::Ok]);
    let calls = backend.calls_since(start);
    assert_eq!(calls.len(), 3, "{calls:?}");
    // Each call takes 0.1 s; the waits are 2 s then 4 s, each with up to a
    // quarter more.
    let first_wait = calls[1] - calls[0] - 0.1;
    let second_wait = calls[2] - calls[1] - 0.1;
    assert!((2.0..=2.5).contains(&first_wait), "{calls:?}");
    assert!((4.0..=5.0).contains(&second_wait), "{calls:?}");
    let row = summary_row(&engine, "s1");
    assert_eq!(row.counts.retries, 2);
    assert_eq!(row.counts.follow_ups, 0, "retries are counted apart");
    assert_eq!(row.consecutive_failures, 0);
    assert_eq!(engine.snapshot().totals.counts.retries, 2);
}

#[tokio::test(start_paused = true)]
async fn a_server_that_asks_for_a_longer_wait_is_left_alone_that_long() {
    let backend = Arc::new(Flaky {
        retry_after: Some(Duration::from_secs(120)),
        ..Arc::into_inner(Flaky::new(1)).unwrap()
    });
    let engine = engine(backend.clone(), 5);
    let mut events = engine.subscribe();
    let start = Instant::now();
    engine.ingest(final_line("s1", 1, "We ship on Friday."), None);
    let ends = ends_until(&engine, &mut events, || {
        engine.result(&sid("s1"), Operation::SUMMARY).is_some()
    })
    .await;
    assert_eq!(ends, [Outcome::Failed, Outcome::Ok]);
    let calls = backend.calls_since(start);
    // Retry-After: 120 s, not the 2 s backoff (with its quarter of jitter
    // at most on top).
    let wait = calls[1] - calls[0] - 0.1;
    assert!((120.0..=120.6).contains(&wait), "{calls:?}");
}

#[tokio::test(start_paused = true)]
async fn steps_kept_before_a_failure_count_as_covered_and_the_retries_start_again() {
    // One retry allowed. The first run fails at once; its retry covers a
    // step, then fails at its second (call 2). It got further than the
    // run before, so it is the first failure of a new row, and is retried.
    let backend = Arc::new(Flaky {
        fail_call: Some(2),
        ..Arc::into_inner(Flaky::new(1)).unwrap()
    });
    let engine = engine(backend.clone(), 1);
    let mut events = engine.subscribe();
    // Sixty lines of 1 000 characters: more than one prompt window holds.
    for seq in 1..=60 {
        engine.ingest(final_line("s1", seq, &"x".repeat(1000)), None);
    }
    for _ in 0..2 {
        next_failure(&mut events).await;
    }
    let row = summary_row(&engine, "s1");
    let kept = engine
        .result(&sid("s1"), Operation::SUMMARY)
        .expect("the first step's result was kept")
        .covered_generation;
    assert!(kept > 0 && kept < 60);
    assert_eq!(
        row.covered_generation,
        Some(kept),
        "shown covered as far as its kept step"
    );
    assert_eq!(
        row.consecutive_failures, 1,
        "it got further than the run before: a new row of failures"
    );
    assert!(row.in_flight.is_some(), "and it is retried, not stale");
    let ends = ends_until(&engine, &mut events, || {
        engine
            .result(&sid("s1"), Operation::SUMMARY)
            .is_some_and(|r| r.covered_generation == 60)
    })
    .await;
    assert_eq!(ends, [Outcome::Ok], "one retry covers the rest");
}

#[tokio::test(start_paused = true)]
async fn while_a_retry_waits_its_slot_is_held_and_new_lines_leave_one_pending() {
    let backend = Flaky::new(1);
    let engine = engine(backend.clone(), 5);
    let mut events = first_failure(&engine).await;
    // The retry waits its backoff, queued, holding the slot.
    let run = summary_row(&engine, "s1")
        .in_flight
        .expect("the retry holds the slot");
    assert_eq!(run.retry, Some(1));
    for seq in 2..=4 {
        engine.ingest(final_line("s1", seq, "More."), None);
    }
    let ends = ends_until(&engine, &mut events, || {
        engine
            .result(&sid("s1"), Operation::SUMMARY)
            .is_some_and(|r| r.covered_generation == 4)
    })
    .await;
    assert_eq!(
        ends,
        [Outcome::Ok],
        "the retry read every line; nothing after"
    );
    assert_eq!(backend.calls.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn past_its_retries_the_operation_is_stale_until_a_new_line_comes() {
    let backend = Flaky::new(usize::MAX);
    let engine = engine(backend.clone(), 2);
    let mut events = engine.subscribe();
    engine.ingest(final_line("s1", 1, "We ship on Friday."), None);
    let ends = ends_until(&engine, &mut events, || true).await;
    assert_eq!(ends, [Outcome::Failed; 3], "the run and two retries");
    let row = summary_row(&engine, "s1");
    assert!(row.in_flight.is_none());
    assert_eq!(row.consecutive_failures, 3);
    assert_eq!(row.counts.retries, 2);
    assert!(
        row.is_stale(1),
        "failed, idle, with a line no result covers"
    );
    // Nothing more happens by itself…
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(backend.calls.lock().unwrap().len(), 3);
    // …until a new line (or the operator's trigger) asks again.
    engine.ingest(final_line("s1", 2, "Still there?"), None);
    assert!(summary_row(&engine, "s1").in_flight.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_failure_with_nothing_left_to_cover_is_not_retried() {
    let backend = Flaky::new(0);
    let engine = engine_with(backend.clone(), 5, false);
    let mut events = engine.subscribe();
    engine.ingest(final_line("s1", 1, "We ship on Friday."), None);
    ends_until(&engine, &mut events, || {
        engine.result(&sid("s1"), Operation::SUMMARY).is_some()
    })
    .await;
    // The operator runs it again on a covered session, and it fails.
    backend.failing.store(1, Ordering::SeqCst);
    assert!(matches!(
        engine.request(&sid("s1"), Operation::SUMMARY),
        Some(TriggerAnswer::Started { .. })
    ));
    let ends = ends_until(&engine, &mut events, || true).await;
    assert_eq!(ends, [Outcome::Failed]);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let row = summary_row(&engine, "s1");
    assert_eq!((row.counts.retries, row.in_flight.is_none()), (0, true));
    assert!(!row.is_stale(1), "its result covers every line");
}

#[tokio::test(start_paused = true)]
async fn a_cancel_ends_a_retry_waiting_for_its_backoff() {
    let backend = Flaky::new(usize::MAX);
    let engine = engine(backend.clone(), 5);
    let _events = first_failure(&engine).await;
    assert!(engine.cancel(&sid("s1"), Operation::SUMMARY).is_some());
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(engine.is_idle());
    assert_eq!(
        backend.calls.lock().unwrap().len(),
        1,
        "no call after the cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_operation_is_said_in_the_api_the_metrics_and_the_status_command() {
    use crate::common::api_server::{get_text, serving};
    let backend = Flaky::new(usize::MAX);
    let config = EngineConfig {
        state: StateConfig {
            retries: 1,
            ..Default::default()
        },
        automatic_ops: vec![Operation::SUMMARY],
        retry_backoff: Duration::from_millis(10),
        ..Default::default()
    };
    let engine = Engine::new(config, backend.clone());
    let mut events = engine.subscribe();
    let s = serving(engine.clone(), Default::default()).await;
    engine.ingest(final_line("s1", 1, "We ship on Friday."), None);
    let ends = ends_until(&engine, &mut events, || true).await;
    assert_eq!(ends, [Outcome::Failed; 2], "the run and its one retry");

    let (code, body) = get_text(&format!("{}/api/sessions", s.base)).await;
    assert_eq!(code, 200);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let session = &answer["sessions"][0];
    let summary = &session["operations"]["summary"];
    assert_eq!(summary["stale"], true, "{summary}");
    assert_eq!(summary["retries"], 1);
    assert_eq!(summary["retry"], serde_json::Value::Null);
    assert!(
        session["attention"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "stale" && a["op"] == "summary" && a["uncovered"] == 1),
        "{session}"
    );
    assert_eq!(session["operations"]["mind_map"]["stale"], false);

    let (_, metrics) = get_text(&format!("{}/metrics", s.base)).await;
    assert!(
        metrics.contains("inflight_stale_operations{op=\"summary\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("inflight_run_retries_total{op=\"summary\"} 1"));

    let base = s.base.clone();
    let status = tokio::task::spawn_blocking(move || {
        crate::common::child::output(
            std::process::Command::new(env!("CARGO_BIN_EXE_inflight"))
                .args(["status", "--api", &base]),
        )
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("s1 "))
        .expect("the session's line");
    assert!(line.contains("stale"), "{text}");
    assert!(line.contains("summary stale: 1 line uncovered"), "{text}");
}

/// Answers one call at a time, as llama.cpp's Python server does: a call
/// made while another is open gets an empty answer.
struct OneAtATime {
    open: AtomicUsize,
    empty: AtomicUsize,
}

impl Backend for OneAtATime {
    fn info(&self) -> BackendInfo {
        BackendInfo::simulated("one-at-a-time", "m")
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        _: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            let crowded = self.open.fetch_add(1, Ordering::SeqCst) > 0;
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.open.fetch_sub(1, Ordering::SeqCst);
            if crowded {
                self.empty.fetch_add(1, Ordering::SeqCst);
                return Err(LlmError::new(
                    LlmErrorKind::BadAnswer {
                        answer: String::new(),
                    },
                    "the answer was empty",
                ));
            }
            let last = request.utterances.last().map_or("", |u| u.text());
            Ok(LlmResponse {
                text: format!("covered up to {last}"),
                model: "m".into(),
                usage: Usage::default(),
                truncated: false,
            })
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_server_that_takes_one_call_at_a_time_is_learnt_and_every_session_is_covered() {
    let backend = Arc::new(OneAtATime {
        open: AtomicUsize::new(0),
        empty: AtomicUsize::new(0),
    });
    // The defaults: four calls at once, five retries.
    let config = EngineConfig {
        automatic_ops: vec![Operation::SUMMARY],
        ..Default::default()
    };
    let engine = Engine::new(config, backend.clone());
    let mut events = engine.subscribe();
    let sessions: Vec<String> = (0..6).map(|n| format!("s{n}")).collect();
    for session in &sessions {
        engine.ingest(final_line(session, 1, "We ship on Friday."), None);
    }
    ends_until(&engine, &mut events, || {
        sessions.iter().all(|s| {
            engine
                .result(&sid(s), Operation::SUMMARY)
                .is_some_and(|r| r.covered_generation == 1)
        })
    })
    .await;
    let snapshot = engine.snapshot();
    assert_eq!((snapshot.permits_limit, snapshot.permits_cap), (1, 4));
    let empty = backend.empty.load(Ordering::SeqCst);
    assert!(empty > 0, "the first calls met each other");
    assert!(
        empty <= 6,
        "after the limit fell, no call met another: {empty}"
    );
    // The crowded-out calls were asked again within their runs: no run
    // failed for them.
    assert_eq!(snapshot.totals.counts.failed, 0, "{:?}", snapshot.totals);
    assert!(
        snapshot
            .sessions
            .iter()
            .all(|row| !row.ops[Operation::SUMMARY].is_stale(row.transcripts))
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_with_nothing_new_to_send_makes_no_call() {
    let backend = Flaky::new(0);
    let engine = engine(backend.clone(), 5);
    let mut events = engine.subscribe();
    engine.ingest(final_line("s1", 1, "We ship on Friday."), None);
    ends_until(&engine, &mut events, || {
        engine.result(&sid("s1"), Operation::SUMMARY).is_some()
    })
    .await;
    assert_eq!(backend.calls.lock().unwrap().len(), 1);
    // Asked again with nothing said since: it ends ok, with no call.
    assert!(matches!(
        engine.request(&sid("s1"), Operation::SUMMARY),
        Some(TriggerAnswer::Started { .. })
    ));
    let ends = ends_until(&engine, &mut events, || true).await;
    assert_eq!(ends, [Outcome::Ok]);
    assert_eq!(backend.calls.lock().unwrap().len(), 1, "no call");
    let row = summary_row(&engine, "s1");
    assert_eq!((row.counts.ok, row.counts.nothing_new), (2, 1));
    assert_eq!(row.covered_generation, Some(1));
    // A new line is sent as usual.
    engine.ingest(final_line("s1", 2, "And the launch."), None);
    ends_until(&engine, &mut events, || {
        engine
            .result(&sid("s1"), Operation::SUMMARY)
            .is_some_and(|r| r.covered_generation == 2)
    })
    .await;
    assert_eq!(backend.calls.lock().unwrap().len(), 2);
}
