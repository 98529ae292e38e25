//! The HTTP and WebSocket API with real clients over loopback.

use crate::common;

use crate::common::feed;

use crate::common::api_server;

use std::sync::Arc;
use std::time::Duration;

use api_server::{get_text, http, server};
use common::{final_line, sid};
use futures_util::StreamExt;
use inflight::api::{self, ApiConfig};
use inflight::engine::{Engine, EngineConfig};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::Operation;
use inflight::state::Policy;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

fn float(x: f64) -> String {
    serde_json::to_string(&x).unwrap()
}

#[tokio::test]
async fn the_status_json_is_the_original_exactly() {
    let s = server(Policy::Coalesce, None).await;
    let (code, body) = get_text(&format!("{}/api/llm/processing-status/session-123", s.base)).await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        r#"{"success":true,"session_id":"session-123","summary_processing":false,"mind_map_processing":false,"any_processing":false,"summary_start_time":null,"mind_map_start_time":null}"#
    );

    common::open_session(&s.engine, "session-123");
    let response = http()
        .post(format!(
            "{}/api/sessions/session-123/operations/mind_map",
            s.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let started: Value = response.json().await.unwrap();
    assert_eq!(started["outcome"], "started");

    let (_, body) = get_text(&format!("{}/api/llm/processing-status/session-123", s.base)).await;
    let start = s
        .engine
        .status(&sid("session-123"))
        .mind_map_start_time
        .expect("running");
    assert_eq!(
        body,
        format!(
            r#"{{"success":true,"session_id":"session-123","summary_processing":false,"mind_map_processing":true,"any_processing":true,"summary_start_time":null,"mind_map_start_time":{}}}"#,
            float(start)
        )
    );
}

#[tokio::test]
async fn a_trigger_while_running_is_pending_under_coalesce_and_409_under_skip() {
    for (policy, code, outcome) in [
        (Policy::Coalesce, 202, "pending"),
        (Policy::Skip, 409, "skipped"),
    ] {
        let s = server(policy, None).await;
        common::open_session(&s.engine, "demo");
        let url = format!("{}/api/sessions/demo/operations/summary", s.base);
        let first = http().post(&url).send().await.unwrap();
        assert_eq!(first.status().as_u16(), 202);
        let first: Value = first.json().await.unwrap();
        let second = http().post(&url).send().await.unwrap();
        assert_eq!(second.status().as_u16(), code, "{policy:?}");
        let second: Value = second.json().await.unwrap();
        assert_eq!(second["outcome"], outcome);
        assert_eq!(second["running_run_id"], first["run_id"]);
        assert!(second["running_since"].as_f64().is_some());
    }
}

#[tokio::test]
async fn cancel_frees_the_slot() {
    let s = server(Policy::Coalesce, None).await;
    common::open_session(&s.engine, "demo");
    let url = format!("{}/api/sessions/demo/operations/summary", s.base);
    http().post(&url).send().await.unwrap();
    assert!(s.engine.status(&sid("demo")).summary_processing);
    let cancelled = http().delete(&url).send().await.unwrap();
    assert_eq!(cancelled.status().as_u16(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["outcome"], "cancelled");
    assert!(!s.engine.status(&sid("demo")).any_processing);
    assert_eq!(
        http().delete(&url).send().await.unwrap().status().as_u16(),
        404
    );
    // And the slot takes a new run.
    let again: Value = http()
        .post(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["outcome"], "started");
}

#[tokio::test]
async fn triggering_a_session_that_does_not_exist_is_404_and_calls_no_llm() {
    let s = server(Policy::Coalesce, None).await;
    let url = format!("{}/api/sessions/evil-session/operations/summary", s.base);
    let response = http().post(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "no session evil-session");
    assert!(
        !s.engine.status(&sid("evil-session")).any_processing,
        "no run started"
    );
    assert!(
        s.engine.snapshot().sessions.is_empty(),
        "the trigger made no session"
    );
    assert_eq!(
        get_text(&format!("{}/api/sessions/evil-session", s.base))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn bad_input_gets_clear_400s() {
    let s = server(Policy::Coalesce, None).await;
    let (code, body) = get_text(&format!("{}/api/llm/processing-status/bad%20id", s.base)).await;
    assert_eq!(code, 400);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["success"], false);
    assert!(body["error"].as_str().unwrap().contains("only A-Z a-z 0-9"));
    let response = http()
        .post(format!("{}/api/sessions/ok/operations/translate", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404, "no such operation");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown operation \"translate\"; known: summary, mind_map"),
        "{body}"
    );
    let big = vec![b'x'; 64 * 1024];
    let response = http()
        .post(format!("{}/api/sessions/ok/operations/summary", s.base))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        413,
        "request bodies are bounded"
    );
    assert_eq!(
        get_text(&format!("{}/api/sessions/never-seen", s.base))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn sessions_list_and_detail_carry_statistics_and_results() {
    let config = EngineConfig::default();
    let engine = Engine::new(config, Arc::new(BuiltinBackend::new(LatencyRange::ZERO)));
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let addr = api::serve(
        engine.clone(),
        ApiConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
        shutdown,
    )
    .await
    .unwrap();
    let mut events = engine.subscribe();
    engine.ingest(
        final_line("standup", 1, "The release moves to Tuesday."),
        None,
    );
    common::wait_until(&mut events, Duration::from_secs(10), "both results", || {
        inflight::ops::BUILT_IN
            .iter()
            .all(|op| engine.result(&sid("standup"), *op).is_some())
            && engine.is_idle()
    })
    .await;
    let list: Value = http()
        .get(format!("http://{addr}/api/sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["backend"]["kind"], "builtin");
    assert_eq!(list["backend"]["simulated"], true);
    let first = &list["sessions"][0];
    assert_eq!(first["session_id"], "standup");
    assert_eq!(first["transcripts"], 1);
    assert_eq!(first["operations"]["summary"]["state"], "idle");
    assert_eq!(first["operations"]["summary"]["ok"], 1);
    assert_eq!(first["operations"]["mind_map"]["covered_generation"], 1);
    assert_eq!(list["backend"]["structured_output"], Value::Null);
    assert_eq!(first["lost_transcripts"], 0);
    assert_eq!(first["operations"]["summary"]["call_seconds"], Value::Null);
    // Tokens: the builtin backend estimates them; the API, the engine and
    // /metrics all say the same.
    let usage = engine.snapshot().sessions[0].ops[Operation::SUMMARY]
        .counts
        .usage();
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert_eq!(
        first["operations"]["summary"]["prompt_tokens"],
        usage.prompt_tokens
    );
    assert_eq!(
        first["operations"]["summary"]["completion_tokens"],
        usage.completion_tokens
    );
    let metrics = get_text(&format!("http://{addr}/metrics")).await.1;
    let line = |series: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("{series} missing in\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(
        line(r#"inflight_llm_tokens_total{op="summary",kind="prompt"}"#),
        usage.prompt_tokens
    );
    assert_eq!(
        line(r#"inflight_session_llm_tokens{session_id="standup",op="summary",kind="completion"}"#),
        usage.completion_tokens
    );
    let detail: Value = http()
        .get(format!("http://{addr}/api/sessions/standup"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        detail["summary"]["value"]
            .as_str()
            .unwrap()
            .contains("Tuesday")
    );
    assert!(detail["mind_map"]["value"]["root"]["label"].is_string());
    assert_eq!(
        detail["recent_transcripts"][0]["text"],
        "The release moves to Tuesday."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_delivers_the_envelope_for_the_chosen_session() {
    let s = server(Policy::Coalesce, None).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?session=wanted", s.addr))
            .await
            .unwrap();
    // Events of another session are filtered out.
    common::open_session(&s.engine, "other");
    common::open_session(&s.engine, "wanted");
    s.engine.request(&sid("other"), Operation::SUMMARY);
    s.engine.request(&sid("wanted"), Operation::SUMMARY);
    let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Text(text) = message else {
        panic!("expected text, got {message:?}")
    };
    let v: Value = serde_json::from_str(text.as_str()).unwrap();
    assert_eq!(v["type"], "processing_status");
    assert_eq!(v["sessionId"], "wanted");
    assert_eq!(v["data"]["session_id"], "wanted");
    assert_eq!(v["data"]["summary_processing"], true);
    let stamp = v["timestamp"].as_str().unwrap();
    assert!(
        stamp.ends_with('Z') && stamp.len() == 20,
        "RFC 3339 UTC seconds: {stamp}"
    );
    humantime::parse_rfc3339(stamp).expect("parses as RFC 3339");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_closed_with_a_reason() {
    let s = server(Policy::Skip, None).await;
    let (mut laggard, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.addr))
        .await
        .unwrap();
    common::open_session(&s.engine, "busy");
    s.engine.request(&sid("busy"), Operation::SUMMARY);
    // Every refused request is an event (about 260 bytes on the wire); the
    // laggard reads nothing meanwhile, so far more than the socket buffers
    // hold. Had the engine waited for it, this loop would never end.
    const REFUSED: u64 = 200_000;
    for i in 0..REFUSED {
        s.engine.request(&sid("busy"), Operation::SUMMARY);
        if i % 5000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let close = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = laggard.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame;
            }
        }
        None
    })
    .await
    .expect("the server closes the lagging subscriber")
    .expect("with a close frame");
    assert_eq!(u16::from(close.code), 1013);
    assert!(close.reason.contains("fell behind"), "{}", close.reason);
    // The engine did not wait for the slow subscriber: every request was
    // answered and counted while it read nothing, and the run is untouched.
    let view = s.engine.session_detail(&sid("busy"), 0).unwrap().row;
    assert_eq!(view.ops[Operation::SUMMARY].counts.skipped, REFUSED);
    assert_eq!(view.ops[Operation::SUMMARY].counts.runs, 1);
    assert!(s.engine.status(&sid("busy")).summary_processing);
    // The server goes on serving: a new subscriber gets its events.
    let (mut reader, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?session=calm", s.addr))
            .await
            .unwrap();
    common::open_session(&s.engine, "calm");
    s.engine.request(&sid("calm"), Operation::SUMMARY);
    let message = tokio::time::timeout(Duration::from_secs(10), reader.next())
        .await
        .expect("the reading subscriber is served")
        .expect("still open")
        .unwrap();
    let v: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(v["sessionId"], "calm");
}

#[tokio::test]
async fn the_token_is_required_and_checked() {
    let s = server(Policy::Coalesce, Some("s3cret")).await;
    common::open_session(&s.engine, "demo");
    let url = format!("{}/api/sessions", s.base);
    assert_eq!(
        http().get(&url).send().await.unwrap().status().as_u16(),
        401
    );
    assert_eq!(
        http()
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        http()
            .get(&url)
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        http()
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        get_text(&format!("{}/healthz", s.base)).await,
        (200, "ok".to_string())
    );
    for method in [reqwest::Method::POST, reqwest::Method::DELETE] {
        let url = format!("{}/api/sessions/demo/operations/summary", s.base);
        let response = http().request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{method} without a token");
    }
    assert!(
        !s.engine.status(&sid("demo")).any_processing,
        "a refused trigger started nothing"
    );

    // /ws: refused with 401 without the token, upgraded with it.
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", s.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401)
        }
        other => panic!("/ws without a token must answer 401: {other:?}"),
    }
    let mut request = format!("ws://{}/ws?session=demo", s.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("/ws with the token");
    assert_eq!(response.status().as_u16(), 101);
    s.engine.request(&sid("demo"), Operation::SUMMARY);
    let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "processing_status");
    assert_eq!(v["sessionId"], "demo");
}

/// `name{labels} value` lines of Prometheus text, checked for shape.
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split_whitespace().nth(1).unwrap_or("");
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind),
                    "type line: {line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                assert!(labels.ends_with('}'), "labels: {line}");
                (name.to_string(), labels.trim_end_matches('}').to_string())
            }
            None => (series.to_string(), String::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "name: {line}"
        );
        samples.push((name, labels, value));
    }
    samples
}

#[tokio::test]
async fn metrics_parse_and_equal_the_engines_counters() {
    let s = server(Policy::Coalesce, None).await;
    for session in ["a", "b"] {
        common::open_session(&s.engine, session);
        s.engine.request(&sid(session), Operation::SUMMARY);
        s.engine.request(&sid(session), Operation::SUMMARY);
        s.engine.request(&sid(session), Operation::MIND_MAP);
    }
    s.engine.cancel(&sid("a"), Operation::MIND_MAP);
    let (code, text) = get_text(&format!("{}/metrics", s.base)).await;
    assert_eq!(code, 200);
    let samples = parse_prometheus(&text);
    let value = |name: &str, labels: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("{name}{{{labels}}} missing in\n{text}"))
    };
    let totals = s.engine.snapshot();
    let by_op = |op: Operation, f: &dyn Fn(&inflight::engine::OpRow) -> u64| -> f64 {
        totals.sessions.iter().map(|r| f(&r.ops[op])).sum::<u64>() as f64
    };
    assert_eq!(
        value("inflight_runs_total", r#"op="summary""#),
        by_op(Operation::SUMMARY, &|o| o.counts.runs)
    );
    assert_eq!(
        value("inflight_runs_total", r#"op="mind_map""#),
        by_op(Operation::MIND_MAP, &|o| o.counts.runs)
    );
    assert_eq!(value("inflight_skipped_total", r#"op="summary""#), 2.0);
    assert_eq!(
        value(
            "inflight_runs_finished_total",
            r#"op="mind_map",outcome="cancelled""#
        ),
        1.0
    );
    assert_eq!(
        value("inflight_in_flight", r#"op="summary",phase="running""#)
            + value("inflight_in_flight", r#"op="summary",phase="queued""#),
        2.0
    );
    assert_eq!(value("inflight_llm_permits", ""), 4.0);
}

/// Every `_total` series of a scrape, by name and labels.
fn counters(text: &str) -> std::collections::BTreeMap<String, f64> {
    parse_prometheus(text)
        .into_iter()
        .filter(|(name, _, _)| name.ends_with("_total"))
        .map(|(name, labels, value)| (format!("{name}{{{labels}}}"), value))
        .collect()
}

#[tokio::test]
async fn counters_never_go_down_when_sessions_are_forgotten() {
    let s = server(Policy::Coalesce, None).await;
    for session in ["a", "b"] {
        s.engine.ingest(final_line(session, 1, "hello"), None);
        s.engine.cancel(&sid(session), Operation::SUMMARY);
        s.engine.cancel(&sid(session), Operation::MIND_MAP);
        s.engine.end_session(&sid(session), None);
        s.engine.cancel(&sid(session), Operation::SUMMARY);
        s.engine.cancel(&sid(session), Operation::MIND_MAP);
    }
    let before = counters(&get_text(&format!("{}/metrics", s.base)).await.1);
    assert_eq!(before[r#"inflight_runs_total{op="summary"}"#], 4.0);
    assert_eq!(
        before[r#"inflight_runs_finished_total{op="mind_map",outcome="cancelled"}"#],
        4.0
    );
    assert_eq!(before["inflight_transcripts_total{}"], 2.0);
    assert_eq!(s.engine.forget_ended(Duration::ZERO), 2);
    assert!(s.engine.snapshot().sessions.is_empty());
    let after = counters(&get_text(&format!("{}/metrics", s.base)).await.1);
    assert_eq!(
        before, after,
        "forgetting sessions changes no counter: Prometheus would read a fall as a reset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_report_their_state_and_bad_frames_by_kind() {
    let s = server(Policy::Coalesce, None).await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let mut events = s.engine.subscribe();
    // Feed 0: nothing listens on port 9 of loopback. Its first retry is
    // far off, so it stays "backing off" while the test reads it.
    inflight::feed::client::spawn(
        s.engine.clone(),
        "ws://operator:hunter2@127.0.0.1:9/live?token=abc123".into(),
        inflight::feed::client::FeedOptions {
            backoff_min: Duration::from_secs(60),
            backoff_max: Duration::from_secs(120),
            ..Default::default()
        },
        shutdown.clone(),
    );
    // Feed 1: a few bad frames of each kind between good lines, a repeat,
    // and last a new line, so when that line is in, so is everything else.
    let line = |seq: u64| {
        Message::text(format!(
            r#"{{"type":"transcript","session_id":"kinds","seq":{seq},"text":"line {seq}"}}"#
        ))
    };
    let frames = vec![
        line(1),
        Message::text("{"),
        Message::text("not json"),
        Message::text(r#"{"type":"weather"}"#),
        Message::text(r#"{"type":"weather"}"#),
        Message::text(r#"{"type":"horoscope"}"#),
        Message::text(r#"{"type":"transcript","session_id":"bad id!","text":"x"}"#),
        Message::binary(vec![1u8, 2, 3]),
        line(1),
        // A hostile seq would make every later line look like a replay.
        Message::text(
            r#"{"type":"transcript","session_id":"kinds","seq":18446744073709551615,"text":"mute"}"#,
        ),
        line(2),
    ];
    let (addr, _up) = feed::one_client_feed(frames).await;
    inflight::feed::client::spawn(
        s.engine.clone(),
        format!("ws://{addr}/"),
        Default::default(),
        shutdown,
    );
    common::wait_until(
        &mut events,
        Duration::from_secs(10),
        "the unreachable feed's failure and the last good line",
        || {
            let feeds = s.engine.feeds().views();
            feeds[0].state != inflight::engine::FeedState::Connecting
                && s.engine.generation(&sid("kinds")) == 2
        },
    )
    .await;
    let feeds: Value = http()
        .get(format!("{}/api/feeds", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let unreachable = &feeds["feeds"][0];
    // Credentials in a feed URL are never shown.
    assert_eq!(unreachable["url"], "ws://***@127.0.0.1:9/live?token=***");
    assert!(!feeds.to_string().contains("hunter2") && !feeds.to_string().contains("abc123"));
    assert_eq!(unreachable["state"], "backing off", "{unreachable}");
    assert_eq!(unreachable["connects"], 0);
    assert_eq!(unreachable["messages"], 0);

    let scripted = &feeds["feeds"][1];
    assert_eq!(scripted["feed"], 1);
    assert_eq!(scripted["state"], "connected", "{scripted}");
    assert_eq!(scripted["connects"], 1);
    assert_eq!(scripted["transcripts"], 2);
    assert_eq!(scripted["duplicates"], 1);
    assert_eq!(
        scripted["bad_frames"],
        serde_json::json!({
            "invalid_json": 2,
            "unknown_type": 3,
            "bad_session_id": 1,
            "oversized": 0,
            "binary": 1,
            "invalid_utf8": 0,
            "text_cut": 0,
            "bad_seq": 1,
        })
    );
    assert!(
        scripted["last_message_age_seconds"].as_f64().is_some(),
        "{scripted}"
    );
    assert!(unreachable["last_message_age_seconds"].is_null());
}

/// `inflight status`, the real binary, against a running API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_command_prints_sessions_and_one_status() {
    let s = server(Policy::Coalesce, Some("tok")).await;
    common::open_session(&s.engine, "standup");
    s.engine.request(&sid("standup"), Operation::SUMMARY);
    // The API keeps serving on the runtime's workers while this thread waits.
    let run = |args: &[&str], token: &str| {
        let output = crate::common::child::output(
            std::process::Command::new(env!("CARGO_BIN_EXE_inflight"))
                .arg("status")
                .args(args)
                .args(["--api", &s.base, "--api-token", token]),
        );
        let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
        (
            output.status.success(),
            text(&output.stdout),
            text(&output.stderr),
        )
    };
    let (ok, table, error) = run(&[], "tok");
    assert!(ok, "{error}");
    assert!(table.starts_with("backend: builtin "), "{table}");
    assert!(
        table.contains("(simulated, no model)"),
        "the builtin backend says what it is: {table}"
    );
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("SESSION")),
        "{table}"
    );
    assert!(
        table.contains("standup") && table.contains("running"),
        "{table}"
    );

    let (ok, line, _) = run(&["standup"], "tok");
    assert!(ok);
    assert!(
        line.starts_with("standup: summary processing for "),
        "{line}"
    );
    assert!(line.contains("mind map idle"), "{line}");

    let (ok, json, _) = run(&["standup", "--json"], "tok");
    assert!(ok);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["summary_processing"], true);

    let (ok, _, error) = run(&[], "wrong");
    assert!(!ok, "a wrong token fails");
    assert!(
        error.contains("401") && error.contains("bearer token"),
        "{error}"
    );
}
