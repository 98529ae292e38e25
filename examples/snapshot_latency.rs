//! Ingest latency beside snapshots: does a dashboard or API snapshot of
//! many live sessions hold up the ingest path?
//!
//! ```sh
//! cargo run --release --example snapshot_latency -- --sessions 100000
//! ```
//!
//! Fills an engine with `--sessions` live sessions (no automatic runs, so
//! only ingest and snapshots compete), then times `--frames` ingests one by
//! one, twice: alone, and while another thread takes a snapshot every
//! `--every` (200 ms: a dashboard at 5 Hz). Prints one JSON line per phase
//! with the ingest latency's median, p99, p99.9 and maximum in nanoseconds,
//! and the snapshots' own duration.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use inflight::engine::{Engine, EngineConfig, SessionLimits};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::{SessionId, Transcript};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    #[arg(long, default_value_t = 3_000_000)]
    frames: usize,
    /// Time between two snapshots, in milliseconds.
    #[arg(long, default_value_t = 200)]
    every: u64,
}

fn line(session: &SessionId, seq: u64) -> Transcript {
    Transcript {
        session_id: session.clone(),
        seq: Some(seq),
        text: "We ship on Friday, after the review.".into(),
        speaker: Some("spk1".into()),
        start: None,
        end: None,
        is_final: true,
        kind: None,
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Ingests `frames` lines round-robin over the sessions; latencies in ns.
fn ingest(engine: &Engine, sessions: &[SessionId], frames: usize, seq: &mut u64) -> Vec<u64> {
    let mut latencies = Vec::with_capacity(frames);
    for i in 0..frames {
        let session = &sessions[i % sessions.len()];
        *seq += 1;
        let started = Instant::now();
        engine.ingest(line(session, *seq), None);
        latencies.push(started.elapsed().as_nanos() as u64);
    }
    latencies.sort_unstable();
    latencies
}

fn report(phase: &str, latencies: &[u64], snapshots: &[u64]) {
    let snapshot_ms = |p: f64| {
        if snapshots.is_empty() {
            serde_json::Value::Null
        } else {
            (percentile(snapshots, p) as f64 / 1000.0).into()
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "phase": phase,
            "ingest_ns": {
                "p50": percentile(latencies, 0.50),
                "p99": percentile(latencies, 0.99),
                "p999": percentile(latencies, 0.999),
                "max": latencies.last(),
            },
            "snapshots": snapshots.len(),
            "snapshot_ms_p50": snapshot_ms(0.5),
            "snapshot_ms_max": snapshot_ms(1.0),
        })
    );
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let _enter = runtime.enter();
    let config = EngineConfig {
        automatic_ops: Vec::new(),
        sessions: SessionLimits {
            max_sessions: args.sessions,
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = Engine::new(config, Arc::new(BuiltinBackend::new(LatencyRange::ZERO)));
    let sessions: Vec<SessionId> = (0..args.sessions)
        .map(|i| SessionId::parse(&format!("s{i:06}")).expect("a valid id"))
        .collect();
    let mut seq = 0;
    // Every session says something first, so all are live and held.
    ingest(&engine, &sessions, args.sessions, &mut seq);

    let alone = ingest(&engine, &sessions, args.frames, &mut seq);
    report("ingest alone", &alone, &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let snapshotter = {
        let (engine, stop) = (engine.clone(), stop.clone());
        let every = Duration::from_millis(args.every);
        std::thread::spawn(move || {
            let mut took = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let snapshot = engine.snapshot();
                took.push(started.elapsed().as_micros() as u64);
                std::hint::black_box(snapshot);
                std::thread::sleep(every.saturating_sub(started.elapsed()));
            }
            took.sort_unstable();
            took
        })
    };
    let beside = ingest(&engine, &sessions, args.frames, &mut seq);
    stop.store(true, Ordering::Relaxed);
    let snapshots = snapshotter.join().expect("the snapshot thread");
    report("ingest with snapshots", &beside, &snapshots);
}
