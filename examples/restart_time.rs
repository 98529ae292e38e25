//! Restart time: how long from opening a database of many sessions to an
//! engine whose snapshot (what the dashboard draws) holds them all.
//!
//! ```sh
//! cargo run --release --example restart_time -- --sessions 100000 --db /tmp/restart.db
//! ```
//!
//! The file is filled first (each session with `--transcripts` lines, a
//! summary, a mind map and a run of each), closed, then opened again and
//! timed: `open` (checks, migrations, reading back), `restore` (the store
//! and statistics rebuilt), `snapshot` (the first full snapshot). One JSON
//! line, with the file's size.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use inflight::db::{self, RestoreLimits, Write};
use inflight::engine::{Engine, EngineConfig, SessionLimits};
use inflight::events::Outcome;
use inflight::llm::builtin::BuiltinBackend;
use inflight::llm::{LatencyRange, Usage};
use inflight::model::{Operation, SessionId};
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    #[arg(long, default_value_t = 5)]
    transcripts: u64,
    #[arg(long)]
    db: std::path::PathBuf,
}

fn limits(sessions: usize) -> RestoreLimits {
    RestoreLimits {
        forget_after: Duration::from_secs(1800),
        max_sessions: sessions,
        retain: Duration::from_secs(86_400),
        remember_forgotten: 100_000,
    }
}

fn fill(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut file = args.db.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    let opened = db::open(&args.db, limits(args.sessions))?;
    let db = opened.db;
    let mut run_id = 0;
    for i in 0..args.sessions {
        let session = SessionId::parse(&format!("sess-{i:06}"))?;
        for generation in 1..=args.transcripts {
            db.write(Write::Transcript {
                session: session.clone(),
                feed: Some(0),
                generation,
                seq: Some(generation),
                speaker: Some("ana".into()),
                start: Some(generation as f64),
                end: None,
                text: format!("Point {generation}: the budget review moves the release."),
                at: SystemTime::now(),
            });
        }
        for op in inflight::ops::BUILT_IN {
            run_id += 1;
            db.write(Write::RunEnded {
                run_id,
                session: session.clone(),
                op,
                admitted_at: SystemTime::now(),
                follow_up: false,
                outcome: Outcome::Ok,
                duration: Duration::from_millis(900),
                waited: Duration::ZERO,
                error: None,
                covered_generation: Some(args.transcripts),
                usage: Usage::tokens(300, 80),
            });
            db.write(Write::Result {
                session: session.clone(),
                op,
                run_id,
                covered_generation: args.transcripts,
                body: if op == Operation::MIND_MAP {
                    r#"{"root":{"label":"budget","children":[{"label":"release","children":[]}]}}"#
                        .into()
                } else {
                    "Topics: budget, release.\n- ana: the release moves.".into()
                },
                model: "builtin".into(),
                processing: Duration::from_millis(900),
                finished_at: SystemTime::now(),
                usage: Usage::tokens(300, 80),
                truncated: false,
                outbox: Vec::new(),
            });
        }
        // Never let the writer fall behind the channel.
        if i % 5_000 == 4_999 {
            db.flush(Duration::from_secs(120));
        }
    }
    db.close(Duration::from_secs(120));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    fill(&args)?;
    let started = Instant::now();
    let opened = db::open(&args.db, limits(args.sessions))?;
    let open_s = started.elapsed().as_secs_f64();
    let engine = Engine::new(
        EngineConfig {
            sessions: SessionLimits {
                max_sessions: args.sessions,
                ..Default::default()
            },
            ..Default::default()
        },
        Arc::new(BuiltinBackend::new(LatencyRange::ZERO)),
    );
    engine.use_db(opened.db.clone());
    let restored = engine.restore(opened.restored);
    let restore_s = started.elapsed().as_secs_f64() - open_s;
    let snapshot = engine.snapshot();
    let total_s = started.elapsed().as_secs_f64();
    let bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            let mut file = args.db.as_os_str().to_owned();
            file.push(suffix);
            std::fs::metadata(file).ok().map(|m| m.len())
        })
        .sum();
    println!(
        "{}",
        json!({
            "sessions": args.sessions,
            "transcripts_per_session": args.transcripts,
            "restored": restored,
            "in_snapshot": snapshot.sessions.len(),
            "open_s": open_s,
            "restore_s": restore_s,
            "snapshot_s": total_s - open_s - restore_s,
            "total_s": total_s,
            "db_bytes": bytes,
        })
    );
    opened.db.close(Duration::from_secs(10));
    Ok(())
}
