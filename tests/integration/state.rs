//! The processing state manager under concurrency, panics, forced stops and
//! both policies; and the original status JSON.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::sid;
use inflight::events::{Event, EventBus, Outcome};
use inflight::model::Operation;
use inflight::ops::BUILT_IN;
use inflight::state::{Admission, FinishOutcome, Policy, ProcessingStateManager, StateConfig};

fn manager(policy: Policy) -> (Arc<ProcessingStateManager>, EventBus) {
    let events = EventBus::new();
    let config = StateConfig {
        policy: inflight::ops::OpMap::filled_with(|_| policy),
        op_timeout: Duration::from_secs(300),
        ..Default::default()
    };
    (ProcessingStateManager::new(config, events.clone()), events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_racers_get_exactly_one_start() {
    let (manager, _events) = manager(Policy::Skip);
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let racers: Vec<_> = (0..64)
        .map(|_| {
            let (manager, barrier) = (manager.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                manager.try_start(&sid("race"), Operation::SUMMARY)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for racer in racers {
        answers.push(racer.await.expect("racer task"));
    }
    let started: Vec<_> = answers
        .iter()
        .filter_map(|a| match a {
            Admission::Started(guard) => Some(guard.run_id()),
            Admission::Busy { .. } => None,
        })
        .collect();
    assert_eq!(started.len(), 1, "exactly one racer may start");
    for answer in &answers {
        if let Admission::Busy { run_id, .. } = answer {
            assert_eq!(*run_id, started[0], "every refusal names the running run");
        }
    }
    let view = manager.op_view(&sid("race"), Operation::SUMMARY);
    assert_eq!(view.stats.counts.skipped, 63);
    assert_eq!(view.stats.counts.runs, 1);
    // The other operation was never touched.
    assert!(!manager.is_processing(&sid("race"), Some(Operation::MIND_MAP)));
}

#[tokio::test]
async fn a_panicking_task_leaves_nothing_processing() {
    let (manager, events) = manager(Policy::Coalesce);
    let mut seen = events.subscribe();
    let Admission::Started(guard) = manager.try_start(&sid("p"), Operation::SUMMARY) else {
        panic!("idle slot must start")
    };
    assert_eq!(manager.in_flight_sessions(), 1);
    let task = tokio::spawn(async move {
        let _guard = guard;
        panic!("the LLM client blew up");
    });
    assert!(task.await.unwrap_err().is_panic());
    assert!(!manager.is_processing(&sid("p"), None));
    assert_eq!(manager.in_flight_sessions(), 0);
    let mut outcomes = Vec::new();
    let mut cleaned = false;
    while let Ok(event) = seen.try_recv() {
        match event {
            Event::OpFinished { outcome, .. } => outcomes.push(outcome),
            Event::SessionCleaned { .. } => cleaned = true,
            _ => {}
        }
    }
    assert_eq!(outcomes, vec![Outcome::Cancelled]);
    assert!(cleaned, "the cleanup is announced");
    assert_eq!(
        manager
            .op_view(&sid("p"), Operation::SUMMARY)
            .stats
            .counts
            .cancelled,
        1
    );
}

#[tokio::test]
async fn an_aborted_task_leaves_nothing_processing() {
    let (manager, _events) = manager(Policy::Coalesce);
    let Admission::Started(guard) = manager.try_start(&sid("a"), Operation::MIND_MAP) else {
        panic!("idle slot must start")
    };
    let task = tokio::spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    assert!(manager.is_processing(&sid("a"), Some(Operation::MIND_MAP)));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(!manager.is_processing(&sid("a"), None));
}

#[test]
fn a_stale_finish_cannot_end_the_new_run() {
    let (manager, events) = manager(Policy::Coalesce);
    let s = sid("fence");
    let Admission::Started(old) = manager.try_start(&s, Operation::SUMMARY) else {
        panic!("idle slot must start")
    };
    assert_eq!(
        manager.stop_processing(&s, Operation::SUMMARY),
        Some(old.run_id())
    );
    assert!(
        old.cancel_token().is_cancelled(),
        "the stopped run is told to stop"
    );
    assert!(!manager.is_processing(&s, None));
    let Admission::Started(new) = manager.try_start(&s, Operation::SUMMARY) else {
        panic!("a stopped slot is free again")
    };
    assert!(new.run_id() > old.run_id());
    assert!(new.mark_running(4).is_some());
    // A request while the new run works leaves a pending flag that a stale
    // finish, whatever it says, must neither consume nor clear.
    assert!(matches!(
        manager.try_start(&s, Operation::SUMMARY),
        Admission::Busy { pending: true, .. }
    ));
    let before = manager.op_view(&s, Operation::SUMMARY);
    let mut seen = events.subscribe();
    assert!(
        old.mark_running(8).is_none(),
        "a stopped run cannot mark the new run as its own"
    );
    let stale = old.finish(Outcome::Failed, Some("late".into()), &|| 9);
    assert!(matches!(stale, FinishOutcome::Stale));
    assert_eq!(
        manager.op_view(&s, Operation::SUMMARY),
        before,
        "a stale finish changes neither the run in flight nor the statistics"
    );
    assert!(seen.try_recv().is_err(), "a stale finish sends no event");
    assert!(
        manager.is_processing(&s, Some(Operation::SUMMARY)),
        "the new run still holds the slot"
    );
    let FinishOutcome::FollowUp(new) = new.finish(Outcome::Ok, None, &|| 9) else {
        panic!("the pending flag survived the stale finish")
    };
    assert!(matches!(
        new.finish(Outcome::Ok, None, &|| 9),
        FinishOutcome::Ended
    ));
    assert!(!manager.is_processing(&s, None));
    assert_eq!(manager.stop_processing(&s, Operation::SUMMARY), None);
}

#[test]
fn coalesce_hands_over_to_one_follow_up_only_when_the_session_moved_on() {
    let (manager, _events) = manager(Policy::Coalesce);
    let s = sid("c");
    let Admission::Started(run) = manager.try_start(&s, Operation::SUMMARY) else {
        panic!("idle slot must start")
    };
    assert!(!run.is_follow_up(), "a requested run is not a follow-up");
    assert!(run.mark_running(3).is_some());
    for _ in 0..5 {
        assert!(matches!(
            manager.try_start(&s, Operation::SUMMARY),
            Admission::Busy { pending: true, .. }
        ));
    }
    // The session moved from generation 3 to 7 during the run: one follow-up.
    let FinishOutcome::FollowUp(next) = run.finish(Outcome::Ok, None, &|| 7) else {
        panic!("a pending request and newer transcripts make a follow-up")
    };
    assert!(next.is_follow_up());
    assert!(manager.is_processing(&s, Some(Operation::SUMMARY)));
    assert!(next.mark_running(7).is_some());
    // A pending flag without newer transcripts makes no follow-up.
    assert!(matches!(
        manager.try_start(&s, Operation::SUMMARY),
        Admission::Busy { pending: true, .. }
    ));
    assert!(matches!(
        next.finish(Outcome::Ok, None, &|| 7),
        FinishOutcome::Ended
    ));
    assert!(!manager.is_processing(&s, None));
    let stats = manager.op_view(&s, Operation::SUMMARY).stats;
    assert_eq!(
        (
            stats.counts.runs,
            stats.counts.follow_ups,
            stats.counts.skipped,
            stats.counts.ok
        ),
        (2, 1, 6, 2)
    );
    assert_eq!(stats.covered_generation, Some(7));
}

#[test]
fn skip_never_follows_up() {
    let (manager, _events) = manager(Policy::Skip);
    let s = sid("s");
    let Admission::Started(run) = manager.try_start(&s, Operation::SUMMARY) else {
        panic!("idle slot must start")
    };
    run.mark_running(1);
    assert!(matches!(
        manager.try_start(&s, Operation::SUMMARY),
        Admission::Busy { pending: false, .. }
    ));
    assert!(matches!(
        run.finish(Outcome::Ok, None, &|| 9),
        FinishOutcome::Ended
    ));
    assert_eq!(
        manager.op_view(&s, Operation::SUMMARY).stats.counts.skipped,
        1
    );
}

#[test]
fn statistics_outlast_the_cleanup() {
    let (manager, _events) = manager(Policy::Coalesce);
    let s = sid("keep");
    let Admission::Started(run) = manager.try_start(&s, Operation::SUMMARY) else {
        panic!("idle slot must start")
    };
    run.finish(Outcome::Failed, Some("model refused".into()), &|| 0);
    assert_eq!(manager.in_flight_sessions(), 0);
    let stats = manager.op_view(&s, Operation::SUMMARY).stats;
    assert_eq!(stats.counts.failed, 1);
    assert_eq!(stats.last_error(), Some("model refused"));
    assert_eq!(stats.history.len(), 1);
}

fn float(x: f64) -> String {
    serde_json::to_string(&x).unwrap()
}

#[test]
fn status_json_matches_the_original_field_for_field() {
    let (manager, _events) = manager(Policy::Coalesce);
    let s = sid("session-123");
    let json =
        |m: &ProcessingStateManager| serde_json::to_string(&m.status(&s).into_response()).unwrap();

    assert_eq!(
        json(&manager),
        r#"{"success":true,"session_id":"session-123","summary_processing":false,"mind_map_processing":false,"any_processing":false,"summary_start_time":null,"mind_map_start_time":null}"#
    );

    let before = SystemTime::now();
    let Admission::Started(mind_map) = manager.try_start(&s, Operation::MIND_MAP) else {
        panic!("idle slot must start")
    };
    let status = manager.status(&s);
    let started = status
        .mind_map_start_time
        .expect("a running op has a start time");
    // Unix seconds, computed here, not with the function under test.
    let seconds = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let now = seconds(SystemTime::now());
    assert!(
        started >= seconds(before) && started <= now,
        "{started} within [{}, {now}]",
        seconds(before)
    );
    assert_eq!(
        json(&manager),
        format!(
            r#"{{"success":true,"session_id":"session-123","summary_processing":false,"mind_map_processing":true,"any_processing":true,"summary_start_time":null,"mind_map_start_time":{}}}"#,
            float(started)
        )
    );

    let Admission::Started(summary) = manager.try_start(&s, Operation::SUMMARY) else {
        panic!("the other op is independent")
    };
    assert_eq!(manager.in_flight_sessions(), 1, "one session, two runs");
    let debug = format!("{summary:?}");
    assert!(
        debug.contains("session-123") && debug.contains(&summary.run_id().to_string()),
        "{debug}"
    );
    let summary_started = manager.status(&s).summary_start_time.expect("running");
    assert_eq!(
        json(&manager),
        format!(
            r#"{{"success":true,"session_id":"session-123","summary_processing":true,"mind_map_processing":true,"any_processing":true,"summary_start_time":{},"mind_map_start_time":{}}}"#,
            float(summary_started),
            float(started)
        )
    );
    drop((summary, mind_map));
    assert!(!manager.status(&s).any_processing);
}

#[test]
fn lifetime_counters_count_everything_and_outlast_forgetting() {
    let (manager, _events) = manager(Policy::Coalesce);
    let s = sid("counted");
    let Admission::Started(run) = manager.try_start(&s, Operation::SUMMARY) else {
        panic!("idle slot must start")
    };
    assert!(run.mark_running(1).is_some());
    for _ in 0..3 {
        manager.try_start(&s, Operation::SUMMARY);
    }
    let FinishOutcome::FollowUp(next) = run.finish(Outcome::Failed, None, &|| 2) else {
        panic!("pending and newer: a follow-up")
    };
    assert!(matches!(
        next.finish(Outcome::TimedOut, None, &|| 2),
        FinishOutcome::Ended
    ));
    let Admission::Started(stopped) = manager.try_start(&s, Operation::MIND_MAP) else {
        panic!("the other op is free")
    };
    manager.stop_processing(&s, Operation::MIND_MAP);
    drop(stopped);
    let Admission::Started(ok) = manager.try_start(&s, Operation::MIND_MAP) else {
        panic!("free again")
    };
    ok.finish(Outcome::Ok, None, &|| 2);

    let expected = [
        inflight::state::OpCounters {
            runs: 2,
            failed: 1,
            timed_out: 1,
            skipped: 3,
            follow_ups: 1,
            ..Default::default()
        },
        inflight::state::OpCounters {
            runs: 2,
            ok: 1,
            cancelled: 1,
            ..Default::default()
        },
    ];
    // Permit waits are measured in real time here; a paused-clock test
    // checks them.
    let counted = |manager: &ProcessingStateManager| {
        let lifetime = manager.lifetime();
        BUILT_IN.map(|op| inflight::state::OpCounters {
            waited: Duration::ZERO,
            ..lifetime[op]
        })
    };
    assert_eq!(counted(&manager), expected);
    let [summary, mind_map] = expected;
    let outcomes = [
        Outcome::Ok,
        Outcome::Failed,
        Outcome::Cancelled,
        Outcome::TimedOut,
    ];
    assert_eq!(
        outcomes.map(|o| summary.finished(o)),
        [0, 1, 0, 1],
        "ok, failed, cancelled, timed out"
    );
    assert_eq!(outcomes.map(|o| mind_map.finished(o)), [1, 0, 1, 0]);
    let both = summary.plus(mind_map);
    assert_eq!(
        (
            both.runs,
            both.ok,
            both.failed,
            both.timed_out,
            both.cancelled,
            both.skipped,
            both.follow_ups
        ),
        (4, 1, 1, 1, 1, 3, 1)
    );
    assert!(manager.forget_if(&s, || true));
    assert_eq!(manager.op_view(&s, Operation::SUMMARY), Default::default());
    assert_eq!(counted(&manager), expected, "forgetting takes nothing back");
    assert!(manager.stop_all("stopping") == 0);
}

#[test]
fn stop_all_stops_every_run_in_flight_and_says_why() {
    let (manager, _events) = manager(Policy::Coalesce);
    let mut guards = Vec::new();
    for (name, op) in [
        ("a", Operation::SUMMARY),
        ("a", Operation::MIND_MAP),
        ("b", Operation::SUMMARY),
    ] {
        let Admission::Started(guard) = manager.try_start(&sid(name), op) else {
            panic!("idle slot must start")
        };
        guards.push(guard);
    }
    assert_eq!(manager.stop_all("the process is stopping"), 3);
    assert_eq!(manager.in_flight_sessions(), 0);
    for guard in guards {
        assert!(guard.cancel_token().is_cancelled());
        assert!(matches!(
            guard.finish(Outcome::Ok, None, &|| 0),
            FinishOutcome::Stale
        ));
    }
    let stats = manager.op_view(&sid("b"), Operation::SUMMARY).stats;
    assert_eq!(stats.counts.cancelled, 1);
    assert_eq!(stats.last_error(), Some("the process is stopping"));
    assert_eq!(manager.stop_all("again"), 0);
}

#[test]
fn counters_add_field_by_field() {
    use inflight::state::OpCounters;
    let a = OpCounters {
        runs: 1,
        ok: 2,
        failed: 3,
        timed_out: 4,
        cancelled: 5,
        skipped: 6,
        follow_ups: 7,
        retries: 1,
        nothing_new: 2,
        truncated: 3,
        prompt_tokens: 8,
        completion_tokens: 9,
        cached_tokens: 4,
        cost: inflight::spend::Cost(5),
        waited: Duration::from_millis(10),
    };
    let b = OpCounters {
        runs: 10,
        ok: 20,
        failed: 30,
        timed_out: 40,
        cancelled: 50,
        skipped: 60,
        follow_ups: 70,
        retries: 10,
        nothing_new: 20,
        truncated: 30,
        prompt_tokens: 80,
        completion_tokens: 90,
        cached_tokens: 40,
        cost: inflight::spend::Cost(50),
        waited: Duration::from_millis(100),
    };
    assert_eq!(
        a.plus(b),
        OpCounters {
            runs: 11,
            ok: 22,
            failed: 33,
            timed_out: 44,
            cancelled: 55,
            skipped: 66,
            follow_ups: 77,
            retries: 11,
            nothing_new: 22,
            truncated: 33,
            prompt_tokens: 88,
            completion_tokens: 99,
            cached_tokens: 44,
            cost: inflight::spend::Cost(55),
            waited: Duration::from_millis(110),
        }
    );
}

#[test]
fn an_admission_for_a_session_gone_makes_nothing() {
    let (manager, events) = manager(Policy::Coalesce);
    let mut seen = events.subscribe();
    let s = sid("gone");
    assert!(
        manager
            .try_start_if(&s, Operation::SUMMARY, || false)
            .is_none()
    );
    assert_eq!(manager.op_view(&s, Operation::SUMMARY), Default::default());
    assert_eq!(
        manager.lifetime()[Operation::SUMMARY].runs,
        0,
        "nothing counted"
    );
    assert!(seen.try_recv().is_err(), "no event");
    // Held: admitted as `try_start` would.
    let Some(Admission::Started(guard)) = manager.try_start_if(&s, Operation::SUMMARY, || true)
    else {
        panic!("a held session is admitted")
    };
    assert!(matches!(seen.try_recv(), Ok(Event::OpQueued { .. })));
    assert!(manager.op_view(&s, Operation::SUMMARY).in_flight.is_some());
    drop(guard);
}
