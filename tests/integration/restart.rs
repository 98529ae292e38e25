//! The real binary killed and started again on one database: `kill -9`
//! five times while a replay feed (which honours `hello` resume) plays,
//! then a clean run to the end. Every session ends holding exactly its
//! transcripts, none twice, with results covering the newest; a clean
//! restart shows the same results and history through the API.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::child;

use child::Logged;

const SESSIONS: usize = 4;
const LINES: u64 = 60;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_inflight")
}

/// A fresh folder of its own.
fn fresh_dir(name: &str) -> PathBuf {
    child::fresh_dir("restart", name)
}

/// Meetings of `LINES` lines, 0.1 s apart: six seconds of replay each.
fn write_meetings(dir: &Path) {
    for s in 0..SESSIONS {
        let id = format!("meet-{s}");
        let lines: Vec<String> = (1..=LINES)
            .map(|seq| {
                serde_json::json!({"type": "transcript", "session_id": id, "seq": seq,
                    "speaker": "ana", "start": seq as f64 * 0.1, "end": seq as f64 * 0.1 + 0.05,
                    "text": format!("{id} line {seq} about the budget and the launch.")})
                .to_string()
            })
            .collect();
        std::fs::write(dir.join(format!("{id}.jsonl")), lines.join("\n") + "\n").unwrap();
    }
}

/// The binary with its log at `info`, uncoloured, read line by line.
fn logged(command: &mut Command) -> Logged {
    Logged::spawn(command.env("RUST_LOG", "info").env("NO_COLOR", "1"))
}

/// `inflight feed` playing the meetings of `dir` (it honours resume), and
/// its URL.
fn replay_feed(dir: &Path) -> (Logged, String) {
    let mut feed = logged(
        Command::new(bin())
            .args(["feed", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir),
    );
    let listening = feed.wait_for("listening");
    let addr = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .expect("the feed's address")
        .to_string();
    (feed, format!("ws://{addr}/"))
}

fn serve(feed: &str, db: &Path) -> Logged {
    let mut serve = logged(
        Command::new(bin())
            .args([
                "serve",
                "--api",
                "127.0.0.1:0",
                "--simulate-latency",
                "50ms",
            ])
            .args(["--feed", feed, "--db"])
            .arg(db),
    );
    serve.wait_for("database open");
    serve
}

fn api_of(serve: &mut Logged) -> String {
    let line = serve.wait_for("API listening");
    let bound = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bound="))
        .expect("the bound address");
    format!("http://{bound}")
}

fn get_text(url: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    inflight::net::install_crypto();
    runtime.block_on(async {
        reqwest::get(url)
            .await
            .expect("the API answers")
            .text()
            .await
            .expect("a body")
    })
}

fn get(url: &str) -> serde_json::Value {
    serde_json::from_str(&get_text(url)).expect("JSON")
}

/// Polls the API until every session holds all its lines, has ended, and
/// both results cover the newest (or panics after a while).
fn wait_until_done(api: &str) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let list = get(&format!("{api}/api/sessions"));
        let sessions = list["sessions"].as_array().cloned().unwrap_or_default();
        let done = sessions.len() == SESSIONS
            && sessions.iter().all(|s| {
                s["transcripts"] == LINES
                    && s["ended"] == true
                    && s["operations"]["summary"]["covered_generation"] == LINES
                    && s["operations"]["mind_map"]["covered_generation"] == LINES
                    && s["operations"]["summary"]["state"] == "idle"
                    && s["operations"]["mind_map"]["state"] == "idle"
            });
        if done {
            return list;
        }
        assert!(Instant::now() < until, "not done in a minute: {list:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_9_five_times_then_every_session_holds_exactly_its_transcripts() {
    let dir = fresh_dir("kill");
    write_meetings(&dir);
    let db = dir.join("inflight.db");
    let (feed, url) = replay_feed(&dir);

    for round in 1..=5 {
        let mut serve = serve(&url, &db);
        // Let it take in and finish some work, then kill it mid-flight.
        serve.wait_for_nth("processing finished", 4 * round);
        serve.kill();
    }

    let mut last = serve(&url, &db);
    let api = api_of(&mut last);
    let list = wait_until_done(&api);
    last.stop();

    let conn = rusqlite::Connection::open(&db).unwrap();
    for s in 0..SESSIONS {
        let id = format!("meet-{s}");
        let (count, seqs, newest): (i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), count(DISTINCT seq), max(generation) FROM transcripts WHERE session = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (count, seqs, newest),
            (LINES as i64, LINES as i64, LINES as i64),
            "{id}: every line once"
        );
        let covered: Vec<i64> = conn
            .prepare("SELECT covered_generation FROM results WHERE session = ?1 ORDER BY op")
            .unwrap()
            .query_map([&id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(covered, [LINES as i64, LINES as i64], "{id}");
    }
    let interrupted: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE outcome = 'interrupted'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        interrupted > 0,
        "five kills mid-flight leave interrupted runs"
    );
    drop(conn);

    // A clean restart shows the same results and history.
    let mut again = serve(&url, &db);
    let api = api_of(&mut again);
    let restored = get(&format!("{api}/api/sessions"));
    for (was, is) in list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(restored["sessions"].as_array().unwrap())
    {
        assert_eq!(was["session_id"], is["session_id"]);
        for op in ["summary", "mind_map"] {
            for field in ["runs", "ok", "covered_generation", "prompt_tokens"] {
                assert_eq!(
                    was["operations"][op][field], is["operations"][op][field],
                    "{} {op} {field}",
                    was["session_id"]
                );
            }
        }
        let id = was["session_id"].as_str().unwrap();
        let before = get(&format!("{api}/api/sessions/{id}"));
        assert_eq!(before["summary"]["covered_generation"], LINES);
    }
    again.stop();
    drop(feed);
}

#[test]
fn a_full_disk_degrades_the_database_and_the_engine_runs_on() {
    use std::os::unix::process::CommandExt;
    let dir = fresh_dir("full");
    write_meetings(&dir);
    let db = dir.join("inflight.db");
    let (feed, url) = replay_feed(&dir);
    let mut command = Command::new(bin());
    command
        .args([
            "serve",
            "--api",
            "127.0.0.1:0",
            "--simulate-latency",
            "50ms",
        ])
        .args(["--feed", &url, "--db"])
        .arg(&db);
    // SAFETY: only async-signal-safe calls between fork and exec. Files
    // may not grow past 100 KiB (as on a full disk), and going past is an
    // error to the writer rather than a signal that kills the process.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 100 * 1024,
                rlim_max: 100 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut serve = logged(&mut command);
    let api = api_of(&mut serve);
    serve.wait_for("cannot write to the database");
    let health = get_text(&format!("{api}/healthz"));
    assert!(health.starts_with("degraded"), "{health}");
    // Memory goes on: every line arrives and is covered.
    let list = wait_until_done(&api);
    assert_eq!(list["sessions"].as_array().unwrap().len(), SESSIONS);
    serve.stop();
    drop(feed);
}
