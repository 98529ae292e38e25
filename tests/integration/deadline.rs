//! Deadlines and operator cancels, under a paused clock.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{final_line, next_matching, sid};
use inflight::engine::{Engine, EngineConfig, TriggerAnswer};
use inflight::events::{Event, Outcome};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::Operation;
use inflight::state::StateConfig;

/// An engine whose runs take `latency` against a deadline of `timeout`,
/// with no retries: these tests are about one run's end.
fn slow_engine(latency: Duration, timeout: Duration) -> Engine {
    let config = EngineConfig {
        state: StateConfig {
            op_timeout: timeout,
            retries: 0,
            ..Default::default()
        },
        automatic_ops: vec![Operation::SUMMARY],
        ..Default::default()
    };
    Engine::new(
        config,
        Arc::new(BuiltinBackend::new(LatencyRange::fixed(latency))),
    )
}

#[tokio::test(start_paused = true)]
async fn a_run_past_its_deadline_is_timed_out_and_frees_its_slot() {
    let engine = slow_engine(Duration::from_secs(60), Duration::from_secs(5));
    let mut events = engine.subscribe();
    let s = sid("slow");
    engine.ingest(final_line("slow", 1, "We need the budget by Friday."), None);
    assert!(engine.status(&s).summary_processing);

    let (outcome, duration) = next_matching(&mut events, Duration::from_secs(120), |e| match e {
        Event::OpFinished {
            outcome, duration, ..
        } => Some((*outcome, *duration)),
        _ => None,
    })
    .await;
    assert_eq!(outcome, Outcome::TimedOut);
    assert_eq!(
        duration,
        Duration::from_secs(5),
        "ended at the deadline, not at the model's pace"
    );
    assert!(
        engine.uptime() >= Duration::from_secs(5) && engine.snapshot().uptime >= duration,
        "the engine's uptime follows the clock"
    );
    assert!(
        !engine.status(&s).any_processing,
        "nothing stays processing"
    );
    assert!(!engine.snapshot().sessions[0].any_in_flight());
    let row = &engine.snapshot().sessions[0].ops[Operation::SUMMARY];
    assert_eq!(row.counts.timed_out, 1);
    assert!(row.last_error.as_deref().unwrap_or("").contains("5s"));
    assert!(matches!(
        engine.request(&s, Operation::SUMMARY),
        Some(TriggerAnswer::Started { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn an_operator_cancel_frees_the_slot_at_once() {
    let engine = slow_engine(Duration::from_secs(60), Duration::from_secs(300));
    let mut events = engine.subscribe();
    let s = sid("cancel-me");
    engine.ingest(final_line("cancel-me", 1, "Long meeting ahead."), None);
    next_matching(&mut events, Duration::from_secs(1), |e| {
        matches!(e, Event::OpStarted { .. }).then_some(())
    })
    .await;
    let snapshot = engine.snapshot();
    assert_eq!(
        (snapshot.permits_in_use, snapshot.permits_cap),
        (1, 4),
        "one LLM call of four"
    );

    let answer = engine.request(&s, Operation::SUMMARY);
    assert!(
        matches!(answer, Some(TriggerAnswer::Pending { .. })),
        "coalesce answers pending, got {answer:?}"
    );
    assert!(engine.cancel(&s, Operation::SUMMARY).is_some());
    assert!(!engine.status(&s).any_processing);
    assert_eq!(
        engine.cancel(&s, Operation::SUMMARY),
        None,
        "nothing left to cancel"
    );

    // The cancelled run does not come back as a follow-up, and no result lands.
    let more = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match events.recv().await {
                Ok(Event::OpQueued { .. } | Event::ResultReady { .. }) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    assert!(more.is_err(), "no run after a cancel");
    assert!(engine.result(&s, Operation::SUMMARY).is_none());
    assert_eq!(
        engine.snapshot().sessions[0].ops[Operation::SUMMARY]
            .counts
            .cancelled,
        1
    );
}

/// An engine with `permits` LLM calls at once, each taking 10 s.
fn capped_engine(permits: usize) -> Engine {
    let config = EngineConfig {
        llm_concurrency: permits,
        automatic_ops: vec![Operation::SUMMARY],
        ..Default::default()
    };
    Engine::new(
        config,
        Arc::new(BuiltinBackend::new(LatencyRange::fixed(
            Duration::from_secs(10),
        ))),
    )
}

#[tokio::test(start_paused = true)]
async fn llm_permits_cap_concurrent_calls_and_queue_the_rest() {
    let engine = capped_engine(2);
    let mut events = engine.subscribe();
    for i in 0..5 {
        engine.ingest(final_line(&format!("s{i}"), 1, "hello there"), None);
    }
    // Let the runners reach their permits.
    let mut started = 0;
    while started < 2 {
        next_matching(&mut events, Duration::from_secs(1), |e| {
            matches!(e, Event::OpStarted { .. }).then_some(())
        })
        .await;
        started += 1;
    }
    let snapshot = engine.snapshot();
    assert_eq!(snapshot.permits_in_use, 2);
    assert_eq!((snapshot.totals.running, snapshot.totals.queued), (2, 3));
    // Queued runs hold their slot: the original status says processing.
    assert_eq!(
        snapshot
            .sessions
            .iter()
            .filter(|s| s.any_in_flight())
            .count(),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_cancelled_while_it_waits_for_a_permit_leaves_the_queue_and_never_starts() {
    let engine = capped_engine(1);
    let mut events = engine.subscribe();
    for name in ["first", "second", "third"] {
        engine.ingest(final_line(name, 1, "hello there"), None);
    }
    assert_eq!(engine.permits_waiting(), 2, "one call at once, two wait");
    assert!(engine.cancel(&sid("second"), Operation::SUMMARY).is_some());
    assert_eq!(engine.permits_waiting(), 1, "out of the queue at once");
    assert!(!engine.status(&sid("second")).any_processing);

    let mut started = Vec::new();
    while started.len() < 2 {
        let session = next_matching(&mut events, Duration::from_secs(30), |e| match e {
            Event::OpStarted { session, .. } => Some(session.to_string()),
            _ => None,
        })
        .await;
        started.push(session);
    }
    assert_eq!(
        started,
        ["first", "third"],
        "the cancelled run never starts"
    );
    let finished = next_matching(&mut events, Duration::from_secs(30), |e| match e {
        Event::OpFinished {
            session, outcome, ..
        } => Some((session.to_string(), *outcome)),
        _ => None,
    })
    .await;
    assert_eq!(finished, ("third".to_string(), Outcome::Ok));
    assert!(engine.result(&sid("third"), Operation::SUMMARY).is_some());
    assert!(engine.result(&sid("second"), Operation::SUMMARY).is_none());
    assert_eq!(engine.permits_waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn ended_sessions_are_forgotten_after_a_while_unless_busy() {
    let config = EngineConfig {
        state: StateConfig {
            op_timeout: Duration::from_secs(3 * 3600),
            ..Default::default()
        },
        automatic_ops: Vec::new(),
        ..Default::default()
    };
    let engine = Engine::new(
        config,
        Arc::new(BuiltinBackend::new(LatencyRange::fixed(
            Duration::from_secs(2 * 3600),
        ))),
    );
    for name in ["done", "busy", "live"] {
        engine.ingest(final_line(name, 1, "hello"), None);
    }
    engine.end_session(&sid("done"), None);
    engine.end_session(&sid("busy"), None);
    // end_session asks for last runs; let "done" finish, keep "busy" running.
    engine.cancel(&sid("done"), Operation::SUMMARY);
    engine.cancel(&sid("done"), Operation::MIND_MAP);
    engine.cancel(&sid("busy"), Operation::MIND_MAP);
    assert!(engine.status(&sid("busy")).summary_processing);

    assert_eq!(
        engine.forget_ended(Duration::from_secs(30 * 60)),
        0,
        "nothing ended long enough ago"
    );
    tokio::time::advance(Duration::from_secs(31 * 60)).await;
    assert_eq!(engine.forget_ended(Duration::from_secs(30 * 60)), 1);
    let ids: Vec<String> = engine
        .snapshot()
        .sessions
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(
        ids,
        ["busy", "live"],
        "a run in flight keeps its session; live ones stay"
    );
    assert!(engine.session_detail(&sid("done"), 5).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_drain_waits_for_runs_up_to_its_timeout_then_cancels_the_rest() {
    let config = EngineConfig {
        llm_concurrency: 1,
        automatic_ops: vec![Operation::SUMMARY],
        ..Default::default()
    };
    let engine = Engine::new(
        config,
        Arc::new(BuiltinBackend::new(LatencyRange::fixed(
            Duration::from_secs(60),
        ))),
    );
    let mut events = engine.subscribe();
    for name in ["a", "b"] {
        engine.ingest(final_line(name, 1, "hello"), None);
    }
    next_matching(&mut events, Duration::from_secs(1), |e| {
        matches!(e, Event::OpStarted { .. }).then_some(())
    })
    .await;
    let totals = engine.snapshot().totals;
    assert_eq!((totals.running, totals.queued), (1, 1));
    let drained = engine.drain(Duration::from_secs(10)).await;
    assert_eq!(
        (drained.in_flight, drained.cancelled),
        (2, 2),
        "one running, one queued: neither could finish in 10 s"
    );
    assert!(engine.is_idle());
    let row = &engine.snapshot().sessions[0].ops[Operation::SUMMARY];
    assert_eq!(row.last_error.as_deref(), Some("the process is stopping"));

    // Runs that can finish in time are waited for, not cancelled.
    let quick = slow_engine(Duration::from_secs(2), Duration::from_secs(300));
    quick.ingest(final_line("c", 1, "hello"), None);
    let drained = quick.drain(Duration::from_secs(10)).await;
    assert_eq!((drained.in_flight, drained.cancelled), (1, 0));
    assert_eq!(quick.snapshot().totals.counts.ok, 1);
}
