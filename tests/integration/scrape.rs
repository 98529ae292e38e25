//! A `/metrics` scrape adds the held sessions up itself instead of taking
//! the dashboard's snapshot: what it says of them (runs queued and running,
//! sessions held, each session's tokens) must be what that snapshot shows
//! of the same state.

use std::sync::Arc;
use std::time::Duration;

use crate::common::api_server::{get_text, serving};
use crate::common::{self, final_line};
use inflight::engine::{Engine, EngineConfig};
use inflight::events::Event;
use inflight::llm::{
    Backend, BackendInfo, BoxFuture, LlmError, LlmRequest, LlmResponse, Progress, Usage,
};
use inflight::model::Operation;
use inflight::state::Phase;

/// Answers a line that says "quick" at once, with its usage; never answers
/// the others, so their runs stay where they are.
struct QuickOrNever;

impl Backend for QuickOrNever {
    fn info(&self) -> BackendInfo {
        BackendInfo::simulated("quick-or-never", "m")
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        _: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            let quick = request
                .utterances
                .iter()
                .any(|u| u.text().contains("quick"));
            if !quick {
                std::future::pending::<()>().await;
            }
            Ok(LlmResponse {
                // A mind map, which a summary takes as text too.
                text: r#"{"root": {"label": "noted", "children": []}}"#.into(),
                model: "m".into(),
                usage: Usage {
                    prompt_tokens: 10 + request.utterances.len() as u64,
                    completion_tokens: 5,
                    ..Default::default()
                },
                truncated: false,
            })
        })
    }
}

async fn wait_for(events: &mut tokio::sync::broadcast::Receiver<Event>, n: usize, finished: bool) {
    for _ in 0..n {
        common::next_matching(events, Duration::from_secs(30), |e| match e {
            Event::OpFinished { .. } if finished => Some(()),
            Event::OpStarted { .. } if !finished => Some(()),
            _ => None,
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_says_of_the_sessions_what_the_dashboard_shows() {
    let config = EngineConfig {
        llm_concurrency: 2,
        ..Default::default()
    };
    let engine = Engine::new(config, Arc::new(QuickOrNever));
    let server = serving(engine.clone(), Default::default()).await;
    let mut events = engine.subscribe();
    // Two sessions whose runs (both operations) end at once, with tokens.
    engine.ingest(final_line("q1", 1, "A quick one."), None);
    engine.ingest(final_line("q2", 1, "Another quick one."), None);
    wait_for(&mut events, 4, true).await;
    // Four whose runs never end: two take the permits, six wait.
    for s in ["w1", "w2", "w3", "w4"] {
        engine.ingest(final_line(s, 1, "This one waits."), None);
    }
    wait_for(&mut events, 2, false).await;

    let snapshot = engine.snapshot();
    let (_, tally) = engine.scrape();
    assert_eq!(tally.ids.len(), 6);
    assert_eq!(
        tally.ids,
        snapshot
            .sessions
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    );
    let count = |op: Operation, phase: Phase| {
        snapshot
            .sessions
            .iter()
            .filter(|r| {
                r.op(op)
                    .in_flight
                    .as_ref()
                    .is_some_and(|f| f.phase == phase)
            })
            .count() as u64
    };
    let mut running = 0;
    for (i, op) in tally.ops.iter().enumerate() {
        assert_eq!(tally.queued[i], count(*op, Phase::Queued), "{op:?} queued");
        assert_eq!(
            tally.running[i],
            count(*op, Phase::Running),
            "{op:?} running"
        );
        assert_eq!(tally.stale[i], 0);
        running += tally.running[i];
    }
    assert_eq!(running, 2, "the two permits");
    assert_eq!(
        tally.queued.iter().sum::<u64>(),
        6,
        "the other runs wait their turn"
    );
    for ((id, tokens), row) in tally.sessions().zip(&snapshot.sessions) {
        assert_eq!(id, &row.id);
        for (op, [prompt, completion]) in tally.ops.iter().zip(tokens) {
            let counts = row.op(*op).counts;
            assert_eq!(
                (*prompt, *completion),
                (counts.prompt_tokens, counts.completion_tokens)
            );
        }
    }
    let q1 = tally.sessions().next().expect("q1 first, by id");
    assert_eq!(q1.0.as_str(), "q1");
    assert_eq!(q1.1[0], [11, 5], "one line read, five tokens written");

    // And the text a scraper reads says the same.
    let (code, metrics) = get_text(&format!("{}/metrics", server.base)).await;
    assert_eq!(code, 200);
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing in\n{metrics}"))
    };
    assert_eq!(value("inflight_sessions"), 6);
    let phases = ["queued", "running"];
    let mut said = [0, 0];
    for op in &tally.ops {
        for (i, phase) in phases.iter().enumerate() {
            said[i] += value(&format!(
                "inflight_in_flight{{op=\"{}\",phase=\"{phase}\"}}",
                op.as_str()
            ));
        }
    }
    assert_eq!(said, [6, 2]);
    assert_eq!(
        value(r#"inflight_session_llm_tokens{session_id="q2",op="summary",kind="prompt"}"#),
        11
    );
    assert_eq!(
        value(r#"inflight_session_llm_tokens{session_id="w1",op="summary",kind="prompt"}"#),
        0
    );
}
