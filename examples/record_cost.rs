//! What recording costs, and how fast a recording replays.
//!
//! ```sh
//! cargo run --release --example record_cost
//! ```
//!
//! **Ingest.** `--transcripts` final transcripts round-robin over
//! `--sessions` sessions, taken in by the engine (`Engine::ingest`, the
//! path every feed ends in) as fast as one task hands them over, to an
//! engine whose runs take 50 ms. Without a recording, and with `--record`
//! to a file in the temp folder; the two alternate for `--rounds` rounds
//! and the medians are reported, with the records the writer dropped.
//!
//! **Replay.** Ten minutes of the demo (its four meetings, played at their
//! own pace and started again under new ids, the builtin model at 2–6 s a
//! call) recorded on a paused clock, then replayed through the engine as
//! `inflight replay --engine` does: recorded seconds per wall second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use inflight::engine::{Engine, EngineConfig, SessionLimits};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::{SessionId, Transcript};
use inflight::record::{RecordOptions, ReplaySettings, read, replay};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 200_000)]
    transcripts: usize,
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Minutes of demo to record for the replay.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
}

fn config(sessions: usize) -> EngineConfig {
    EngineConfig {
        sessions: SessionLimits {
            max_sessions: sessions * 2,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn transcript(i: usize, sessions: usize) -> Transcript {
    Transcript {
        session_id: SessionId::parse(&format!("s{}", i % sessions)).unwrap(),
        seq: Some((i / sessions + 1) as u64),
        text: format!("line {i}: we plan the release and the budget for next quarter."),
        speaker: Some("A".into()),
        start: None,
        end: None,
        is_final: true,
        kind: None,
    }
}

/// One round: the seconds to take every transcript in, and the records
/// dropped (recording only).
async fn ingest_round(args: &Args, record: Option<&std::path::Path>) -> (f64, u64, u64) {
    let config = config(args.sessions);
    let backend = Arc::new(BuiltinBackend::new(LatencyRange::fixed(
        Duration::from_millis(50),
    )));
    let engine = Engine::new(config, backend);
    let recorder = record.map(|path| {
        let _ = std::fs::remove_file(path);
        engine
            .events()
            .tap()
            .record_into(RecordOptions {
                path: path.to_path_buf(),
                max_bytes: 1 << 30,
                keep: 1,
                max_age: None,
            })
            .expect("a recording in the temp folder")
    });
    let lines: Vec<Transcript> = (0..args.transcripts)
        .map(|i| transcript(i, args.sessions))
        .collect();
    let started = Instant::now();
    for line in lines {
        engine.ingest(line, Some(0));
    }
    let took = started.elapsed().as_secs_f64();
    engine.drain(Duration::from_secs(5)).await;
    let (lost, written) = match &recorder {
        Some(recorder) => {
            let lost = recorder.lost();
            recorder.close(Duration::from_secs(30));
            (lost, recorder.written())
        }
        None => (0, 0),
    };
    (took, lost, written)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let path =
        std::env::temp_dir().join(format!("inflight-record-cost-{}.jsonl", std::process::id()));
    let (mut without, mut with, mut lost, mut written) = (Vec::new(), Vec::new(), 0, 0);
    for _ in 0..args.rounds {
        without.push(runtime.block_on(ingest_round(&args, None)).0);
        let (took, dropped, records) = runtime.block_on(ingest_round(&args, Some(&path)));
        with.push(took);
        lost += dropped;
        written += records;
    }
    let (a, b) = (median(without), median(with));
    let per_second = |s: f64| args.transcripts as f64 / s;
    println!(
        "ingest, {} transcripts over {} sessions, median of {} rounds:",
        args.transcripts, args.sessions, args.rounds
    );
    println!("  without --record: {:>10.0}/s", per_second(a));
    println!(
        "  with --record:    {:>10.0}/s ({:.1} % of without; {} records written, {} dropped in all)",
        per_second(b),
        a / b * 100.0,
        written,
        lost
    );
    let _ = std::fs::remove_file(&path);

    let demo =
        std::env::temp_dir().join(format!("inflight-record-demo-{}.jsonl", std::process::id()));
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    paused
        .block_on(inflight::record::sample::record_demo(
            &demo,
            args.minutes * 60,
        ))
        .unwrap();
    let reading = read(&demo).unwrap();
    let bytes = std::fs::metadata(&demo).map(|m| m.len()).unwrap_or(0);
    let replaying = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let started = Instant::now();
    let comparison = replaying.block_on(replay(&reading, &ReplaySettings::default()));
    let wall = started.elapsed().as_secs_f64();
    println!(
        "replay: {:.0} s of demo ({} records, {:.1} MB) in {:.3} s: {:.0} recorded seconds a second; identical: {}, {} runs",
        reading.length_us() as f64 / 1e6,
        reading.records.len(),
        bytes as f64 / 1e6,
        wall,
        reading.length_us() as f64 / 1e6 / wall,
        comparison.identical,
        comparison.replayed.runs
    );
    let _ = std::fs::remove_file(&demo);
}
