//! Several real `inflight serve` processes sharing one real Redis and one
//! mirrored replay feed, calling one scripted OpenAI-compatible server that
//! counts, per (session, operation), how many calls are open at once
//! across all of them: never two, every session fresh on every instance at
//! the end, a killed holder's work taken over, a paused holder's late work
//! refused by its fence, and a Redis restart survived.

use crate::common::child;
use crate::common::child::field;
use crate::common::child::inflight as bin;
use crate::common::redis_server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use child::Logged;
use redis_server::RedisServer;
use serde_json::{Value, json};

// --- the scripted LLM ------------------------------------------------------

struct Calls {
    open: HashMap<(String, String), usize>,
    /// The most calls open at once for any one (session, op).
    most_at_once: usize,
    per_key: HashMap<(String, String), usize>,
    /// Every call, in the order they came: when it opened and closed.
    timeline: Vec<Call>,
    started: Instant,
    /// Prompts whose "What was said since:" was followed by nothing: a
    /// call paid to write the same result again.
    with_nothing_new: usize,
    /// The tokens every call reported spending, and the most one did.
    tokens: u64,
    most_tokens: u64,
}

impl Default for Calls {
    fn default() -> Self {
        Self {
            open: HashMap::new(),
            most_at_once: 0,
            per_key: HashMap::new(),
            timeline: Vec::new(),
            started: Instant::now(),
            with_nothing_new: 0,
            tokens: 0,
            most_tokens: 0,
        }
    }
}

/// One call the scripted LLM took, in milliseconds since it started.
#[derive(Debug)]
struct Call {
    key: (String, String),
    opened_ms: u128,
    closed_ms: Option<u128>,
}

/// Never two calls of one (session, op) open at once; else the calls of
/// that (session, op), in order, to see which overlapped.
fn assert_never_two_at_once(calls: &Mutex<Calls>) {
    let calls = calls.lock().unwrap();
    if calls.most_at_once <= 1 {
        return;
    }
    let mut report = String::new();
    for call in &calls.timeline {
        let overlaps = calls.timeline.iter().any(|other| {
            !std::ptr::eq(other, call)
                && other.key == call.key
                && other.opened_ms < call.closed_ms.unwrap_or(u128::MAX)
                && call.opened_ms < other.closed_ms.unwrap_or(u128::MAX)
        });
        if overlaps {
            report.push_str(&format!("{call:?}\n"));
        }
    }
    panic!(
        "{} calls of one (session, op) at once; the overlapping calls:\n{report}",
        calls.most_at_once
    );
}

#[derive(Clone)]
struct Llm {
    calls: Arc<Mutex<Calls>>,
    call_time: Duration,
}

/// Leaves the open count when the call ends, also when the caller went
/// away mid-call (the server drops the handler), and notes when.
struct Open {
    calls: Arc<Mutex<Calls>>,
    key: (String, String),
    /// Its place in the timeline.
    at: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut calls = self.calls.lock().unwrap();
        if let Some(n) = calls.open.get_mut(&self.key) {
            *n -= 1;
        }
        let now = calls.started.elapsed().as_millis();
        calls.timeline[self.at].closed_ms = Some(now);
    }
}

/// The `[sN]` mark the test's meetings put in every line.
fn session_in(body: &Value) -> String {
    let text = body.to_string();
    text.find("[s")
        .and_then(|at| {
            let rest = &text[at + 1..];
            rest.find(']').map(|end| rest[..end].to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

async fn chat(State(llm): State<Llm>, Json(body): Json<Value>) -> impl IntoResponse {
    let session = session_in(&body);
    let op = if body.get("response_format").is_some() {
        "mind_map"
    } else {
        "summary"
    };
    let key = (session.clone(), op.to_string());
    // What it reports spending: a token for every four characters of the
    // messages, and twenty for the answer.
    let prompt_tokens = body["messages"].to_string().len() as u64 / 4;
    let tokens = prompt_tokens + 20;
    let _open = {
        let mut calls = llm.calls.lock().unwrap();
        let n = calls.open.entry(key.clone()).or_default();
        *n += 1;
        let now = *n;
        calls.most_at_once = calls.most_at_once.max(now);
        *calls.per_key.entry(key.clone()).or_default() += 1;
        let prompt = body.to_string();
        if prompt.contains("What was said since:\\n\\n\\n") {
            calls.with_nothing_new += 1;
        }
        calls.tokens += tokens;
        calls.most_tokens = calls.most_tokens.max(tokens);
        let opened_ms = calls.started.elapsed().as_millis();
        calls.timeline.push(Call {
            key: key.clone(),
            opened_ms,
            closed_ms: None,
        });
        Open {
            calls: llm.calls.clone(),
            key,
            at: calls.timeline.len() - 1,
        }
    };
    tokio::time::sleep(llm.call_time).await;
    let content = match op {
        "mind_map" => {
            json!({"root": {"label": format!("[{session}]"), "children": []}}).to_string()
        }
        _ => format!("Summary of [{session}]."),
    };
    let chunk = json!({"model": "m", "choices": [{"index": 0, "delta": {"content": content}}]});
    let usage = json!({"model": "m", "choices": [],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 20}});
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        format!("data: {chunk}\n\ndata: {usage}\n\ndata: [DONE]\n\n"),
    )
}

/// The scripted server on a thread of its own (the tests drive processes
/// from plain threads).
fn start_llm(call_time: Duration) -> (String, Arc<Mutex<Calls>>) {
    let calls = Arc::new(Mutex::new(Calls::default()));
    let llm = Llm {
        calls: calls.clone(),
        call_time,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new()
                .route(
                    "/v1/models",
                    get(|| async { Json(json!({"data": [{"id": "m"}]})) }),
                )
                .route("/v1/chat/completions", post(chat))
                .with_state(llm);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}"), calls)
}

/// A webhook receiver on a thread of its own that takes everything and
/// keeps what it got, in order: (session, op, revision, covered).
type Got = Arc<Mutex<Vec<(String, String, u64, u64)>>>;

fn start_hooks() -> (String, Got) {
    let got: Got = Arc::default();
    let kept = got.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/hook",
                post(move |Json(d): Json<Value>| {
                    let kept = kept.clone();
                    async move {
                        kept.lock().unwrap().push((
                            d["session_id"].as_str().unwrap_or("").to_string(),
                            d["operation"].as_str().unwrap_or("").to_string(),
                            d["revision"].as_u64().unwrap_or(0),
                            d["covered_generation"].as_u64().unwrap_or(0),
                        ));
                        "ok"
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}/hook"), got)
}

// --- the feed and the instances ----------------------------------------------

/// A folder of `sessions` meetings of `lines` lines each, a line every
/// quarter second, every line marked with its session (`[s1]`).
fn meetings(name: &str, sessions: usize, lines: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("inflight-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for s in 1..=sessions {
        let mut text = String::new();
        for i in 0..lines {
            let line = json!({
                "type": "transcript",
                "session_id": format!("s{s}"),
                "seq": i + 1,
                "speaker": "A",
                "start": i as f64 * 0.25,
                "text": format!("[s{s}] line {i} of the meeting."),
            });
            text.push_str(&format!("{line}\n"));
        }
        std::fs::write(dir.join(format!("s{s}.jsonl")), text).unwrap();
    }
    dir
}

/// `inflight feed` playing `dir` in real time to every client; its URL.
fn replay_feed(dir: &Path) -> (Logged, String) {
    let mut feed = Logged::spawn(
        bin()
            .args(["feed", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir),
    );
    let line = feed.wait_for("listening");
    let addr = field(&line, "addr");
    (feed, format!("ws://{addr}/"))
}

struct Instance {
    name: String,
    process: Logged,
    api: String,
}

fn instance(name: &str, feed: &str, redis: &str, llm: &str, extra: &[&str]) -> Instance {
    let mut process = Logged::spawn(
        bin()
            .args(["serve", "--api", "127.0.0.1:0"])
            .args(if extra.contains(&"--db") {
                &[][..]
            } else {
                &["--no-db"][..]
            })
            .args(["--feed", feed, "--redis", redis, "--instance", name])
            .args(["--llm", "openai", "--llm-url", llm, "--model", "m"])
            .args(extra),
    );
    let line = process.wait_for("API listening");
    let api = format!("http://{}", field(&line, "bound"));
    Instance {
        name: name.to_string(),
        process,
        api,
    }
}

fn get_json(url: &str) -> Option<Value> {
    crate::common::blocking::get_json(url)
}

fn metric(api: &str, name: &str) -> u64 {
    inflight::net::install_crypto();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = runtime.block_on(async {
        reqwest::get(format!("{api}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Every one of `sessions` sessions ended, with every operation idle and
/// covering all `lines` of its transcripts: fresh.
fn all_fresh(api: &str, sessions: usize, lines: u64, ops: &[&str]) -> bool {
    let Some(answer) = get_json(&format!("{api}/api/sessions")) else {
        return false;
    };
    let Some(rows) = answer["sessions"].as_array() else {
        return false;
    };
    rows.len() == sessions
        && rows.iter().all(|row| {
            row["ended"] == true
                && row["transcripts"] == lines
                && ops.iter().all(|op| {
                    let op = &row["operations"][op];
                    op["state"] == "idle" && op["covered_generation"] == lines
                })
        })
}

/// Waits (polling the API) until every instance shows everything fresh.
fn wait_all_fresh(instances: &[&Instance], sessions: usize, lines: u64, ops: &[&str]) {
    let until = Instant::now() + Duration::from_secs(90);
    for instance in instances {
        while !all_fresh(&instance.api, sessions, lines, ops) {
            assert!(
                Instant::now() < until,
                "{} never showed every session fresh: {}",
                instance.name,
                get_json(&format!("{}/api/sessions", instance.api)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Waits until Redis says some instance holds the lease of `key`; who.
fn holder_of(redis: &RedisServer, key: &str) -> String {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(holder) = redis.get(&format!("inflight:lease:{key}")) {
            return holder.rsplit_once('/').unwrap().0.to_string();
        }
        assert!(Instant::now() < until, "nobody ever held {key}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// --- the tests -----------------------------------------------------------------

#[test]
fn three_instances_on_one_mirrored_feed_never_run_an_operation_twice_at_once() {
    let redis = RedisServer::start();
    let (llm, calls) = start_llm(Duration::from_millis(300));
    let dir = meetings("mirrored", 4, 24);
    let (_feed, feed) = replay_feed(&dir);
    // Every instance has the same webhook: each result is delivered once,
    // by the instance that made it.
    let (hook, got) = start_hooks();
    std::fs::write(dir.join("secret"), "s\n").unwrap();
    let config = dir.join("hooks.toml");
    std::fs::write(
        &config,
        format!("[[webhooks]]\nurl = \"{hook}\"\nsecret_file = \"secret\"\n"),
    )
    .unwrap();
    // Leases that a loaded two-core machine renews in time (every 2 s).
    let extra = [
        "--llm-concurrency",
        "2",
        "--lease-ttl",
        "6s",
        "--config",
        config.to_str().unwrap(),
    ];
    let a = instance("a", &feed, &redis.url(), &llm, &extra);
    let b = instance("b", &feed, &redis.url(), &llm, &extra);
    // One keeps a database: the results made elsewhere go in it too.
    let db = dir.join("c.db");
    let with_db = [&extra[..], &["--db", db.to_str().unwrap()]].concat();
    let c = instance("c", &feed, &redis.url(), &llm, &with_db);

    wait_all_fresh(&[&a, &b, &c], 4, 24, &["summary", "mind_map"]);

    assert_never_two_at_once(&calls);
    let calls = calls.lock().unwrap();
    assert_eq!(calls.per_key.len(), 8, "{:?}", calls.per_key.keys());
    // The calls spread: more than one instance made some.
    let here: Vec<u64> = [&a, &b, &c]
        .iter()
        .map(|i| metric(&i.api, "inflight_cluster_runs_here_total"))
        .collect();
    assert!(
        here.iter().filter(|n| **n > 0).count() >= 2,
        "calls per instance: {here:?}"
    );
    let total: u64 = here.iter().sum();
    let made: usize = calls.per_key.values().sum();
    let without_news: u64 = [&a, &b, &c]
        .iter()
        .map(|i| metric(&i.api, "inflight_nothing_new_runs_total"))
        .sum();
    // Every run that took a lease made a call, unless the line it was for
    // was covered meanwhile: found nothing new, it made none. Most such
    // runs find it out before they take a lease at all.
    assert!(
        made as u64 <= total && total <= made as u64 + without_news,
        "runs with a lease {total}, calls {made}, runs without news {without_news}"
    );
    assert_eq!(
        calls.with_nothing_new, 0,
        "no call sent a prompt with nothing said since"
    );
    // Every instance stored the results the others made.
    for i in [&a, &b, &c] {
        let detail = get_json(&format!("{}/api/sessions/s1", i.api)).unwrap();
        assert_eq!(detail["summary"]["value"], "Summary of [s1].", "{}", i.name);
        assert_eq!(detail["summary"]["covered_generation"], 24);
    }
    assert!(metric(&c.api, "inflight_cluster_results_from_others_total") > 0);
    drop(calls);
    c.process.stop();
    let file = rusqlite::Connection::open(&db).unwrap();
    let fresh: i64 = file
        .query_row(
            "SELECT COUNT(DISTINCT session || op) FROM results WHERE covered_generation = 24",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(fresh, 8, "every (session, op)'s newest result is on disk");

    // Each result went out once, from one instance, revisions growing.
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().iter().filter(|d| d.3 == 24).count() < 8 {
        assert!(
            Instant::now() < deadline,
            "final results delivered: {:?}",
            got.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = got.lock().unwrap();
    let mut newest: HashMap<(String, String), u64> = HashMap::new();
    for (session, op, revision, _) in got.iter() {
        let held = newest.entry((session.clone(), op.clone())).or_insert(0);
        assert!(
            *revision > *held,
            "{session} {op}: {revision} after {held}: {got:?}"
        );
        *held = *revision;
    }
}

#[test]
fn a_killed_holders_work_is_taken_over_by_another_instance() {
    let redis = RedisServer::start();
    let (llm, calls) = start_llm(Duration::from_millis(1000));
    let dir = meetings("killed", 2, 16);
    let (_feed, feed) = replay_feed(&dir);
    let extra = [
        "--llm-concurrency",
        "4",
        "--lease-ttl",
        "6s",
        "--ops",
        "summary",
    ];
    let mut all = vec![
        instance("a", &feed, &redis.url(), &llm, &extra),
        instance("b", &feed, &redis.url(), &llm, &extra),
        instance("c", &feed, &redis.url(), &llm, &extra),
    ];
    // Mid-run, the holder of s1's summary dies without a word.
    let holder = holder_of(&redis, "s1:summary");
    let at = all.iter().position(|i| i.name == holder).unwrap();
    let mut dead = all.remove(at);
    dead.process.child.kill().unwrap();
    let _ = dead.process.child.wait();
    // Until its lease runs out, the others show the run where it was, in
    // the picture `inflight attach` reads as in the API. Every name shown
    // is noted for as long as Redis still names the dead holder.
    let lease = "inflight:lease:s1:summary";
    let held_by_the_dead = || {
        redis
            .get(lease)
            .is_some_and(|h| h.rsplit_once('/').is_some_and(|(name, _)| name == holder))
    };
    let mut shown_on = std::collections::BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let picture = get_json(&format!("{}/api/dashboard", all[0].api)).unwrap_or_default();
        assert_eq!(
            picture["snapshot"]["cluster"]["instance"],
            all[0].name.as_str()
        );
        let on = picture["snapshot"]["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|row| row["id"] == "s1")
            .and_then(|row| {
                row["ops"]["summary"]["in_flight"]["instance"]
                    .as_str()
                    .map(String::from)
            });
        shown_on.extend(on);
        if !held_by_the_dead() && !shown_on.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "s1's run never showed: {picture}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        shown_on.contains(&holder),
        "shown on the instance that held the lease ({holder}); shown: {shown_on:?}"
    );

    let survivors: Vec<&Instance> = all.iter().collect();
    wait_all_fresh(&survivors, 2, 16, &["summary"]);
    let takeovers: u64 = all
        .iter()
        .map(|i| metric(&i.api, "inflight_cluster_takeovers_total"))
        .sum();
    assert!(takeovers >= 1, "nobody took the dead holder's work over");
    assert_never_two_at_once(&calls);
}

#[test]
fn a_paused_holders_late_work_is_refused_by_its_fence_and_says_so() {
    let redis = RedisServer::start();
    let (llm, _calls) = start_llm(Duration::from_millis(1500));
    let dir = meetings("paused", 1, 4);
    let (_feed, feed) = replay_feed(&dir);
    let extra = ["--lease-ttl", "2s", "--ops", "summary"];
    let mut all = vec![
        instance("a", &feed, &redis.url(), &llm, &extra),
        instance("b", &feed, &redis.url(), &llm, &extra),
    ];
    let holder = holder_of(&redis, "s1:summary");
    let at = all.iter().position(|i| i.name == holder).unwrap();
    let mut paused = all.remove(at);
    let other = all.remove(0);
    paused.process.signal(libc::SIGSTOP);
    // The other instance takes the work over and finishes it.
    wait_all_fresh(&[&other], 1, 4, &["summary"]);
    let kept = redis.hget("inflight:result:s1:summary", "instance");
    assert_eq!(kept.as_deref(), Some(other.name.as_str()));

    paused.process.signal(libc::SIGCONT);
    // Its run learns it was replaced: its renewal or its result is refused,
    // it stops, and its log and metrics say so.
    let line = paused.process.wait_for_either(
        "a later run of this operation started",
        "result refused by its fence",
    );
    assert!(line.contains("s1"), "{line}");
    let refused = metric(&paused.api, "inflight_cluster_leases_lost_total")
        + metric(&paused.api, "inflight_cluster_results_refused_total");
    assert!(refused >= 1);
    // Nothing it did replaced the newer result.
    assert_eq!(
        redis
            .hget("inflight:result:s1:summary", "instance")
            .as_deref(),
        Some(other.name.as_str())
    );
    wait_all_fresh(&[&paused, &other], 1, 4, &["summary"]);
}

#[test]
fn instances_recover_from_a_redis_restart_without_running_anything_twice_at_once() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let (llm, calls) = start_llm(Duration::from_millis(500));
    let dir = meetings("restart", 3, 24);
    let (_feed, feed) = replay_feed(&dir);
    let extra = ["--llm-concurrency", "2", "--lease-ttl", "6s"];
    let a = instance("a", &feed, &redis.url(), &llm, &extra);
    let b = instance("b", &feed, &redis.url(), &llm, &extra);
    let c = instance("c", &feed, &redis.url(), &llm, &extra);

    holder_of(&redis, "s2:summary");
    redis.kill();
    // Without Redis nothing starts, and readiness says why.
    let until = Instant::now() + Duration::from_secs(20);
    while get_json(&format!("{}/readyz", a.api)).is_none_or(|r| r["redis"] != "unreachable") {
        assert!(Instant::now() < until, "readiness never said redis");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _redis = RedisServer::on(port);

    wait_all_fresh(&[&a, &b, &c], 3, 24, &["summary", "mind_map"]);
    assert_never_two_at_once(&calls);
}

/// Neither operation of any session claims to cover more transcripts than
/// the instance holds.
/// The instance must answer, and every field read must be there: a
/// silent API or a renamed field fails the test instead of passing it.
fn never_covers_more_than_held(api: &str) {
    let answer = get_json(&format!("{api}/api/sessions"))
        .unwrap_or_else(|| panic!("{api}/api/sessions does not answer"));
    let rows = answer["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("no sessions list: {answer}"));
    for row in rows {
        let held = row["transcripts"]
            .as_u64()
            .unwrap_or_else(|| panic!("no transcripts count: {row}"));
        for op in ["summary", "mind_map"] {
            let operation = &row["operations"][op];
            // An operation that never ran has no result yet: null, not absent.
            let covered = match &operation["covered_generation"] {
                Value::Null if operation.get("covered_generation").is_some() => 0,
                value => value
                    .as_u64()
                    .unwrap_or_else(|| panic!("no {op} covered_generation: {row}")),
            };
            assert!(covered <= held, "{op} covers {covered} of {held}: {row}");
        }
    }
}

#[test]
fn an_instance_that_joins_late_shows_the_others_results_as_covering_what_it_holds() {
    let redis = RedisServer::start();
    let (llm, calls) = start_llm(Duration::from_millis(200));
    let dir = meetings("late", 1, 32);
    let (_feed, feed) = replay_feed(&dir);
    let early = instance("early", &feed, &redis.url(), &llm, &[]);
    // The replay feed plays each client from the start: the late instance
    // counts the session's transcripts from 1 while the early one is ahead.
    let until = Instant::now() + Duration::from_secs(30);
    while get_json(&format!("{}/api/sessions", early.api))
        .and_then(|a| a["sessions"][0]["operations"]["summary"]["covered_generation"].as_u64())
        .is_none_or(|covered| covered < 12)
    {
        assert!(Instant::now() < until, "the early instance never got going");
        std::thread::sleep(Duration::from_millis(100));
    }
    let late = instance("late", &feed, &redis.url(), &llm, &[]);
    let until = Instant::now() + Duration::from_secs(90);
    while !all_fresh(&late.api, 1, 32, &["summary", "mind_map"]) {
        never_covers_more_than_held(&late.api);
        assert!(Instant::now() < until, "the late instance never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_all_fresh(&[&early], 1, 32, &["summary", "mind_map"]);
    assert!(metric(&late.api, "inflight_cluster_numbering_mismatches_total") >= 1);
    assert_never_two_at_once(&calls);
}

/// Every one of `sessions` sessions ended with all `lines` heard, and
/// nothing in flight for any operation.
fn all_settled(api: &str, sessions: usize, lines: u64) -> bool {
    let Some(answer) = get_json(&format!("{api}/api/sessions")) else {
        return false;
    };
    let Some(rows) = answer["sessions"].as_array() else {
        return false;
    };
    rows.len() == sessions
        && rows.iter().all(|row| {
            row["ended"] == true
                && row["transcripts"] == lines
                && row["operations"]
                    .as_object()
                    .is_some_and(|ops| ops.values().all(|op| op["state"] == "idle"))
        })
}

#[test]
fn three_instances_hold_one_hourly_token_budget_between_them() {
    let budget: u64 = 6_000;
    let redis = RedisServer::start();
    let (llm, calls) = start_llm(Duration::from_millis(200));
    let dir = meetings("budget", 6, 30);
    let (_feed, feed) = replay_feed(&dir);
    let limit = budget.to_string();
    let extra = [
        "--llm-concurrency",
        "2",
        "--lease-ttl",
        "6s",
        "--ops",
        "summary",
        "--min-interval",
        "0s",
        "--budget-tokens-per-hour",
        &limit,
        // Out of reach: there so that an operator can raise it.
        "--budget-session-tokens",
        "1000000",
    ];
    let all = [
        instance("a", &feed, &redis.url(), &llm, &extra),
        instance("b", &feed, &redis.url(), &llm, &extra),
        instance("c", &feed, &redis.url(), &llm, &extra),
    ];
    let until = Instant::now() + Duration::from_secs(90);
    for i in &all {
        while !all_settled(&i.api, 6, 30) {
            assert!(
                Instant::now() < until,
                "{} never settled: {}",
                i.name,
                get_json(&format!("{}/api/sessions", i.api)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let calls = calls.lock().unwrap();
    // Each instance alone would spend up to the budget: together they
    // stay within it, past it by at most the calls in flight when it was
    // reached (three instances, two calls each).
    let in_flight = 3 * 2 * calls.most_tokens;
    assert!(
        calls.tokens <= budget + in_flight,
        "spent {} tokens in {} calls against a budget of {budget} (+{in_flight} in flight)",
        calls.tokens,
        calls.timeline.len()
    );
    assert!(
        calls.tokens + calls.most_tokens > budget,
        "the budget was reached: {} spent",
        calls.tokens
    );
    // The instances say which budget stopped the work.
    let stopped: usize = all
        .iter()
        .map(|i| {
            let answer = get_json(&format!("{}/api/sessions", i.api)).unwrap();
            answer["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|row| row["over_budget"] == "tokens_per_hour")
                .count()
        })
        .sum();
    assert!(stopped > 0, "no session shows the budget that stopped it");
    // Redis counted what the calls reported, to the token.
    let counted: u64 = (0..60)
        .filter_map(|back| {
            let minute = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                / 60
                - back;
            redis.hget("inflight:spent:all", &format!("t{minute}"))
        })
        .map(|t| t.parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        counted, calls.tokens,
        "Redis counts what the server reported"
    );
    drop(calls);
    // An operator's raise on one instance is kept in Redis for all.
    let raised = crate::common::blocking::post_json(
        &format!("{}/api/sessions/s1/budget/raise", all[0].api),
        r#"{"tokens": 5}"#,
    )
    .expect("the raise answers");
    assert_eq!(raised["raised_tokens"], 5, "{raised}");
    let until = Instant::now() + Duration::from_secs(10);
    while redis.hget("inflight:budget:s1", "t").as_deref() != Some("5") {
        assert!(Instant::now() < until, "the raise never reached Redis");
        std::thread::sleep(Duration::from_millis(20));
    }
}
