//! Spend through the real binary: `serve` with a `[[prices]]` table, an
//! OpenAI-compatible server that reports usage the way OpenAI does (a
//! dated model name, cached prompt tokens under `prompt_tokens_details`),
//! and a database. The cost the API, `/metrics`, `inflight status` and the
//! database give agrees with the price table applied to the usage.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};

use crate::common::blocking;
use crate::common::child::{self, Logged, field};

/// What each call reports: 1 000 prompt tokens (400 from the cache) and
/// 200 answer tokens. At the table's prices (0.15, 0.075 and 0.60 per
/// million): 600 × 0.15 + 400 × 0.075 + 200 × 0.60 = 240 millionths.
const PER_CALL_NANOS: u64 = 240_000;
const LINES: u64 = 6;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_inflight")
}

async fn chat(State(calls): State<Arc<AtomicU64>>, Json(body): Json<Value>) -> impl IntoResponse {
    // The start-up probe asks for one token; runs ask for more.
    if body["max_tokens"] != 1 {
        calls.fetch_add(1, Ordering::SeqCst);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let model = "gpt-4o-mini-2024-07-18";
    let content = json!({"model": model, "choices": [{"index": 0, "delta": {"content": "Ana ships the release."}}]});
    let finish =
        json!({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    let usage = json!({"model": model, "choices": [], "usage": {
        "prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 0}}});
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        format!("data: {content}\n\ndata: {finish}\n\ndata: {usage}\n\ndata: [DONE]\n\n"),
    )
}

fn start_llm() -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new()
        .route(
            "/v1/models",
            axum::routing::get(|| async { Json(json!({"data": [{"id": "gpt-4o-mini"}]})) }),
        )
        .route("/v1/chat/completions", post(chat))
        .with_state(calls.clone());
    (blocking::serve(app), calls)
}

fn write_files(dir: &Path) -> (PathBuf, PathBuf) {
    let config = dir.join("inflight.toml");
    std::fs::write(
        &config,
        r#"
[[prices]]
model = "gpt-4o-mini"
prompt_per_million = 0.15
completion_per_million = 0.60
cached_per_million = 0.075
currency = "USD"

[[prices]]
model = "gpt-4o"
prompt_per_million = 2.5
completion_per_million = 10.0
"#,
    )
    .unwrap();
    let meetings = dir.join("meetings");
    std::fs::create_dir_all(&meetings).unwrap();
    let lines: Vec<String> = (1..=LINES)
        .map(|seq| {
            json!({"type": "transcript", "session_id": "m1", "seq": seq, "speaker": "ana",
                   "text": format!("line {seq}: ana ships the release.")})
            .to_string()
        })
        .collect();
    std::fs::write(meetings.join("m1.jsonl"), lines.join("\n") + "\n").unwrap();
    (config, meetings)
}

fn get(url: &str) -> (u16, String) {
    blocking::get(url).unwrap_or_else(|| panic!("{url} cannot be reached"))
}

fn json(url: &str) -> Value {
    blocking::get_json(url).unwrap_or(Value::Null)
}

/// The value of the one series that starts with `series` in `metrics`.
fn series(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("{series} missing in\n{metrics}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn spend_is_priced_by_the_table_and_agrees_in_the_api_metrics_status_and_database() {
    let dir = child::fresh_dir("spend", "agree");
    let (config, meetings) = write_files(&dir);
    let (llm, calls) = start_llm();
    let mut feed = Logged::spawn(
        Command::new(bin())
            .args(["feed", "--listen", "127.0.0.1:0", "--dir"])
            .arg(&meetings)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    );
    let feed_url = format!("ws://{}/", field(&feed.wait_for("listening"), "addr"));
    let db = dir.join("inflight.db");
    let mut serve = Logged::spawn(
        Command::new(bin())
            .args([
                "serve",
                "--api",
                "127.0.0.1:0",
                "--ops",
                "summary",
                "--config",
            ])
            .arg(&config)
            .args(["--feed", &feed_url, "--llm", "openai", "--llm-url", &llm])
            .args(["--model", "gpt-4o-mini", "--db"])
            .arg(&db)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    );
    let api = format!(
        "http://{}",
        field(&serve.wait_for("API listening"), "bound")
    );

    // Every line covered, nothing in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    let sessions = loop {
        let sessions = json(&format!("{api}/api/sessions"));
        let summary = &sessions["sessions"][0]["operations"]["summary"];
        if summary["covered_generation"] == LINES && summary["state"] == "idle" {
            break sessions;
        }
        assert!(Instant::now() < deadline, "not done in time: {sessions:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let summary = &sessions["sessions"][0]["operations"]["summary"];
    let runs = summary["ok"].as_u64().unwrap();
    assert!(runs >= 1);
    assert_eq!(summary["failed"], 0);
    assert_eq!(calls.load(Ordering::SeqCst), runs, "one call a run");
    let expected = (runs * PER_CALL_NANOS) as f64 / 1e9;

    // The API: the operation, the session, the feed.
    assert_eq!(sessions["currency"], "USD");
    assert_eq!(summary["prompt_tokens"], 1000 * runs);
    assert_eq!(summary["cached_tokens"], 400 * runs);
    assert_eq!(summary["completion_tokens"], 200 * runs);
    assert!(
        close(summary["cost"].as_f64().unwrap(), expected),
        "{summary}"
    );
    let session_cost = sessions["sessions"][0]["cost"].as_f64().unwrap();
    assert!(
        close(session_cost, expected),
        "{session_cost} against {expected}"
    );
    let feeds = json(&format!("{api}/api/feeds"));
    assert!(close(
        feeds["feeds"][0]["spend"]["cost"].as_f64().unwrap(),
        expected
    ));
    assert!(close(
        feeds["feeds"][0]["spend_by_op"]["summary"]["cost"]
            .as_f64()
            .unwrap(),
        expected
    ));
    assert_eq!(feeds["feeds"][0]["spend"]["cached_tokens"], 400 * runs);

    // /metrics: per operation and feed; nothing outside a feed.
    let metrics = get(&format!("{api}/metrics")).1;
    let fed = series(
        &metrics,
        r#"inflight_llm_cost_total{op="summary",feed="0"}"#,
    );
    assert!(close(fed, expected), "{fed} against {expected}");
    assert_eq!(
        series(
            &metrics,
            r#"inflight_llm_cost_total{op="summary",feed="none"}"#
        ),
        0.0
    );
    assert_eq!(
        series(
            &metrics,
            r#"inflight_llm_tokens_total{op="summary",kind="cached"}"#
        ),
        (400 * runs) as f64
    );
    assert!(metrics.contains("in USD"), "the help names the currency");

    // `inflight status`: a cost column and the total.
    let status = child::output(Command::new(bin()).args(["status", "--api", &api]));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("COST USD"), "{text}");
    let shown = inflight::spend::Cost(runs * PER_CALL_NANOS).shown();
    assert!(
        text.contains(&format!("spent by the sessions held: {shown} USD")),
        "{text}"
    );

    // The database, through the API: the past sessions' spend (once the
    // writer has caught up with the last run).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let history = json(&format!("{api}/api/history"));
        let past = history["sessions"][0]["cost"].as_f64().unwrap_or(0.0);
        if close(past, expected) {
            break;
        }
        assert!(Instant::now() < deadline, "{history} against {expected}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The database: every run's cost, to the billionth.
    serve.signal(libc::SIGTERM);
    serve.wait_for(" stopped ");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (cost, cached, n): (i64, i64, i64) = conn
        .query_row(
            "SELECT sum(cost_nanos), sum(cached_tokens), count(*) FROM runs WHERE op = 'summary'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!(n as u64, runs);
    assert_eq!(cost as u64, runs * PER_CALL_NANOS);
    assert_eq!(cached as u64, 400 * runs);
    feed.kill();
}
