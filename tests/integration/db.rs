//! The database on real files: what an engine writes comes back after a
//! restart, results are fenced in the SQL, runs cut short are marked
//! interrupted, and bad, newer or busy files are refused without a change.

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{final_line, sid, wait_until};
use inflight::db::{self, DbError, RestoreLimits, Write};
use inflight::engine::{Engine, EngineConfig};
use inflight::events::Event;
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::Operation;

/// A path in a fresh folder of its own.
fn fresh_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("inflight-db-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("inflight.db")
}

fn limits() -> RestoreLimits {
    RestoreLimits {
        forget_after: Duration::from_secs(1800),
        max_sessions: 10_000,
        retain: Duration::from_secs(30 * 86_400),
        remember_forgotten: 100_000,
    }
}

/// A final transcript of `session` as the engine writes it (its `seq` is
/// its generation), said now.
fn said(session: &str, generation: u64, text: &str) -> Write {
    Write::Transcript {
        session: sid(session),
        feed: Some(0),
        generation,
        seq: Some(generation),
        speaker: None,
        start: None,
        end: None,
        text: text.into(),
        at: SystemTime::now(),
    }
}

fn engine() -> Engine {
    Engine::new(
        EngineConfig::default(),
        Arc::new(BuiltinBackend::new(LatencyRange::ZERO)),
    )
}

fn line(seq: u64) -> String {
    format!("Point {seq} about the release.")
}

/// Waits until `engine` is idle with every operation's result of
/// `session` covering `generation`.
async fn until_covered(
    engine: &Engine,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    session: &str,
    generation: u64,
) {
    wait_until(events, Duration::from_secs(10), "its final results", || {
        engine.is_idle()
            && inflight::ops::BUILT_IN.iter().all(|op| {
                engine
                    .result(&sid(session), *op)
                    .is_some_and(|r| r.covered_generation == generation)
            })
    })
    .await;
}

/// `session` says `lines` lines and ends; waits until every operation's
/// result covers them all.
async fn say_and_end(engine: &Engine, session: &str, lines: u64) {
    let mut events = engine.subscribe();
    for seq in 1..=lines {
        engine.ingest(final_line(session, seq, &line(seq)), Some(0));
    }
    engine.end_session(&sid(session), Some(0));
    until_covered(engine, &mut events, session, lines).await;
}

#[tokio::test]
async fn what_an_engine_wrote_comes_back_after_a_restart() {
    let path = fresh_db("round-trip");
    let opened = db::open(&path, limits()).unwrap();
    assert!(opened.restored.sessions.is_empty());
    let first = engine();
    first.use_db(opened.db.clone());
    say_and_end(&first, "standup", 3).await;
    let before = first.session_detail(&sid("standup"), 10).unwrap();
    opened.db.close(Duration::from_secs(5));

    let reopened = db::open(&path, limits()).unwrap();
    let stored = &reopened.restored.sessions;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].generation, 3);
    assert_eq!(stored[0].last_seq, Some(3));
    assert!(stored[0].ended_at.is_some());
    let texts: Vec<&str> = stored[0]
        .transcripts
        .iter()
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(
        texts,
        [
            "Point 1 about the release.",
            "Point 2 about the release.",
            "Point 3 about the release."
        ]
    );

    let second = engine();
    let mut events = second.subscribe();
    second.use_db(reopened.db.clone());
    assert_eq!(second.restore(reopened.restored), 1);
    let after = second.session_detail(&sid("standup"), 10).unwrap();
    for (is, was) in after
        .content
        .results
        .values()
        .zip(before.content.results.values())
    {
        let (is, was) = (is.clone().unwrap(), was.clone().unwrap());
        assert_eq!(
            (&is.body, is.covered_generation, is.run_id, &is.model),
            (&was.body, was.covered_generation, was.run_id, &was.model),
            "results come back whole"
        );
        // Times are kept to the millisecond.
        let apart = is
            .finished_at
            .duration_since(was.finished_at)
            .unwrap_or_else(|e| e.duration());
        assert!(apart < Duration::from_millis(1), "{apart:?}");
        assert!(was.processing_time.abs_diff(is.processing_time) < Duration::from_millis(1));
    }
    assert_eq!(after.content.recent, {
        // Arrival numbers are the new process's own.
        let mut recent = before.content.recent.clone();
        for (a, b) in recent.iter_mut().zip(&after.content.recent) {
            a.arrival = b.arrival;
            a.received_at = b.received_at;
        }
        recent
    });
    for op in inflight::ops::BUILT_IN {
        let (was, is) = (&before.row.ops[op], &after.row.ops[op]);
        assert_eq!(
            (is.counts.runs, is.counts.ok, is.counts.skipped),
            (was.counts.runs, was.counts.ok, was.counts.skipped),
            "{op:?}"
        );
        assert_eq!(is.counts.usage(), was.counts.usage());
        assert_eq!(
            after.history[op]
                .iter()
                .map(|r| r.run_id)
                .collect::<Vec<_>>(),
            before.history[op]
                .iter()
                .map(|r| r.run_id)
                .collect::<Vec<_>>()
        );
    }
    assert!(after.row.ended);
    assert_eq!(second.resume_points(0).get("standup"), Some(&3));
    // Covered already: nothing runs at start.
    assert!(second.is_idle());
    assert!(events.try_recv().is_err(), "no event: nothing was admitted");
    // Run ids go on from the stored ones.
    let max_before = before
        .history
        .values()
        .flatten()
        .map(|r| r.run_id)
        .max()
        .unwrap();
    let Some(inflight::engine::TriggerAnswer::Started { run_id }) =
        second.request(&sid("standup"), Operation::SUMMARY)
    else {
        panic!("a trigger on a restored session starts")
    };
    assert!(run_id > max_before, "{run_id} after {max_before}");
    reopened.db.close(Duration::from_secs(5));
}

#[tokio::test]
async fn a_session_left_uncovered_gets_one_run_per_operation_at_start() {
    let path = fresh_db("uncovered");
    let opened = db::open(&path, limits()).unwrap();
    for generation in 1..=5 {
        opened
            .db
            .write(said("late", generation, &format!("line {generation}")));
    }
    opened.db.close(Duration::from_secs(5));
    let reopened = db::open(&path, limits()).unwrap();
    let engine = engine();
    let mut events = engine.subscribe();
    engine.use_db(reopened.db.clone());
    engine.restore(reopened.restored);
    let mut queued = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::OpQueued { op, .. } = event {
            queued.push(op);
        }
    }
    assert_eq!(queued, inflight::ops::BUILT_IN, "one run of each, no more");
    until_covered(&engine, &mut events, "late", 5).await;
    reopened.db.close(Duration::from_secs(5));
}

fn result(run_id: u64, covered: u64, body: &str) -> Write {
    Write::Result {
        session: sid("fenced"),
        op: Operation::SUMMARY,
        run_id,
        covered_generation: covered,
        body: body.into(),
        model: "m".into(),
        processing: Duration::from_millis(5),
        finished_at: SystemTime::now(),
        usage: Default::default(),
        truncated: body.ends_with('…'),
        outbox: Vec::new(),
    }
}

fn stored_summary(path: &std::path::Path) -> (u64, u64, String) {
    let opened = db::open(path, limits()).unwrap();
    let session = opened
        .restored
        .sessions
        .iter()
        .find(|s| s.id == sid("fenced"))
        .cloned()
        .unwrap();
    opened.db.close(Duration::from_secs(5));
    let r = session.results[Operation::SUMMARY].clone().unwrap();
    (r.run_id, r.covered_generation, r.body)
}

#[test]
fn results_are_fenced_in_the_sql() {
    let path = fresh_db("fencing");
    let opened = db::open(&path, limits()).unwrap();
    opened.db.write(said("fenced", 9, "x"));
    opened.db.write(result(5, 3, "run 5"));
    opened
        .db
        .write(result(4, 9, "an older run, however much it covers"));
    opened.db.close(Duration::from_secs(5));
    assert_eq!(stored_summary(&path), (5, 3, "run 5".into()));

    let opened = db::open(&path, limits()).unwrap();
    opened.db.write(result(5, 4, "run 5, a later step"));
    opened
        .db
        .write(result(5, 2, "run 5, an earlier step arriving late"));
    opened.db.close(Duration::from_secs(5));
    assert_eq!(stored_summary(&path), (5, 4, "run 5, a later step".into()));

    let opened = db::open(&path, limits()).unwrap();
    opened.db.write(result(6, 4, "run 6"));
    opened.db.close(Duration::from_secs(5));
    assert_eq!(stored_summary(&path), (6, 4, "run 6".into()));
}

#[test]
fn a_new_life_replaces_what_the_file_held_of_the_one_before() {
    let path = fresh_db("new-life");
    let opened = db::open(&path, limits()).unwrap();
    for n in 1..=3 {
        opened.db.write(said("fenced", n, &format!("old {n}")));
    }
    opened.db.write(result(5, 3, "the old life's summary"));
    // Forgotten, then speaking again: numbered from 1, as memory does.
    // The process stops after its first line, before any result.
    opened.db.write(said("fenced", 1, "new 1"));
    opened.db.close(Duration::from_secs(5));

    let stored = || {
        let reopened = db::open(&path, limits()).unwrap();
        let stored = reopened.restored.sessions[0].clone();
        reopened.db.close(Duration::from_secs(5));
        stored
    };
    let texts = |s: &db::StoredSession| -> Vec<String> {
        s.transcripts.iter().map(|t| t.text.clone()).collect()
    };
    let once = stored();
    assert_eq!(
        once.generation, 1,
        "the new life's count, not the old one's 3"
    );
    assert_eq!(texts(&once), ["new 1"], "no line of the old life");
    assert!(
        once.results[Operation::SUMMARY].is_none(),
        "the old life's summary does not pass for one covering the new lines"
    );

    // The new life goes on in the next process: its lines add up.
    let opened = db::open(&path, limits()).unwrap();
    opened.db.write(said("fenced", 2, "new 2"));
    opened.db.close(Duration::from_secs(5));
    let twice = stored();
    assert_eq!(twice.generation, 2);
    assert_eq!(texts(&twice), ["new 1", "new 2"]);
}

#[test]
fn a_truncated_result_keeps_its_mark_and_a_version_1_file_is_brought_up() {
    let path = fresh_db("truncated");
    let opened = db::open(&path, limits()).unwrap();
    opened.db.write(said("fenced", 2, "x"));
    opened.db.write(result(1, 2, "cut short…"));
    opened.db.close(Duration::from_secs(5));
    let stored = |path: &std::path::Path| {
        let opened = db::open(path, limits()).unwrap();
        let session = opened.restored.sessions[0].clone();
        opened.db.close(Duration::from_secs(5));
        session.results[Operation::SUMMARY].clone().unwrap()
    };
    assert!(stored(&path).truncated);

    // The file as version 1 wrote it: no truncated column.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE outbox; DROP TABLE dead_letters;
             ALTER TABLE runs DROP COLUMN cached_tokens; ALTER TABLE runs DROP COLUMN cost_nanos;
             ALTER TABLE results DROP COLUMN cached_tokens; ALTER TABLE results DROP COLUMN cost_nanos;
             ALTER TABLE results DROP COLUMN truncated; PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let result = stored(&path);
    assert_eq!(result.body, "cut short…");
    assert!(!result.truncated, "results from before read as whole");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, db::schema::VERSION);
}

#[tokio::test]
async fn runs_in_flight_at_a_crash_come_back_interrupted() {
    let path = fresh_db("interrupted");
    let opened = db::open(&path, limits()).unwrap();
    opened.db.write(said("cut", 1, "hello"));
    opened.db.write(Write::RunAdmitted {
        run_id: 41,
        session: sid("cut"),
        op: Operation::MIND_MAP,
        at: SystemTime::now(),
        follow_up: false,
    });
    // The process dies here: the run never ends.
    opened.db.close(Duration::from_secs(5));
    let reopened = db::open(&path, limits()).unwrap();
    let session = &reopened.restored.sessions[0];
    let run = &session.history[Operation::MIND_MAP][0];
    assert_eq!((run.run_id, run.outcome), (41, None), "interrupted");
    assert_eq!(session.counts[Operation::MIND_MAP].counts.cancelled, 1);
    assert_eq!(reopened.restored.next_run_id, 42);
    let engine = Engine::new(
        EngineConfig {
            automatic_ops: Vec::new(),
            ..Default::default()
        },
        Arc::new(BuiltinBackend::new(LatencyRange::ZERO)),
    );
    engine.restore(reopened.restored);
    let stats = &engine.snapshot().sessions[0].ops[Operation::MIND_MAP];
    assert!(
        stats
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("interrupted"),
        "{:?}",
        stats.last_error
    );
    reopened.db.close(Duration::from_secs(5));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let outcome: String = conn
        .query_row("SELECT outcome FROM runs WHERE run_id = 41", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(outcome, "interrupted");
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let path = fresh_db("corrupt");
    let garbage = b"this is not SQLite at all, just some bytes that a disk mangled".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let Err(error) = db::open(&path, limits()) else {
        panic!("a garbage file must not open")
    };
    assert!(matches!(error, DbError::Unreadable { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "untouched");
}

#[test]
fn a_file_from_a_newer_inflight_is_refused_with_its_version() {
    let path = fresh_db("newer");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let Err(error) = db::open(&path, limits()) else {
        panic!("a newer schema must not open")
    };
    assert!(
        matches!(error, DbError::Newer { found: 99, known, .. } if known == db::schema::VERSION),
        "{error:?}"
    );
    assert!(error.to_string().contains("schema 99"), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "untouched");
}

#[test]
fn one_writer_per_file() {
    let path = fresh_db("locked");
    let first = db::open(&path, limits()).unwrap();
    let Err(error) = db::open(&path, limits()) else {
        panic!("a second writer must be refused")
    };
    assert!(matches!(error, DbError::Locked { .. }), "{error:?}");
    assert!(
        error.to_string().contains("--db"),
        "says how to run two: {error}"
    );
    first.db.close(Duration::from_secs(5));
    let again = db::open(&path, limits()).expect("free once the first has closed");
    again.db.close(Duration::from_secs(5));
}

#[test]
fn sessions_past_retain_are_deleted_at_start_and_ended_ones_stay_on_disk_only() {
    let path = fresh_db("retain");
    let opened = db::open(&path, limits()).unwrap();
    let day = Duration::from_secs(86_400);
    for (name, age) in [
        ("old", 40 * day),
        ("ended-yesterday", day),
        ("fresh", Duration::ZERO),
    ] {
        let mut line = said(name, 1, "hi");
        if let Write::Transcript { at, .. } = &mut line {
            *at -= age;
        }
        opened.db.write(line);
    }
    opened.db.write(Write::Ended {
        session: sid("ended-yesterday"),
        at: SystemTime::now() - day,
    });
    // A delivery still waiting for the old session, and two given up: one
    // 40 days ago, one today.
    let row = |session: &str, revision: u64| db::OutboxRow {
        endpoint: "http://127.0.0.1:9/h".into(),
        session: sid(session),
        op: Some(Operation::SUMMARY),
        event: inflight::webhooks::EventKind::Result,
        revision,
        id: format!("{session}:{revision}"),
        body: "{}".into(),
        created_at: SystemTime::now() - 40 * day,
    };
    opened.db.write(Write::Outbox(vec![row("old", 1)]));
    for (session, died) in [
        ("fresh", SystemTime::now() - 40 * day),
        ("fresh", SystemTime::now()),
    ] {
        opened.db.write(Write::Outbox(vec![row(session, 1)]));
        opened.db.write(Write::Dead {
            row: row(session, 1),
            attempts: 3,
            error: "404".into(),
            died_at: died,
        });
    }
    opened.db.close(Duration::from_secs(5));
    let reopened = db::open(&path, limits()).unwrap();
    let names: Vec<&str> = reopened
        .restored
        .sessions
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(names, ["fresh"], "ended a day ago: on disk, not in memory");
    reopened.db.close(Duration::from_secs(5));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let kept: Vec<String> = conn
        .prepare("SELECT id FROM sessions ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kept, ["ended-yesterday", "fresh"], "40 days old: gone");
    let transcripts: i64 = conn
        .query_row(
            "SELECT count(*) FROM transcripts WHERE session = 'old'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(transcripts, 0);
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(
        count("SELECT count(*) FROM outbox"),
        0,
        "the old session's delivery went with it"
    );
    assert_eq!(
        count("SELECT count(*) FROM dead_letters"),
        1,
        "the letter given up 40 days ago is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_pages_through_past_sessions_and_reads_forgotten_ones_from_disk() {
    let (_, opened, engine) = engine_on_file("history");
    let mut events = engine.subscribe();
    let names = ["a-one", "b-two", "c-three"];
    for name in names {
        engine.ingest(
            final_line(name, 1, &format!("{name} talks about the budget.")),
            Some(0),
        );
        engine.end_session(&sid(name), Some(0));
    }
    wait_until(&mut events, Duration::from_secs(10), "every result", || {
        engine.is_idle()
            && names.iter().all(|n| {
                inflight::ops::BUILT_IN
                    .iter()
                    .all(|op| engine.result(&sid(n), *op).is_some())
            })
    })
    .await;
    let db = opened.db.clone();
    assert!(
        tokio::task::spawn_blocking(move || db.flush(Duration::from_secs(5)))
            .await
            .unwrap()
    );
    // How many runs there were depends on whether the first ended before
    // the session did; whatever memory counted, the disk must say too.
    let counted = engine.session_detail(&sid("b-two"), 0).unwrap().row.ops[Operation::SUMMARY]
        .counts
        .ok;
    assert_eq!(
        engine.forget_ended(Duration::ZERO),
        3,
        "memory lets them go"
    );

    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let addr = inflight::api::serve(
        engine.clone(),
        inflight::api::ApiConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
        shutdown,
    )
    .await
    .unwrap();
    inflight::net::install_crypto();
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let response = client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response
                    .json::<serde_json::Value>()
                    .await
                    .unwrap_or_default(),
            )
        }
    };

    let (status, detail) = get("/api/sessions/b-two".into()).await;
    assert_eq!(status, 200);
    assert_eq!(detail["from_disk"], true);
    assert_eq!(detail["summary"]["covered_generation"], 1);
    assert!(
        detail["summary"]["value"]
            .as_str()
            .unwrap()
            .contains("budget")
    );
    assert_eq!(
        detail["recent_transcripts"][0]["text"],
        "b-two talks about the budget."
    );
    assert_eq!(detail["operations"]["summary"]["ok"], counted);
    assert_eq!(get("/api/sessions/never-was".into()).await.0, 404);

    let (status, first) = get("/api/history?limit=2".into()).await;
    assert_eq!(status, 200);
    let page: Vec<String> = first["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(page.len(), 2);
    let next = &first["next"];
    let (status, second) = get(format!(
        "/api/history?limit=2&cursor={}",
        next.as_str().expect("a cursor while there may be more")
    ))
    .await;
    assert_eq!(status, 200);
    let mut all = page.clone();
    all.extend(
        second["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_string()),
    );
    all.sort();
    assert_eq!(all, names, "each once, over two pages");
    assert_eq!(second["next"], serde_json::Value::Null);
    let future = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let (_, none) = get(format!("/api/history?since={future}")).await;
    assert_eq!(none["sessions"].as_array().unwrap().len(), 0);
    assert_eq!(get("/api/history?cursor=nonsense".into()).await.0, 400);
    opened.db.close(Duration::from_secs(5));
}

#[tokio::test]
async fn without_a_database_history_is_a_clear_404() {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let addr = inflight::api::serve(
        engine(),
        inflight::api::ApiConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
        shutdown,
    )
    .await
    .unwrap();
    inflight::net::install_crypto();
    let response = reqwest::get(format!("http://{addr}/api/history"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap_or("").contains("--no-db"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_far_behind_drops_and_counts_then_recovers() {
    let path = fresh_db("flood");
    let opened = db::open(&path, limits()).unwrap();
    let db = opened.db.clone();
    let health = || {
        let h = db.health();
        (h.written(), h.dropped(), h.failures(), h.degraded())
    };
    assert_eq!(health(), (0, 0, 0, false));
    // Far more than the channel holds, faster than any disk.
    let sent = 4 * db::CHANNEL_CAPACITY as u64;
    for generation in 1..=sent {
        db.write(said("flood", generation, "x"));
    }
    // (Whether it still says degraded now depends on whether a commit
    // finished since the last drop.)
    let (_, dropped, _, _) = health();
    assert!(dropped > 0, "{:?}", health());
    let flusher = db.clone();
    assert!(
        tokio::task::spawn_blocking(move || flusher.flush(Duration::from_secs(60)))
            .await
            .unwrap()
    );
    let (written, dropped, failures, _) = health();
    assert_eq!(
        written + dropped,
        sent,
        "every write either committed or counted"
    );
    assert_eq!(failures, 0);
    // The next commit clears the mark (another session's: the flooded
    // one has a gap, and no more of its lines are written).
    db.write(said("calm", 1, "x"));
    let flusher = db.clone();
    assert!(
        tokio::task::spawn_blocking(move || flusher.flush(Duration::from_secs(60)))
            .await
            .unwrap()
    );
    assert_eq!(health(), (written + 1, dropped, 0, false));
    opened.db.close(Duration::from_secs(5));
}

/// The stored lines of `session`: how many, the highest `seq`, and the
/// `last_seq` its row says a restart resumes from.
fn stored_lines(path: &std::path::Path, session: &str) -> (i64, Option<i64>, Option<i64>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let (count, highest) = conn
        .query_row(
            "SELECT count(*), max(seq) FROM transcripts WHERE session = ?1",
            [session],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let last_seq = conn
        .query_row(
            "SELECT last_seq FROM sessions WHERE id = ?1",
            [session],
            |r| r.get(0),
        )
        .unwrap();
    (count, highest, last_seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resume_point_never_passes_a_line_the_writer_dropped() {
    let path = fresh_db("gap");
    let opened = db::open(&path, limits()).unwrap();
    let db = opened.db.clone();
    // What memory is told the file holds, per session.
    let told = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let heard = told.clone();
    db.on_committed(move |session, wrote| {
        let db::Wrote::LinesThrough(generation) = wrote else {
            return;
        };
        let mut told = heard.lock().unwrap();
        let newest = told.entry(session.to_string()).or_insert(0);
        assert!(generation > *newest, "told in order, each line once");
        *newest = generation;
    });
    // Another connection holds the write lock: the writer cannot commit,
    // and its channel fills.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let sent = db::CHANNEL_CAPACITY as u64 + 2 * db::BATCH_ROWS as u64;
    for seq in 1..=sent {
        db.write(said("flood", seq, "x"));
    }
    let dropped = db.health().dropped();
    assert!(dropped > 0, "the channel filled");
    blocker.execute_batch("COMMIT").unwrap();
    let flush = || {
        let flusher = db.clone();
        tokio::task::spawn_blocking(move || flusher.flush(Duration::from_secs(60)))
    };
    assert!(flush().await.unwrap(), "the writer caught up");
    // With room again, later lines of the flooded session are still not
    // written, and are counted; another session's are written.
    db.write(said("flood", sent + 1, "late"));
    db.write(said("calm", 1, "x"));
    assert!(flush().await.unwrap());
    assert_eq!(db.health().dropped(), dropped + 1);
    db.close(Duration::from_secs(5));

    let (count, highest, last_seq) = stored_lines(&path, "flood");
    assert!((count as u64) < sent, "some lines were dropped");
    assert_eq!(
        (highest, last_seq),
        (Some(count), Some(count)),
        "the file holds lines 1..=last_seq, every one, and none after"
    );
    assert_eq!(stored_lines(&path, "calm"), (1, Some(1), Some(1)));
    assert_eq!(
        told.lock().unwrap().clone(),
        std::collections::HashMap::from([("flood".to_string(), count as u64), ("calm".into(), 1)]),
        "memory is told of the lines on disk, never past the gap"
    );
    // A restart resumes the feed right after the last line on disk.
    let reopened = db::open(&path, limits()).unwrap();
    let flood = reopened
        .restored
        .sessions
        .iter()
        .find(|s| s.id.as_str() == "flood")
        .unwrap();
    assert_eq!(flood.last_seq, Some(count as u64));
    assert_eq!(flood.generation, count as u64);
    reopened.db.close(Duration::from_secs(5));
}

#[tokio::test]
async fn a_session_forgotten_before_a_restart_stays_forgotten_after_it() {
    let path = fresh_db("forgotten");
    // Sessions ended are forgotten at once, also when read back at start.
    let forget_at_once = RestoreLimits {
        forget_after: Duration::ZERO,
        ..limits()
    };
    let opened = db::open(&path, forget_at_once).unwrap();
    let first = engine();
    first.use_db(opened.db.clone());
    say_and_end(&first, "gone", 3).await;
    assert_eq!(first.forget_ended(Duration::ZERO), 1);
    opened.db.close(Duration::from_secs(5));

    // The restart: the feed replays the meeting from its start.
    let reopened = db::open(&path, forget_at_once).unwrap();
    let calls = inflight::llm::probe::ConcurrencyProbe::new(Arc::new(BuiltinBackend::new(
        LatencyRange::ZERO,
    )));
    let second = Engine::new(EngineConfig::default(), calls.clone());
    second.use_db(reopened.db.clone());
    assert_eq!(
        second.restore(reopened.restored),
        0,
        "nothing to hold again"
    );
    for seq in 1..=3 {
        assert_eq!(
            second.ingest(final_line("gone", seq, &line(seq)), Some(0)),
            inflight::engine::Appended::Duplicate,
            "line {seq} was said before the restart"
        );
    }
    second.end_session(&sid("gone"), Some(0));
    assert!(
        second.session_detail(&sid("gone"), 0).is_none(),
        "the replay does not bring it back"
    );
    assert!(second.is_idle());
    assert_eq!(calls.calls(), 0, "and costs no LLM call");
    // A line it never said is a new life, as without a restart.
    assert!(matches!(
        second.ingest(final_line("gone", 4, "Something new."), Some(0)),
        inflight::engine::Appended::Final { .. }
    ));
    reopened.db.close(Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn retain_keeps_deleting_while_the_process_runs() {
    let path = fresh_db("retain-running");
    let hour = Duration::from_secs(3600);
    let opened = db::open(
        &path,
        RestoreLimits {
            retain: hour,
            ..limits()
        },
    )
    .unwrap();
    let engine = engine();
    engine.use_db(opened.db.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(engine.clone().housekeeping(stop));
    // A session last heard two hours ago, written after the start's prune.
    let mut old = said("old", 1, "hi");
    if let Write::Transcript { at, .. } = &mut old {
        *at -= 2 * hour;
    }
    opened.db.write(old);
    opened.db.write(said("fresh", 1, "hi"));
    let sessions = || -> Vec<String> {
        assert!(opened.db.flush(Duration::from_secs(10)));
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.prepare("SELECT id FROM sessions ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(sessions(), ["fresh", "old"]);
    // Just before the housekeeping's prune: still there.
    tokio::time::sleep(db::PRUNE_EVERY - Duration::from_secs(1)).await;
    assert_eq!(sessions(), ["fresh", "old"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sessions(),
        ["fresh"],
        "deleted by the prune every 10 minutes"
    );
    opened.db.close(Duration::from_secs(5));
}

/// Waits until every write handed to the writer so far is committed.
async fn flushed(db: &db::Db) {
    let db = db.clone();
    assert!(
        tokio::task::spawn_blocking(move || db.flush(Duration::from_secs(5)))
            .await
            .unwrap(),
        "the writer caught up"
    );
}

/// An engine writing to a fresh file `name`, on which `session` said
/// `lines` lines and ended, every line covered and committed.
/// An engine writing to a fresh file named for `name`.
fn engine_on_file(name: &str) -> (PathBuf, db::Opened, Engine) {
    let path = fresh_db(name);
    let opened = db::open(&path, limits()).unwrap();
    let engine = engine();
    engine.use_db(opened.db.clone());
    (path, opened, engine)
}

async fn said_on_file(name: &str, session: &str, lines: u64) -> (PathBuf, db::Opened, Engine) {
    let (path, opened, engine) = engine_on_file(name);
    say_and_end(&engine, session, lines).await;
    flushed(&opened.db).await;
    (path, opened, engine)
}

/// The texts of a detail's lines, oldest first.
fn texts_of(detail: &inflight::engine::SessionDetail) -> Vec<String> {
    detail
        .content
        .recent
        .iter()
        .map(|t| t.text.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn covered_lines_leave_memory_once_written_and_views_read_them_back() {
    let (path, opened, engine) = said_on_file("read-back", "long-talk", 60).await;
    assert_eq!(
        engine.lines_held(&sid("long-talk")),
        Some(0),
        "every line covered and on disk: none in memory"
    );
    let newest_40: Vec<String> = (21..=60).map(line).collect();
    let detail = engine.session_detail(&sid("long-talk"), 40).unwrap();
    assert_eq!(texts_of(&detail), newest_40, "the view reads them back");
    assert_eq!(
        detail
            .content
            .recent
            .iter()
            .map(|t| t.generation)
            .collect::<Vec<_>>(),
        (21..=60).collect::<Vec<u64>>()
    );
    assert_eq!(detail.row.transcripts, 60);

    // The same lines without a database stay in memory for the views.
    let in_memory = self::engine();
    say_and_end(&in_memory, "long-talk", 60).await;
    assert_eq!(
        in_memory.lines_held(&sid("long-talk")),
        Some(40),
        "the views' 40"
    );
    assert_eq!(
        texts_of(&in_memory.session_detail(&sid("long-talk"), 40).unwrap()),
        newest_40
    );

    // The API reads them back too, off the runtime's threads.
    let server = common::api_server::serving(engine.clone(), Default::default()).await;
    let get = |path: &str| {
        let url = format!("{}{path}", server.base);
        async move {
            common::api_server::http()
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let texts = |lines: &serde_json::Value| -> Vec<String> {
        lines
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["text"].as_str().unwrap().to_string())
            .collect()
    };
    let detail = get("/api/sessions/long-talk").await;
    assert_eq!(detail["from_disk"], serde_json::Value::Null, "from memory");
    let newest_20: Vec<String> = (41..=60).map(line).collect();
    assert_eq!(texts(&detail["recent_transcripts"]), newest_20);
    let dashboard = get("/api/dashboard/sessions/long-talk").await;
    assert_eq!(dashboard["from_disk"], false);
    assert_eq!(
        texts(&dashboard["detail"]["content"]["recent"]),
        newest_40,
        "{dashboard}"
    );

    // After a restart the covered lines are not taken back into memory.
    opened.db.close(Duration::from_secs(5));
    let reopened = db::open(&path, limits()).unwrap();
    let again = self::engine();
    again.use_db(reopened.db.clone());
    assert_eq!(again.restore(reopened.restored), 1);
    assert_eq!(again.lines_held(&sid("long-talk")), Some(0));
    assert_eq!(
        texts_of(&again.session_detail(&sid("long-talk"), 40).unwrap()),
        newest_40
    );
    reopened.db.close(Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_speaks_again_after_it_was_forgotten_reads_back_its_new_lines() {
    let (_, opened, engine) = engine_on_file("again");
    let flush = || {
        let db = opened.db.clone();
        tokio::task::spawn_blocking(move || db.flush(Duration::from_secs(5)))
    };
    say_and_end(&engine, "again", 3).await;
    assert!(flush().await.unwrap());
    assert_eq!(engine.forget_ended(Duration::ZERO), 1);
    assert_eq!(engine.lines_held(&sid("again")), None);

    // The same id speaks again: a new life, numbered from 1 again.
    let mut events = engine.subscribe();
    for seq in 4..=5 {
        engine.ingest(
            final_line("again", seq, &format!("New point {seq}.")),
            Some(0),
        );
    }
    until_covered(&engine, &mut events, "again", 2).await;
    assert!(flush().await.unwrap());
    assert_eq!(engine.lines_held(&sid("again")), Some(0));
    assert_eq!(
        texts_of(&engine.session_detail(&sid("again"), 40).unwrap()),
        ["New point 4.", "New point 5."],
        "the file holds this life's lines, not the ones it said before"
    );
    opened.db.close(Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_read_back_leaves_the_view_what_memory_holds() {
    let (path, opened, engine) = said_on_file("unreadable", "gone", 5).await;
    // Someone else breaks the file under the running process.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("DROP TABLE transcripts").unwrap();
    let detail = engine.session_detail(&sid("gone"), 40).unwrap();
    assert!(
        detail.content.recent.is_empty(),
        "nothing read, nothing made up"
    );
    assert_eq!(detail.row.transcripts, 5, "the rest of the view is whole");
    assert!(detail.content.results[Operation::SUMMARY].is_some());
    opened.db.close(Duration::from_secs(5));
}

/// A model that answers once its gate is open, and keeps the lines each
/// call read.
struct Gated {
    inner: BuiltinBackend,
    open: tokio::sync::watch::Receiver<bool>,
    read: std::sync::Mutex<Vec<(Operation, Vec<String>)>>,
    /// The previous result each call built on.
    built_on: std::sync::Mutex<Vec<(Operation, Option<String>)>>,
    /// Calls made so far.
    calls: tokio::sync::watch::Sender<usize>,
}

impl Gated {
    /// The lines each call of `op` read, in the order of the calls.
    fn calls_of(&self, op: Operation) -> Vec<Vec<String>> {
        let read = self.read.lock().unwrap();
        read.iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, texts)| texts.clone())
            .collect()
    }

    /// The previous result each call of `op` built on, in order.
    fn built_on(&self, op: Operation) -> Vec<Option<String>> {
        let built_on = self.built_on.lock().unwrap();
        built_on
            .iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, previous)| previous.clone())
            .collect()
    }
}

impl inflight::llm::Backend for Gated {
    fn info(&self) -> inflight::llm::BackendInfo {
        self.inner.info()
    }

    fn generate<'a>(
        &'a self,
        request: inflight::llm::LlmRequest,
        progress: &'a inflight::llm::Progress,
    ) -> inflight::llm::BoxFuture<'a, Result<inflight::llm::LlmResponse, inflight::llm::LlmError>>
    {
        Box::pin(async move {
            let texts = request.utterances.iter().map(|u| u.text().to_string());
            self.read
                .lock()
                .unwrap()
                .push((request.op, texts.collect()));
            self.built_on
                .lock()
                .unwrap()
                .push((request.op, request.previous.clone()));
            self.calls.send_modify(|n| *n += 1);
            let mut open = self.open.clone();
            if open.wait_for(|open| *open).await.is_err() {
                return Err(inflight::llm::LlmError::other("the gate went away"));
            }
            self.inner.generate(request, progress).await
        })
    }
}

/// An engine on a fresh file `name` whose model waits at a closed gate,
/// with `lines` lines of `session` said and committed meanwhile (the first
/// line's runs are at the gate, nothing covers the rest).
async fn said_behind_a_gate(
    name: &str,
    session: &str,
    lines: u64,
) -> (
    PathBuf,
    db::Opened,
    Engine,
    tokio::sync::watch::Sender<bool>,
    Arc<Gated>,
) {
    let path = fresh_db(name);
    let opened = db::open(&path, limits()).unwrap();
    let (gate, open) = tokio::sync::watch::channel(false);
    let model = Arc::new(Gated {
        inner: BuiltinBackend::new(LatencyRange::ZERO),
        open,
        read: Default::default(),
        built_on: Default::default(),
        calls: tokio::sync::watch::Sender::new(0),
    });
    let config = EngineConfig {
        sessions: inflight::engine::SessionLimits {
            spill_after: Duration::ZERO,
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = Engine::new(config, model.clone());
    engine.use_db(opened.db.clone());
    let mut calls = model.calls.subscribe();
    engine.ingest(final_line(session, 1, &line(1)), Some(0));
    let both = inflight::ops::BUILT_IN.len();
    calls.wait_for(|n| *n == both).await.unwrap();
    for seq in 2..=lines {
        engine.ingest(final_line(session, seq, &line(seq)), Some(0));
    }
    flushed(&opened.db).await;
    (path, opened, engine, gate, model)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_on_file_leave_memory_before_they_are_covered_and_runs_read_them_back() {
    let (_path, opened, engine, gate, model) = said_behind_a_gate("spill", "long-wait", 30).await;
    let mut events = engine.subscribe();
    assert_eq!(
        engine.lines_held(&sid("long-wait")),
        Some(0),
        "on file, covered or not: none in memory"
    );
    gate.send_replace(true);
    until_covered(&engine, &mut events, "long-wait", 30).await;
    let said: Vec<String> = (1..=30).map(line).collect();
    for op in inflight::ops::BUILT_IN {
        let calls = model.calls_of(op);
        assert!(
            calls.len() >= 2,
            "{op}: the first line, then the rest: {calls:?}"
        );
        assert_eq!(
            calls.concat(),
            said,
            "{op}: every line once, in order, the file's ones included"
        );
    }
    opened.db.close(Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lines_cannot_be_read_back_fails_with_the_reason() {
    let (path, opened, engine, gate, _model) =
        said_behind_a_gate("spill-broken", "cut-off", 10).await;
    let mut events = engine.subscribe();
    // Someone else breaks the file under the running process.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("DROP TABLE transcripts").unwrap();
    gate.send_replace(true);
    let error = next_run_error(&mut events).await;
    assert!(
        error.starts_with("cannot read the session's lines back from the database"),
        "{error}"
    );
    assert!(
        engine.session_detail(&sid("cut-off"), 40).is_some(),
        "the process goes on"
    );
    opened.db.close(Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_the_file_no_longer_holds_are_passed_over_not_asked_for_forever() {
    let (path, opened, engine, gate, model) =
        said_behind_a_gate("spill-pruned", "pruned", 10).await;
    let mut events = engine.subscribe();
    // Someone deletes three lines from the file under the running process.
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute(
            "DELETE FROM transcripts WHERE session = 'pruned' AND generation BETWEEN 3 AND 5",
            [],
        )
        .unwrap();
    gate.send_replace(true);
    until_covered(&engine, &mut events, "pruned", 10).await;
    let expected: Vec<String> = [1, 2, 6, 7, 8, 9, 10].into_iter().map(line).collect();
    for op in inflight::ops::BUILT_IN {
        let calls = model.calls_of(op);
        assert_eq!(calls.concat(), expected, "{op}: the rest, in order");
    }
    opened.db.close(Duration::from_secs(5));
}

/// An engine whose first results of `session` (one line) are in the file
/// and have left memory; its gate is open.
async fn results_on_file(
    name: &str,
    session: &str,
) -> (
    PathBuf,
    db::Opened,
    Engine,
    Arc<Gated>,
    tokio::sync::broadcast::Receiver<Event>,
) {
    let (path, opened, engine, gate, model) = said_behind_a_gate(name, session, 1).await;
    let mut events = engine.subscribe();
    gate.send_replace(true);
    until_covered(&engine, &mut events, session, 1).await;
    flushed(&opened.db).await;
    for op in inflight::ops::BUILT_IN {
        assert_eq!(
            engine.result_held(&sid(session), op),
            Some(false),
            "{op}: in the file, and waited: its body left memory"
        );
    }
    (path, opened, engine, model, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_on_file_leaves_memory_and_the_next_run_builds_on_it_from_there() {
    let (_path, opened, engine, model, mut events) =
        results_on_file("result-spill", "builds-on").await;
    let first = inflight::ops::BUILT_IN.map(|op| {
        let result = engine.result(&sid("builds-on"), op).expect("read back");
        assert_eq!(result.covered_generation, 1);
        result
    });
    let detail = engine.session_detail(&sid("builds-on"), 40).unwrap();
    for (op, result) in inflight::ops::BUILT_IN.iter().zip(&first) {
        assert_eq!(
            detail.content.results[*op].as_ref(),
            Some(result),
            "{op}: the detail reads it back too"
        );
    }
    engine.ingest(final_line("builds-on", 2, &line(2)), Some(0));
    until_covered(&engine, &mut events, "builds-on", 2).await;
    for (op, result) in inflight::ops::BUILT_IN.iter().zip(&first) {
        assert_eq!(
            model.built_on(*op),
            [None, Some(result.body.for_prompt())],
            "{op}: the second run built on the first result, read from the file"
        );
    }
    opened.db.close(Duration::from_secs(5));
}

/// The error of the next run that ends with one.
async fn next_run_error(events: &mut tokio::sync::broadcast::Receiver<Event>) -> String {
    common::next_matching(events, Duration::from_secs(10), |event| match event {
        Event::OpFinished {
            error: Some(error), ..
        } => Some(error.clone()),
        _ => None,
    })
    .await
}

/// The first run error after `sql` changes the file under an engine whose
/// results of `session` left memory, and the session says a second line.
async fn first_error_once_the_file_is_changed(name: &str, session: &str, sql: &str) -> String {
    let (path, opened, engine, _model, mut events) = results_on_file(name, session).await;
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch(sql).unwrap();
    engine.ingest(final_line(session, 2, &line(2)), Some(0));
    let error = next_run_error(&mut events).await;
    opened.db.close(Duration::from_secs(5));
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_previous_result_cannot_be_read_back_fails_with_the_reason() {
    let error =
        first_error_once_the_file_is_changed("result-broken", "no-result", "DROP TABLE results")
            .await;
    assert!(
        error.starts_with("cannot read the previous result back from the database"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_file_lacks_fails_the_run_after_its_tries() {
    let error = first_error_once_the_file_is_changed(
        "result-deleted",
        "deleted",
        "DELETE FROM results WHERE session = 'deleted'",
    )
    .await;
    assert_eq!(
        error,
        "the result this run builds on is not in the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_results_stay_in_memory() {
    let engine = Engine::new(
        EngineConfig {
            sessions: inflight::engine::SessionLimits {
                spill_after: Duration::ZERO,
                ..Default::default()
            },
            ..Default::default()
        },
        Arc::new(BuiltinBackend::new(LatencyRange::ZERO)),
    );
    assert_eq!(engine.result_held(&sid("kept"), Operation::SUMMARY), None);
    say_and_end(&engine, "kept", 3).await;
    for op in inflight::ops::BUILT_IN {
        assert_eq!(engine.result_held(&sid("kept"), op), Some(true), "{op}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_reads_back_from_the_file_as_it_was_written() {
    let path = fresh_db("result-read");
    let opened = db::open(&path, limits()).unwrap();
    let written = db::StoredResult {
        run_id: 42,
        covered_generation: 1,
        body: r#"{"root":{"label":"x","children":[]}}"#.into(),
        model: "a-model".into(),
        processing: Duration::from_millis(1_234),
        finished_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        truncated: true,
    };
    opened.db.write(said("read", 1, "x"));
    opened.db.write(Write::Result {
        session: sid("read"),
        op: Operation::MIND_MAP,
        run_id: written.run_id,
        covered_generation: written.covered_generation,
        body: written.body.clone(),
        model: written.model.clone(),
        processing: written.processing,
        finished_at: written.finished_at,
        usage: Default::default(),
        truncated: written.truncated,
        outbox: Vec::new(),
    });
    flushed(&opened.db).await;
    assert_eq!(
        opened.db.result(&sid("read"), Operation::MIND_MAP).unwrap(),
        Some(written)
    );
    assert_eq!(
        opened.db.result(&sid("read"), Operation::SUMMARY).unwrap(),
        None,
        "no summary written"
    );
    opened.db.close(Duration::from_secs(5));
}

/// Polls `done` (state another thread changes, which no event announces)
/// until it holds; panics with `what` after `limit`.
async fn polled_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Another connection holds the file's write lock: the writer takes its
/// batch and waits on SQLite's busy timeout (5 s) until the lock is let go.
fn hold_the_write_lock(path: &std::path::Path) -> rusqlite::Connection {
    let holder = rusqlite::Connection::open(path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    holder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_behind_says_so_until_it_takes_its_next_batch() {
    let path = fresh_db("pace");
    let opened = db::open(&path, limits()).unwrap();
    let db = opened.db.clone();
    assert!(!db.behind(), "an idle writer is not behind");
    let holder = hold_the_write_lock(&path);
    let sent = (db::PACE_WRITES + 2 * db::BATCH_ROWS) as u64;
    for generation in 1..=sent {
        db.write(said("pace", generation, "x"));
    }
    // The writer takes at most one batch and waits on the lock with it:
    // the pace and a batch are left waiting, whatever it took.
    assert!(
        db.writes_waiting() > db::PACE_WRITES + db::BATCH_ROWS - 1,
        "{} writes wait",
        db.writes_waiting()
    );
    assert!(db.behind());
    let waiter = tokio::spawn({
        let db = db.clone();
        async move { db.caught_up().await }
    });
    assert!(!waiter.is_finished());
    holder.execute_batch("COMMIT").unwrap();
    tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("caught up once the writer takes its next batches")
        .unwrap();
    assert!(!db.behind());
    flushed(&db).await;
    let health = db.health();
    assert_eq!((health.written(), health.dropped()), (sent, 0));
    assert_eq!(
        health.failures(),
        0,
        "the lock was let go within the busy timeout"
    );
    opened.db.close(Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_stops_reading_while_the_writer_is_behind_and_every_line_is_written() {
    let (path, opened, engine) = engine_on_file("paced-feed");
    let db = opened.db.clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (addr, feed) = common::feed::driven_feed().await;
    inflight::feed::client::spawn(
        engine.clone(),
        format!("ws://{addr}/"),
        inflight::feed::client::FeedOptions::default(),
        shutdown.clone(),
    );
    let holder = hold_the_write_lock(&path);
    // Far more lines than pace the feed, across sessions, all sent at once.
    let sessions = 50;
    let per_session = (db::PACE_WRITES / sessions * 3) as u64;
    for seq in 1..=per_session {
        for s in 0..sessions {
            let t = final_line(&format!("paced-{s}"), seq, &line(seq));
            feed.send(tokio_tungstenite::tungstenite::Message::text(
                inflight::feed::protocol::transcript_frame(&t),
            ))
            .unwrap();
        }
    }
    let sent = per_session * sessions as u64;
    let status = engine.feeds().statuses()[0].clone();
    let taken = || {
        status
            .transcripts
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    polled_until(
        Duration::from_secs(4),
        "the feed to wait for the writer",
        || {
            status
                .database_waits
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        },
    )
    .await;
    // It stopped at a frame's end: what it took is what the writer holds
    // (one batch) and what waits (the pace and the frame that passed it).
    assert!(
        taken() <= (db::BATCH_ROWS + db::PACE_WRITES + 1) as u64,
        "{} of {sent} lines taken while the writer was stuck",
        taken()
    );
    assert!(db.behind());
    // It waits to be woken, not in a loop: the writer, stuck, wakes no one.
    // (Its first batch may have been gathered while the feed first
    // stopped, and woken it once or twice.)
    let waits = status
        .database_waits
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(waits <= 3, "{waits} waits while the writer was stuck");
    // An operator sees the waits, in the feeds' JSON and in /metrics.
    let addr = inflight::api::serve(
        engine.clone(),
        inflight::api::ApiConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let get = |path: &str| {
        let url = format!("http://{addr}{path}");
        async move { common::api_server::get_text(&url).await }
    };
    let feeds: serde_json::Value = serde_json::from_str(&get("/api/feeds").await.1).unwrap();
    assert_eq!(feeds["feeds"][0]["database_waits"], waits);
    let (_, metrics) = get("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "inflight_feed_database_waits_total{{feed=\"0\"}} {waits}\n"
        )),
        "{metrics}"
    );
    holder.execute_batch("COMMIT").unwrap();
    polled_until(Duration::from_secs(30), "every line taken", || {
        taken() == sent
    })
    .await;
    flushed(&db).await;
    assert_eq!(db.health().dropped(), 0, "pacing drops nothing");
    assert_eq!(db.health().failures(), 0);
    let stored: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM transcripts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored as u64, sent, "every line is on file");
    opened.db.close(Duration::from_secs(5));
}
