//! How runs share the LLM, under a paused clock: the deadline counts from
//! the call's start, permits go to the oldest uncovered transcript, a
//! backlog is caught up one prompt window at a time, and `--min-interval`
//! spaces follow-ups.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{final_line, next_matching, sid, wait_until};
use inflight::engine::{Engine, EngineConfig};
use inflight::events::{Event, Outcome};
use inflight::llm::{
    Backend, BackendInfo, BoxFuture, LlmError, LlmRequest, LlmResponse, Progress, Usage,
};
use inflight::model::Operation;
use inflight::state::StateConfig;
use tokio::time::Instant;

/// One call as the model saw it.
#[derive(Debug, Clone)]
struct Call {
    session: String,
    at: Instant,
    texts: Vec<String>,
    previous: Option<String>,
}

/// Answers every call after `latency`, writing down what it was given.
struct Recorder {
    latency: Duration,
    calls: Mutex<Vec<Call>>,
}

impl Recorder {
    fn new(latency: Duration) -> Arc<Self> {
        Arc::new(Self {
            latency,
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Backend for Recorder {
    fn info(&self) -> BackendInfo {
        BackendInfo::simulated("recorder", "m")
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        _: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(Call {
                session: request.session.as_str().to_string(),
                at: Instant::now(),
                texts: request
                    .utterances
                    .iter()
                    .map(|u| u.text().to_string())
                    .collect(),
                previous: request.previous.clone(),
            });
            tokio::time::sleep(self.latency).await;
            let last = request.utterances.last().map_or("", |u| u.text());
            Ok(LlmResponse {
                text: format!("covered up to {last}"),
                model: "m".into(),
                usage: Usage::tokens(request.utterances.len() as u64, 1),
                truncated: false,
            })
        })
    }
}

fn engine(backend: Arc<dyn Backend>, config: EngineConfig) -> Engine {
    Engine::new(config, backend)
}

fn summaries_only(concurrency: usize, timeout: Duration) -> EngineConfig {
    EngineConfig {
        state: StateConfig {
            op_timeout: timeout,
            ..Default::default()
        },
        llm_concurrency: concurrency,
        automatic_ops: Vec::new(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_permit_never_times_a_call_out() {
    // One permit, three runs of 8 s each, a 10 s deadline: the third waits
    // 16 s for its permit and still has its whole 10 s to answer.
    let recorder = Recorder::new(Duration::from_secs(8));
    let engine = engine(recorder.clone(), summaries_only(1, Duration::from_secs(10)));
    let mut events = engine.subscribe();
    for name in ["a", "b", "c"] {
        engine.ingest(final_line(name, 1, "We ship on Thursday."), None);
        engine.request(&sid(name), Operation::SUMMARY);
    }
    let mut ended = Vec::new();
    while ended.len() < 3 {
        let (outcome, duration) =
            next_matching(&mut events, Duration::from_secs(60), |e| match e {
                Event::OpFinished {
                    outcome, duration, ..
                } => Some((*outcome, *duration)),
                _ => None,
            })
            .await;
        ended.push((outcome, duration.as_secs()));
    }
    assert_eq!(
        ended,
        [(Outcome::Ok, 8), (Outcome::Ok, 16), (Outcome::Ok, 24)],
        "durations run from admission (the original status), waits included"
    );
    let history = &engine.session_detail(&sid("c"), 0).unwrap().history[Operation::SUMMARY];
    assert_eq!(
        history[0].waited,
        Duration::from_secs(16),
        "the wait is measured"
    );
    let lifetime = engine.snapshot().lifetime[Operation::SUMMARY];
    assert_eq!(lifetime.waited, Duration::from_secs(8 + 16));
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_deadline_still_times_out_from_its_start() {
    let recorder = Recorder::new(Duration::from_secs(30));
    let engine = engine(recorder.clone(), summaries_only(1, Duration::from_secs(10)));
    let mut events = engine.subscribe();
    for name in ["a", "b"] {
        engine.ingest(final_line(name, 1, "Long answer."), None);
        engine.request(&sid(name), Operation::SUMMARY);
    }
    let mut ended = Vec::new();
    while ended.len() < 2 {
        ended.push(
            next_matching(&mut events, Duration::from_secs(60), |e| match e {
                Event::OpFinished {
                    outcome, duration, ..
                } => Some((*outcome, duration.as_secs())),
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(ended, [(Outcome::TimedOut, 10), (Outcome::TimedOut, 20)]);
}

#[tokio::test(start_paused = true)]
async fn a_free_permit_goes_to_the_session_that_waited_longest_for_fresh_results() {
    let recorder = Recorder::new(Duration::from_secs(5));
    let engine = engine(recorder.clone(), summaries_only(1, Duration::from_secs(60)));
    let mut events = engine.subscribe();
    // "old" spoke first, "new" last; "busy" holds the only permit.
    engine.ingest(final_line("old", 1, "said first"), None);
    engine.ingest(final_line("mid", 1, "said second"), None);
    engine.ingest(final_line("busy", 1, "said third"), None);
    engine.ingest(final_line("new", 1, "said last"), None);
    // Admitted in the opposite order of need.
    for name in ["busy", "new", "mid", "old"] {
        engine.request(&sid(name), Operation::SUMMARY);
    }
    let mut order = Vec::new();
    while order.len() < 4 {
        let session = next_matching(&mut events, Duration::from_secs(60), |e| match e {
            Event::OpStarted { session, .. } => Some(session.as_str().to_string()),
            _ => None,
        })
        .await;
        order.push(session);
    }
    assert_eq!(order, ["busy", "old", "mid", "new"]);
}

#[tokio::test(start_paused = true)]
async fn a_backlog_past_the_window_is_caught_up_in_steps_and_nothing_is_dropped() {
    let recorder = Recorder::new(Duration::from_secs(1));
    let config = EngineConfig {
        automatic_ops: vec![Operation::SUMMARY],
        ..Default::default()
    };
    let engine = engine(recorder.clone(), config);
    let mut events = engine.subscribe();
    // All said before the run gets its permit (as after an LLM outage):
    // 600 lines of ~100 characters: about 62 000 characters, three windows.
    let lines: Vec<String> = (0..600)
        .map(|i| format!("line {i:04} {}", "x".repeat(90)))
        .collect();
    for (i, text) in lines.iter().enumerate() {
        engine.ingest(final_line("long", i as u64 + 1, text), None);
    }
    let covered = next_matching(&mut events, Duration::from_secs(60), |e| match e {
        Event::OpFinished { outcome, .. } => Some(*outcome),
        _ => None,
    })
    .await;
    assert_eq!(covered, Outcome::Ok);
    let calls = recorder.calls();
    assert!(calls.len() >= 3, "{} steps", calls.len());
    let sent: Vec<String> = calls.iter().flat_map(|c| c.texts.clone()).collect();
    assert_eq!(sent, lines, "every line once, in order");
    assert_eq!(calls[0].previous, None);
    for pair in calls.windows(2) {
        let last_before = pair[0].texts.last().unwrap();
        assert_eq!(
            pair[1].previous.as_deref(),
            Some(format!("covered up to {last_before}").as_str()),
            "each step builds on the one before"
        );
    }
    let row = engine.session_detail(&sid("long"), 0).unwrap().row;
    let summary = &row.ops[Operation::SUMMARY];
    assert_eq!(
        (summary.counts.runs, summary.counts.ok),
        (1, 1),
        "one run, in steps"
    );
    assert_eq!(summary.covered_generation, Some(600));
    assert_eq!(
        summary.counts.prompt_tokens, 600,
        "every step's tokens count"
    );
    assert_eq!(row.lost, 0);
}

#[tokio::test(start_paused = true)]
async fn backlogs_take_turns_with_a_live_session_and_show_each_step_covered() {
    let recorder = Recorder::new(Duration::from_secs(1));
    let config = EngineConfig {
        automatic_ops: vec![Operation::SUMMARY],
        llm_concurrency: 1,
        ..Default::default()
    };
    let engine = engine(recorder.clone(), config);
    let mut events = engine.subscribe();
    // Two sessions each say three windows' worth at once, before anything
    // else (two backlogs, or one backlog's two operations, pass the permit
    // back and forth between their steps).
    for name in ["long-a", "long-b"] {
        for i in 1..=600 {
            let text = format!("{name} line {i:04} {}", "x".repeat(90));
            engine.ingest(final_line(name, i, &text), None);
        }
    }
    // A live meeting speaks while the first step runs.
    engine.ingest(final_line("live", 1, "Can we ship Friday?"), None);
    let first_step = next_matching(&mut events, Duration::from_secs(60), |e| match e {
        Event::ResultReady {
            session,
            covered_generation,
            ..
        } if session.as_str() == "long-a" => Some(*covered_generation),
        _ => None,
    })
    .await;
    // The row shows the step covered while the run goes on.
    let row = engine.session_detail(&sid("long-a"), 0).unwrap().row;
    let summary = &row.ops[Operation::SUMMARY];
    assert!(summary.in_flight.is_some(), "the catch-up goes on");
    assert_eq!(summary.covered_generation, Some(first_step));
    wait_until(&mut events, Duration::from_secs(60), "all covered", || {
        engine.is_idle()
            && ["long-a", "long-b"].iter().all(|name| {
                engine
                    .result(&sid(name), Operation::SUMMARY)
                    .is_some_and(|r| r.covered_generation == 600)
            })
    })
    .await;
    let order: Vec<String> = recorder.calls().into_iter().map(|c| c.session).collect();
    assert!(order.len() >= 7, "{order:?}");
    assert_eq!(
        &order[..3],
        ["long-a", "long-b", "live"],
        "the live session is served after one step of each backlog, not after all of them"
    );
}

#[tokio::test(start_paused = true)]
async fn follow_ups_wait_for_the_min_interval_after_the_previous_start() {
    let recorder = Recorder::new(Duration::from_secs(1));
    let config = EngineConfig {
        automatic_ops: vec![Operation::SUMMARY],
        min_interval: Duration::from_secs(5),
        ..Default::default()
    };
    let engine = engine(recorder.clone(), config);
    let mut events = engine.subscribe();
    let start = Instant::now();
    // A line every half second for ten seconds, in two sessions; the
    // second starts speaking a second and a half later.
    for seq in 1..=20 {
        engine.ingest(final_line("paced", seq, &format!("line {seq}")), None);
        if seq > 3 {
            engine.ingest(final_line("other", seq - 3, &format!("line {seq}")), None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_until(
        &mut events,
        Duration::from_secs(30),
        "the last lines covered",
        || {
            engine.is_idle()
                && [("paced", 20), ("other", 17)].iter().all(|(s, last)| {
                    engine
                        .result(&sid(s), Operation::SUMMARY)
                        .is_some_and(|r| r.covered_generation == *last)
                })
        },
    )
    .await;
    let starts = |session: &str| -> Vec<u64> {
        recorder
            .calls()
            .iter()
            .filter(|c| c.session == session)
            .map(|c| (c.at - start).as_millis() as u64)
            .collect()
    };
    assert_eq!(
        starts("paced"),
        [0, 5_000, 10_000],
        "at most one call per 5 s"
    );
    // The interval is the session's own: the other's calls do not wait
    // for the first one's.
    assert_eq!(starts("other"), [1_500, 6_500, 11_500], "its own 5 s");
    assert_eq!(recorder.calls().len(), 6);
    let without = Recorder::new(Duration::from_secs(1));
    let eager = Engine::new(
        EngineConfig {
            automatic_ops: vec![Operation::SUMMARY],
            ..Default::default()
        },
        without.clone(),
    );
    for seq in 1..=20 {
        eager.ingest(final_line("paced", seq, &format!("line {seq}")), None);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(without.calls().len() >= 10, "without it, one call a second");
}
