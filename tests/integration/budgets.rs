//! Budgets that hold: a session's budget is never overshot by more than
//! the calls in flight when it was reached, a feed's hourly budget holds
//! and frees up as the hour rolls (on a paused clock), and a spent budget
//! admits nothing and says which budget it was.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use inflight::engine::{BudgetChange, Engine, EngineConfig, SessionRow, TriggerAnswer};
use inflight::llm::{
    Backend, BackendInfo, BoxFuture, LlmError, LlmRequest, LlmResponse, Progress, Usage,
};
use inflight::model::Operation;
use inflight::spend::{Budget, Budgets, Cost};

use crate::common::{final_line, sid};

/// Each call takes a second and reports 100 prompt and 50 answer tokens.
struct Metered {
    calls: AtomicU64,
}

impl Backend for Metered {
    fn info(&self) -> BackendInfo {
        BackendInfo::simulated("metered", "m")
    }

    fn generate<'a>(
        &'a self,
        _request: LlmRequest,
        _progress: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(LlmResponse {
                text: "Ana ships the release.".into(),
                model: "m".into(),
                usage: Usage::tokens(100, 50),
                truncated: false,
            })
        })
    }
}

const PER_CALL: u64 = 150;

fn engine(budgets: Budgets) -> (Engine, Arc<Metered>) {
    let backend = Arc::new(Metered {
        calls: AtomicU64::new(0),
    });
    let config = EngineConfig {
        automatic_ops: vec![Operation::SUMMARY],
        llm_concurrency: 4,
        budgets,
        ..Default::default()
    };
    (Engine::new(config, backend.clone()), backend)
}

fn spent(engine: &Engine, session: &str) -> u64 {
    let usage = engine
        .snapshot()
        .sessions
        .iter()
        .find(|row| row.id.as_str() == session)
        .map(|row| row.ops[Operation::SUMMARY].counts.usage())
        .unwrap_or_default();
    usage.prompt_tokens + usage.completion_tokens
}

/// The session's row in a snapshot.
fn row(engine: &Engine, session: &str) -> SessionRow {
    engine
        .snapshot()
        .sessions
        .into_iter()
        .find(|r| r.id.as_str() == session)
        .unwrap_or_else(|| panic!("no session {session}"))
}

/// Session `s1` with a budget of 1 000 tokens and seven long lines: six
/// calls spend 900, and the seventh run's prompt (some 500 characters,
/// over 100 tokens) would overshoot.
async fn stopped_at_900() -> (Engine, Arc<Metered>) {
    let (engine, backend) = engine(Budgets {
        session_tokens: Some(1000),
        ..Budgets::default()
    });
    let long = "we ship on Friday, after the review. ".repeat(14);
    for seq in 1..=7 {
        engine.ingest(final_line("s1", seq, &long), None);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    settle(&engine).await;
    (engine, backend)
}

/// Lets the paused clock run until every run has ended.
async fn settle(engine: &Engine) {
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if engine.is_idle() {
            return;
        }
    }
    panic!("runs never settled");
}

#[tokio::test(start_paused = true)]
async fn a_session_budget_is_never_overshot_by_more_than_one_call() {
    // 1 000 tokens: six calls of 150 fit (900), a seventh would overshoot.
    let (engine, backend) = engine(Budgets {
        session_tokens: Some(1000),
        ..Budgets::default()
    });
    for seq in 1..=40 {
        engine.ingest(
            final_line("s1", seq, &format!("line {seq}: we ship on Friday.")),
            None,
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    settle(&engine).await;
    let total = spent(&engine, "s1");
    assert!(
        total <= 1000 + PER_CALL,
        "spent {total} tokens against a 1 000 budget"
    );
    assert!(total >= 1000 - PER_CALL, "stopped early: {total}");
    let calls = backend.calls.load(Ordering::SeqCst);
    assert_eq!(total, calls * PER_CALL, "every call counted");
    let row = row(&engine, "s1");
    assert_eq!(row.over_budget, Some(Budget::SessionTokens));
    // Nothing more is admitted, and the answer names the budget.
    assert_eq!(
        engine.request(&sid("s1"), Operation::SUMMARY),
        Some(TriggerAnswer::OverBudget {
            budget: Budget::SessionTokens
        })
    );
    engine.ingest(final_line("s1", 41, "one more line"), None);
    settle(&engine).await;
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        calls,
        "no call after the budget"
    );
    // The latest result stays, covering up to where it stopped.
    let result = engine.result(&sid("s1"), Operation::SUMMARY).unwrap();
    assert!(result.covered_generation < 41);
    // Another session has its own budget.
    engine.ingest(final_line("s2", 1, "a fresh meeting"), None);
    settle(&engine).await;
    assert_eq!(spent(&engine, "s2"), PER_CALL);
}

#[tokio::test(start_paused = true)]
async fn a_feeds_hourly_budget_holds_and_frees_up_as_the_hour_rolls() {
    let (engine, backend) = engine(Budgets {
        feed_tokens_per_hour: Some(600),
        ..Budgets::default()
    });
    let feed = engine.feeds().register("ws://feed-a/");
    let other = engine.feeds().register("ws://feed-b/");
    // Ten sessions of feed A, one line each: four calls fit (600).
    for n in 0..10 {
        engine.ingest_from(final_line(&format!("a{n}"), 1, "hello"), &feed);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    settle(&engine).await;
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        4,
        "600 tokens an hour: four calls"
    );
    let refused: Vec<_> = engine
        .snapshot()
        .sessions
        .into_iter()
        .filter(|r| r.over_budget == Some(Budget::FeedTokensPerHour))
        .collect();
    assert_eq!(refused.len(), 6);
    // Feed B is not held back by feed A's spending.
    engine.ingest_from(final_line("b0", 1, "hello"), &other);
    settle(&engine).await;
    assert_eq!(backend.calls.load(Ordering::SeqCst), 5);
    // An hour on, feed A has room again.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    engine.ingest_from(final_line("a9", 2, "back again"), &feed);
    settle(&engine).await;
    assert_eq!(backend.calls.load(Ordering::SeqCst), 6);
    let row = row(&engine, "a9");
    assert_eq!(
        row.over_budget, None,
        "the mark goes once a run is admitted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_prompt_would_overshoot_the_budget_is_not_started() {
    // Admitted at 900 of 1 000 spent, the seventh run is not sent.
    let (engine, backend) = stopped_at_900().await;
    assert_eq!(backend.calls.load(Ordering::SeqCst), 6);
    assert_eq!(spent(&engine, "s1"), 900, "not a token over");
    let row = row(&engine, "s1");
    assert_eq!(row.over_budget, Some(Budget::SessionTokens));
    let summary = &row.ops[Operation::SUMMARY];
    assert_eq!(
        summary.last_error.as_deref(),
        Some("not started: the session_tokens budget is spent")
    );
}

#[tokio::test(start_paused = true)]
async fn once_a_session_budget_stops_a_call_new_lines_admit_no_more_runs() {
    let (engine, backend) = stopped_at_900().await;
    let runs = |engine: &Engine| {
        engine.snapshot().sessions[0].ops[Operation::SUMMARY]
            .counts
            .runs
    };
    let before = runs(&engine);
    for seq in 8..=20 {
        engine.ingest(final_line("s1", seq, "short"), None);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    settle(&engine).await;
    assert_eq!(runs(&engine), before, "no run admitted only to be stopped");
    assert_eq!(backend.calls.load(Ordering::SeqCst), 6);
}

#[tokio::test(start_paused = true)]
async fn an_operator_lifts_a_sessions_budget_and_its_runs_go_on() {
    let (engine, backend) = engine(Budgets {
        session_tokens: Some(300),
        ..Budgets::default()
    });
    for seq in 1..=4 {
        engine.ingest(final_line("s1", seq, "we ship on Friday."), None);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    settle(&engine).await;
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        2,
        "300 spent, then stopped"
    );
    assert_eq!(
        engine.lift_budget(&sid("nobody")),
        Err(BudgetChange::NoSession)
    );
    assert_eq!(engine.lift_budget(&sid("s1")), Ok(()));
    settle(&engine).await;
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        3,
        "lifted, it covers what it said meanwhile at once"
    );
    let row = row(&engine, "s1");
    assert!(row.budget_lifted);
    assert_eq!(row.over_budget, None);
    let result = engine.result(&sid("s1"), Operation::SUMMARY).unwrap();
    assert_eq!(result.covered_generation, 4);
    engine.ingest(final_line("s1", 5, "and one more"), None);
    settle(&engine).await;
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        4,
        "its budget no longer applies"
    );
    // Without a budget per session there is nothing to lift.
    let (plain, _) = self::engine(Budgets::default());
    plain.ingest(final_line("s1", 1, "hello"), None);
    assert_eq!(
        plain.lift_budget(&sid("s1")),
        Err(BudgetChange::NoSessionBudget)
    );
    assert_eq!(
        plain.raise_budget(&sid("s1"), None),
        Err(BudgetChange::NoSessionBudget)
    );
}

#[tokio::test(start_paused = true)]
async fn an_operator_raises_a_sessions_budget_and_it_holds_at_the_new_height() {
    let (engine, backend) = engine(Budgets {
        session_tokens: Some(300),
        ..Budgets::default()
    });
    for seq in 1..=4 {
        engine.ingest(final_line("s1", seq, "we ship on Friday."), None);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    settle(&engine).await;
    assert_eq!(backend.calls.load(Ordering::SeqCst), 2, "300 spent");
    // By one more of itself: 300 more tokens, two more calls.
    let raised = engine.raise_budget(&sid("s1"), None).unwrap();
    assert_eq!(raised.prompt_tokens, 300);
    settle(&engine).await;
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        3,
        "raised, it covers what it said meanwhile at once"
    );
    assert_eq!(row(&engine, "s1").over_budget, None);
    for seq in 5..=10 {
        engine.ingest(final_line("s1", seq, "and more."), None);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    settle(&engine).await;
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        4,
        "600 spent: the raised budget holds"
    );
    assert_eq!(row(&engine, "s1").over_budget, Some(Budget::SessionTokens));
    // By an amount: 150 more, one more call.
    let raised = engine
        .raise_budget(&sid("s1"), Some(Usage::tokens(150, 0)))
        .unwrap();
    assert_eq!(raised.prompt_tokens, 450, "raises add up");
    settle(&engine).await;
    assert_eq!(backend.calls.load(Ordering::SeqCst), 5);
    assert!(!row(&engine, "s1").budget_lifted, "raised, not lifted");
    assert_eq!(
        engine.raise_budget(&sid("nobody"), None),
        Err(BudgetChange::NoSession)
    );
}

#[tokio::test(start_paused = true)]
async fn a_budget_in_money_is_raised_in_money() {
    // At 1 a million prompt tokens and 2 a million answer tokens, a call
    // (100 + 50) costs 0.0002: two calls spend the session's 0.0004.
    let backend = Arc::new(Metered {
        calls: AtomicU64::new(0),
    });
    let prices = inflight::spend::Prices::new(
        "USD",
        vec![inflight::spend::Price::per_million("m", 1.0, 2.0, None).unwrap()],
    );
    let engine = Engine::new(
        EngineConfig {
            automatic_ops: vec![Operation::SUMMARY],
            llm_concurrency: 4,
            budgets: Budgets {
                session_cost: Some(Cost(400_000)),
                ..Budgets::default()
            },
            prices: Arc::new(prices),
            ..Default::default()
        },
        backend.clone(),
    );
    for seq in 1..=4 {
        engine.ingest(final_line("s1", seq, "we ship on Friday."), None);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    settle(&engine).await;
    assert_eq!(backend.calls.load(Ordering::SeqCst), 2, "0.0004 spent");
    assert_eq!(row(&engine, "s1").over_budget, Some(Budget::SessionCost));
    let raised = engine.raise_budget(&sid("s1"), None).unwrap();
    assert_eq!((raised.prompt_tokens, raised.cost), (0, Cost(400_000)));
    settle(&engine).await;
    for seq in 5..=8 {
        engine.ingest(final_line("s1", seq, "and more."), None);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    settle(&engine).await;
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        4,
        "0.0008 spent: the raised budget holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifting_through_the_api_is_for_operators() {
    use crate::common::api_server::{http, serving};
    let (engine, _) = engine(Budgets {
        session_tokens: Some(300),
        ..Budgets::default()
    });
    engine.ingest(final_line("s1", 1, "hello"), None);
    let api = inflight::api::ApiConfig {
        token: Some("op-token".into()),
        read_token: Some("viewer-token".into()),
        ..Default::default()
    };
    let server = serving(engine, api).await;
    let lift = |session: &str, token: &str| {
        http()
            .post(format!(
                "{}/api/sessions/{session}/budget/lift",
                server.base
            ))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(lift("s1", "viewer-token").await.unwrap().status(), 403);
    assert_eq!(lift("nobody", "op-token").await.unwrap().status(), 404);
    let lifted = lift("s1", "op-token").await.unwrap();
    assert_eq!(lifted.status(), 200);
    let sessions: serde_json::Value = http()
        .get(format!("{}/api/sessions", server.base))
        .bearer_auth("viewer-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["sessions"][0]["budget_lifted"], true);
    let raise = |session: &str, token: &str, body: &str| {
        http()
            .post(format!(
                "{}/api/sessions/{session}/budget/raise",
                server.base
            ))
            .bearer_auth(token)
            .body(body.to_string())
            .send()
    };
    assert_eq!(raise("s1", "viewer-token", "").await.unwrap().status(), 403);
    assert_eq!(raise("nobody", "op-token", "").await.unwrap().status(), 404);
    for bad in [
        "{\"tokens\": -5}",
        "{\"coins\": 5}",
        "{\"cost\": -1.0}",
        "[1]",
    ] {
        let answer = raise("s1", "op-token", bad).await.unwrap();
        assert_eq!(answer.status(), 400, "{bad}");
        let why: serde_json::Value = answer.json().await.unwrap();
        assert!(
            why["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{why}"
        );
    }
    let raised: serde_json::Value = raise("s1", "op-token", "")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raised["raised_tokens"], 300, "one more of itself");
    let raised: serde_json::Value = raise("s1", "op-token", "{\"tokens\": 1000}")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raised["raised_tokens"], 1300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_status_names_a_spent_budget() {
    use crate::common::api_server::serving;
    let (engine, _) = engine(Budgets {
        session_tokens: Some(100),
        ..Budgets::default()
    });
    engine.ingest(final_line("s1", 1, "hello"), None);
    // One call (150 tokens) spends it; the next line is refused.
    let mut events = engine.subscribe();
    crate::common::wait_until(
        &mut events,
        Duration::from_secs(10),
        "the first call",
        || engine.is_idle() && spent(&engine, "s1") == PER_CALL,
    )
    .await;
    engine.ingest(final_line("s1", 2, "again"), None);
    assert_eq!(row(&engine, "s1").over_budget, Some(Budget::SessionTokens));
    let server = serving(engine, Default::default()).await;
    let base = server.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        crate::common::child::output(
            std::process::Command::new(env!("CARGO_BIN_EXE_inflight"))
                .args(["status", "--api", &base]),
        )
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("s1"))
        .unwrap_or_default();
    assert!(line.contains("⊘ budget session_tokens spent"), "{text}");

    // /metrics counts it under its budget, and every other budget at 0.
    let metrics = crate::common::api_server::http()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("inflight_sessions_over_budget{budget=\"session_tokens\"} 1\n"),
        "{metrics}"
    );
    for other in Budget::ALL.iter().filter(|b| **b != Budget::SessionTokens) {
        let series = format!(
            "inflight_sessions_over_budget{{budget=\"{}\"}} 0\n",
            other.as_str()
        );
        assert!(metrics.contains(&series), "no {series} in {metrics}");
    }
}
