//! What the operations registry costs on the hot path: ingest with its
//! admissions, with the two built-in operations or with more defined.
//!
//! ```sh
//! cargo run --release --example ops_cost -- --ops 2
//! cargo run --release --example ops_cost -- --ops 8
//! ```
//!
//! One thread ingests `--transcripts` final lines round-robin into
//! `--sessions` sessions of an engine on a current-thread runtime whose
//! runs never get to run (the builtin backend, never polled): every line
//! after a session's first meets busy slots, as an unthrottled feed does
//! against a slow model. So each ingest is the store's append plus one
//! admission per operation (a start or a skip), with their events and
//! statistics. Prints one JSON line: transcripts and admissions a second,
//! the median of `--rounds` rounds.

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use inflight::engine::{Engine, EngineConfig};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::{SessionId, Transcript};
use inflight::ops::{OpDef, OpRegistry, Operation};

#[derive(Debug, Parser)]
struct Args {
    /// Operations defined and run on transcripts (2: the built-ins).
    #[arg(long, default_value_t = 2)]
    ops: usize,
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    #[arg(long, default_value_t = 400_000)]
    transcripts: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn registry(n: usize) -> Result<OpRegistry, String> {
    let mut defs = vec![OpDef::summary(), OpDef::mind_map()];
    for i in defs.len()..n {
        let mut def = OpDef::summary();
        def.op = Operation::named(&format!("extra_{i}")).map_err(|e| e.to_string())?;
        def.key = None;
        defs.push(def);
    }
    defs.truncate(n.max(1));
    Ok(OpRegistry::new(defs))
}

fn round(args: &Args, ids: &[SessionId]) -> f64 {
    let engine = Engine::new(
        EngineConfig::default(),
        Arc::new(BuiltinBackend::new(LatencyRange::ZERO)),
    );
    let started = Instant::now();
    for i in 0..args.transcripts {
        let session = &ids[i % ids.len()];
        engine.ingest(
            Transcript {
                session_id: session.clone(),
                seq: Some((i / ids.len()) as u64 + 1),
                text: "We ship the release on Friday.".into(),
                speaker: Some("ana".into()),
                start: None,
                end: None,
                is_final: true,
                kind: None,
            },
            None,
        );
    }
    args.transcripts as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    inflight::ops::install(registry(args.ops)?);
    let ids: Vec<SessionId> = (0..args.sessions)
        .map(|i| SessionId::parse(&format!("s{i}")).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut rates: Vec<f64> = (0..args.rounds).map(|_| round(&args, &ids)).collect();
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "ops": args.ops,
            "sessions": args.sessions,
            "transcripts": args.transcripts,
            "transcripts_per_s": median.round(),
            "admissions_per_s": (median * args.ops as f64).round(),
            "rounds": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        })
    );
    Ok(())
}
