//! Operations defined in the config file, through the real binary: a
//! config with `action_items` (json, with a schema), `decisions` (text,
//! only at a session's end) and the summary, without the mind map, run by
//! `serve` against a scripted OpenAI-compatible server.

use crate::common::child::field;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};

use crate::common::child::{self, Logged};

const SESSIONS: usize = 2;
const LINES: u64 = 12;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_inflight")
}

fn fresh_dir(name: &str) -> PathBuf {
    child::fresh_dir("ops", name)
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "owner": {"type": "string", "description": "who does it"},
                        "task": {"type": "string", "minLength": 1}
                    },
                    "required": ["owner", "task"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["items"]
    })
}

/// The config file and its schema, in `dir`.
fn write_config(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("actions.json"), schema().to_string()).unwrap();
    let config = dir.join("inflight.toml");
    std::fs::write(
        &config,
        r#"
[runs]
ops = ["summary", "action_items", "decisions", "standup_notes"]

[[operations]]
name = "action_items"
label = "Actions"
key = "3"
output = "json"
schema = "actions.json"
system = "You extract the action items of a meeting as JSON."

[[operations]]
name = "decisions"
key = "4"
when = "end"
system = "You list the decisions a meeting took."

[[operations]]
name = "standup_notes"
when = "end"
kinds = ["standup"]
system = "You write stand-up notes."
"#,
    )
    .unwrap();
    config
}

/// Meetings of `LINES` lines, 0.15 s apart, each ending with `session_end`.
fn write_meetings(dir: &Path) -> PathBuf {
    let meetings = dir.join("meetings");
    std::fs::create_dir_all(&meetings).unwrap();
    for s in 1..=SESSIONS {
        let id = format!("m{s}");
        let lines: Vec<String> = (1..=LINES)
            .map(|seq| {
                let mut line = json!({"type": "transcript", "session_id": id, "seq": seq, "speaker": "ana",
                    "start": seq as f64 * 0.15, "text": format!("[{id}] line {seq}: ana ships the release.")});
                // The first meeting is a stand-up, as its feed says.
                if s == 1 {
                    line["kind"] = json!("standup");
                }
                line.to_string()
            })
            .collect();
        std::fs::write(
            meetings.join(format!("{id}.jsonl")),
            lines.join("\n") + "\n",
        )
        .unwrap();
    }
    meetings
}

/// What the scripted server saw, per (session, operation).
#[derive(Default)]
struct Seen {
    open: HashMap<(String, String), usize>,
    most_at_once: HashMap<(String, String), usize>,
    calls: HashMap<(String, String), usize>,
}

#[derive(Clone)]
struct Llm(Arc<Mutex<Seen>>);

/// The operation a request is for, from its system prompt.
fn op_of(body: &Value) -> &'static str {
    let system = body["messages"][0]["content"].as_str().unwrap_or_default();
    if system.starts_with("You extract the action items") {
        "action_items"
    } else if system.starts_with("You list the decisions") {
        "decisions"
    } else if system.starts_with("You write stand-up notes") {
        "standup_notes"
    } else if system.starts_with("You summarise") {
        "summary"
    } else {
        "other"
    }
}

fn session_of(body: &Value) -> String {
    let text = body.to_string();
    text.find("[m")
        .and_then(|at| {
            let rest = &text[at + 1..];
            rest.find(']').map(|end| rest[..end].to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

async fn chat(State(llm): State<Llm>, Json(body): Json<Value>) -> impl IntoResponse {
    let key = (session_of(&body), op_of(&body).to_string());
    {
        let mut seen = llm.0.lock().unwrap();
        let open = seen.open.entry(key.clone()).or_default();
        *open += 1;
        let now = *open;
        let most = seen.most_at_once.entry(key.clone()).or_default();
        *most = (*most).max(now);
        *seen.calls.entry(key.clone()).or_default() += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let content = match key.1.as_str() {
        "action_items" => {
            json!({"items": [{"owner": "ana", "task": format!("ship the release ({})", key.0)}]})
                .to_string()
        }
        "decisions" => format!("[{}] We ship on Friday.", key.0),
        _ => format!("[{}] Ana ships the release.", key.0),
    };
    *llm.0.lock().unwrap().open.get_mut(&key).unwrap() -= 1;
    let chunk = json!({"model": "m", "choices": [{"index": 0, "delta": {"content": content}}]});
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        format!("data: {chunk}\n\ndata: [DONE]\n\n"),
    )
}

fn start_llm() -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = axum::Router::new()
        .route(
            "/v1/models",
            axum::routing::get(|| async { Json(json!({"data": [{"id": "m"}]})) }),
        )
        .route("/v1/chat/completions", post(chat))
        .with_state(Llm(seen.clone()));
    (crate::common::blocking::serve(app), seen)
}

fn logged(command: &mut Command) -> Logged {
    Logged::spawn(command.env("RUST_LOG", "info").env("NO_COLOR", "1"))
}

fn replay_feed(dir: &Path) -> (Logged, String) {
    let mut feed = logged(
        Command::new(bin())
            .args(["feed", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir),
    );
    let line = feed.wait_for("listening");
    (feed, format!("ws://{}/", field(&line, "addr")))
}

fn serve(config: &Path, feed: &str, llm: &str, db: &Path) -> (Logged, String) {
    let mut serve = logged(
        Command::new(bin())
            .args(["serve", "--api", "127.0.0.1:0", "--config"])
            .arg(config)
            .args([
                "--feed",
                feed,
                "--llm",
                "openai",
                "--llm-url",
                llm,
                "--model",
                "m",
            ])
            .arg("--db")
            .arg(db),
    );
    let line = serve.wait_for("API listening");
    let api = format!("http://{}", field(&line, "bound"));
    (serve, api)
}

fn request(method: reqwest::Method, url: &str) -> (u16, Value) {
    inflight::net::install_crypto();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .request(method, url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

fn get(url: &str) -> Value {
    request(reqwest::Method::GET, url).1
}

/// Every session ended, with summary and action items covering its last
/// line and a decisions result; the sessions as the API shows them.
fn wait_all_done(api: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sessions = get(&format!("{api}/api/sessions"));
        let done = sessions["sessions"].as_array().is_some_and(|all| {
            all.len() == SESSIONS
                && all.iter().all(|s| {
                    let ops = &s["operations"];
                    s["ended"] == true
                        && ["summary", "action_items", "decisions"].iter().all(|op| {
                            ops[op]["covered_generation"] == LINES && ops[op]["state"] == "idle"
                        })
                })
        });
        if done {
            return sessions;
        }
        assert!(Instant::now() < deadline, "not done in time: {sessions:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn operations_from_the_config_file_run_show_and_come_back_after_a_restart() {
    let dir = fresh_dir("run");
    let config = write_config(&dir);
    let meetings = write_meetings(&dir);
    let (llm, seen) = start_llm();
    let (_feed, feed) = replay_feed(&meetings);
    let db = dir.join("inflight.db");
    let (serve_process, api) = serve(&config, &feed, &llm, &db);

    let sessions = wait_all_done(&api);
    // Keyed by name, in the file's order; the mind map, not chosen, is not there.
    let names: Vec<&String> = sessions["sessions"][0]["operations"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let raw = metrics_text_of(&format!("{api}/api/sessions"));
    let at = |name: &str| {
        raw.find(&format!("\"{name}\":{{\"state\""))
            .unwrap_or(usize::MAX)
    };
    assert!(
        at("summary") < at("action_items")
            && at("action_items") < at("decisions")
            && at("decisions") < usize::MAX,
        "in the file's order: {raw}"
    );
    assert!(!raw.contains("\"mind_map\":{\"state\""), "{raw}");

    {
        let seen = seen.lock().unwrap();
        for (key, most) in &seen.most_at_once {
            assert_eq!(*most, 1, "two calls of {key:?} at once");
        }
        for s in 1..=SESSIONS {
            let calls = |op: &str| seen.calls.get(&(format!("m{s}"), op.to_string())).copied();
            assert_eq!(
                calls("decisions"),
                Some(1),
                "decisions runs once, at the end"
            );
            assert!(calls("action_items").is_some_and(|n| n >= 1));
            assert_eq!(calls("other"), None, "only the chosen operations run");
            let standup = if s == 1 { Some(1) } else { None };
            assert_eq!(
                calls("standup_notes"),
                standup,
                "only for the stand-up, at its end"
            );
        }
    }

    let validator = jsonschema::validator_for(&schema()).unwrap();
    for s in 1..=SESSIONS {
        let detail = get(&format!("{api}/api/sessions/m{s}"));
        let actions = &detail["action_items"]["value"];
        assert!(validator.is_valid(actions), "{actions}");
        assert_eq!(actions["items"][0]["owner"], "ana");
        assert_eq!(
            detail["decisions"]["value"],
            format!("[m{s}] We ship on Friday.")
        );
        assert_eq!(detail["summary"]["covered_generation"], LINES);
        // The original status JSON, with the other operations after it.
        let status = get(&format!("{api}/api/llm/processing-status/m{s}"));
        let keys: Vec<&String> = status.as_object().unwrap().keys().collect();
        for key in [
            "success",
            "session_id",
            "summary_processing",
            "mind_map_processing",
            "any_processing",
            "summary_start_time",
            "mind_map_start_time",
            "action_items_processing",
            "action_items_start_time",
            "decisions_processing",
            "decisions_start_time",
        ] {
            assert!(keys.contains(&&key.to_string()), "{key} in {status}");
        }
        assert_eq!(status["action_items_processing"], false);
    }

    // A trigger names a defined operation; any other is refused with the known ones.
    let (code, body) = request(
        reqwest::Method::POST,
        &format!("{api}/api/sessions/m1/operations/action_items"),
    );
    assert!(code == 202 || code == 409, "{code} {body}");
    let (code, body) = request(
        reqwest::Method::POST,
        &format!("{api}/api/sessions/m1/operations/mind_map"),
    );
    assert_eq!(code, 404, "{body}");
    assert!(
        body.to_string()
            .contains("summary, action_items, decisions"),
        "{body}"
    );

    // Metrics are labelled by name.
    let text = metrics_text(&api);
    assert!(
        text.contains("inflight_runs_total{op=\"action_items\"}"),
        "{text}"
    );

    // After a restart, the results are back before anything runs again.
    wait_idle(&api);
    serve_process.stop();
    // The feed plays its meetings again: every line a duplicate by its seq.
    let (serve_process, api) = serve(&config, &feed, &llm, &db);
    for s in 1..=SESSIONS {
        let detail = get(&format!("{api}/api/sessions/m{s}"));
        assert!(
            validator.is_valid(&detail["action_items"]["value"]),
            "{detail:#}"
        );
        assert_eq!(
            detail["decisions"]["value"],
            format!("[m{s}] We ship on Friday.")
        );
    }

    // An operation taken out of the file: the restart goes through, the
    // others' results are back, and its rows stay in the database.
    wait_idle(&api);
    serve_process.stop();
    let fewer = dir.join("fewer.toml");
    std::fs::write(
        &fewer,
        "[runs]\nops = [\"summary\", \"action_items\"]\n\n[[operations]]\nname = \"action_items\"\nschema = \"actions.json\"\n",
    )
    .unwrap();
    let (_serve, api) = serve(&fewer, &feed, &llm, &db);
    let detail = get(&format!("{api}/api/sessions/m1"));
    assert!(
        validator.is_valid(&detail["action_items"]["value"]),
        "{detail:#}"
    );
    assert_eq!(detail["summary"]["covered_generation"], LINES);
    assert!(detail.get("decisions").is_none(), "{detail:#}");
    let kept: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM results WHERE op = 'decisions'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(kept, SESSIONS as i64, "its history stays on disk");
}

fn metrics_text(api: &str) -> String {
    metrics_text_of(&format!("{api}/metrics"))
}

/// The body of `url`, as text.
fn metrics_text_of(url: &str) -> String {
    inflight::net::install_crypto();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

/// Nothing in flight (the trigger above has ended).
fn wait_idle(api: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sessions = get(&format!("{api}/api/sessions"));
        let idle = sessions["sessions"].as_array().is_some_and(|all| {
            all.iter().all(|s| {
                s["operations"]
                    .as_object()
                    .is_some_and(|ops| ops.values().all(|o| o["state"] == "idle"))
            })
        });
        if idle {
            return;
        }
        assert!(Instant::now() < deadline, "still busy: {sessions:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn config_check_names_a_bad_operation_with_its_line() {
    let dir = fresh_dir("check");
    let config = dir.join("bad.toml");
    std::fs::write(
        &config,
        "[[operations]]\nname = \"actions\"\noutput = \"json\"\nschema = \"missing.json\"\n",
    )
    .unwrap();
    let out = child::output(Command::new(bin()).args(["config", "check"]).arg(&config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4: operations.actions.schema"),
        "{err}"
    );
    let good = write_config(&dir);
    let out = child::output(Command::new(bin()).args(["config", "check"]).arg(&good));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("action_items (json, transcripts)") && text.contains("decisions (text, end)"),
        "{text}"
    );
}
