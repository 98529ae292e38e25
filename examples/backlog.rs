//! Backlog harness: one session says `--lines` lines at once to a real
//! OpenAI-compatible model server; how long until its summary covers the
//! last line, and how much of the server's time went to calls that gave
//! nothing (refused, dropped, empty, timed out).
//!
//! ```sh
//! python -m llama_cpp.server --model "$GGUF" --n_ctx 2048 --port 8089 &
//! cargo run --release --example backlog -- --url http://127.0.0.1:8089 --model smollm2
//! ```
//!
//! Two passes, in one run, on the same server and lines: the window
//! learnt by inflight itself (the defaults), and the window told with
//! `--llm-context` (the baseline: what a user who knew it would set).
//! Everything else is inflight's defaults; only the summary runs (a small
//! model's mind maps fail on their own merits, which is not what this
//! measures).
//!
//! Reported, one JSON line a pass:
//! - `cover_s`: from the lines' arrival to the summary covering the last;
//! - `calls`, `failed_calls`: calls that reached the backend, and those that
//!   gave no result;
//! - `wasted_share`: the time of failed calls over the time of all calls;
//! - `refused`: failures that were the context window's (sent and refused,
//!   or counted and not sent);
//! - `window`: the window in effect at the end, and where it came from.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use inflight::engine::{Engine, EngineConfig};
use inflight::events::Event;
use inflight::llm::http::AnswerLimits;
use inflight::llm::openai::OpenAiBackend;
use inflight::llm::{
    Backend, BackendInfo, BoxFuture, LlmError, LlmErrorKind, LlmRequest, LlmResponse, Progress,
};
use inflight::model::{Operation, SessionId, Transcript};
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    url: String,
    #[arg(long, default_value = "smollm2")]
    model: String,
    #[arg(long, default_value_t = 2000)]
    lines: u64,
    /// The window told in the baseline pass (tokens).
    #[arg(long, default_value_t = 2048)]
    context: u32,
    /// Give up on a pass after this many seconds.
    #[arg(long, default_value_t = 3600)]
    limit: u64,
}

/// The time of each call, and how it ended.
#[derive(Default)]
struct Calls {
    ok: Vec<Duration>,
    failed: Vec<Duration>,
    refused: usize,
}

/// Wraps the real backend and times its calls.
struct Timed {
    inner: OpenAiBackend,
    calls: Mutex<Calls>,
}

impl Backend for Timed {
    fn info(&self) -> BackendInfo {
        self.inner.info()
    }

    fn prompt_room(&self, op: Operation) -> Option<usize> {
        self.inner.prompt_room(op)
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            let started = Instant::now();
            let answer = self.inner.generate(request, progress).await;
            let took = started.elapsed();
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            match &answer {
                Ok(_) => calls.ok.push(took),
                Err(e) => {
                    if matches!(e.kind, LlmErrorKind::ContextExceeded { .. }) {
                        calls.refused += 1;
                    }
                    calls.failed.push(took);
                }
            }
            answer
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        self.inner.check()
    }
}

/// Lines as a meeting says them: 8 to 30 words of a small vocabulary.
fn line(rng: &mut fastrand::Rng, seq: u64) -> Transcript {
    const WORDS: &[&str] = &[
        "budget",
        "release",
        "deadline",
        "customer",
        "latency",
        "rollout",
        "incident",
        "database",
        "migration",
        "roadmap",
        "hiring",
        "design",
        "review",
        "metrics",
        "outage",
        "backlog",
        "sprint",
        "priority",
        "launch",
        "pricing",
        "contract",
        "security",
    ];
    let n = rng.usize(8..=30);
    let words: Vec<&str> = (0..n).map(|_| WORDS[rng.usize(..WORDS.len())]).collect();
    Transcript {
        session_id: SessionId::parse("backlog").unwrap_or_else(|_| unreachable!()),
        seq: Some(seq),
        text: format!("{}.", words.join(" ")),
        speaker: Some(format!("spk{}", seq % 3)),
        start: Some(seq as f64 * 3.0),
        end: Some(seq as f64 * 3.0 + 2.5),
        is_final: true,
        kind: None,
    }
}

async fn pass(args: &Args, told: Option<u32>) -> Result<serde_json::Value, String> {
    let inner = OpenAiBackend::new(&args.url, &args.model, None, Default::default())?.with_limits(
        AnswerLimits {
            context: told,
            ..Default::default()
        },
    );
    let backend = Arc::new(Timed {
        inner,
        calls: Mutex::default(),
    });
    backend.check().await?;
    let config = EngineConfig {
        automatic_ops: vec![Operation::SUMMARY],
        ..Default::default()
    };
    let engine = Engine::new(config, backend.clone());
    let mut events = engine.subscribe();
    let session = SessionId::parse("backlog").map_err(|e| e.to_string())?;
    let mut rng = fastrand::Rng::with_seed(7);
    let started = Instant::now();
    for seq in 1..=args.lines {
        engine.ingest(line(&mut rng, seq), None);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.limit);
    let covered = || {
        engine
            .result(&session, Operation::SUMMARY)
            .is_some_and(|r| r.covered_generation == args.lines)
    };
    while !covered() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(Event::ResultReady { .. })) | Ok(Ok(_)) | Ok(Err(_)) => {}
            Err(_) => return Err(format!("not covered within {} s", args.limit)),
        }
    }
    let cover = started.elapsed();
    let calls = backend.calls.lock().unwrap_or_else(|e| e.into_inner());
    let sum = |d: &[Duration]| d.iter().sum::<Duration>().as_secs_f64();
    let (ok, failed) = (sum(&calls.ok), sum(&calls.failed));
    let info = backend.info();
    Ok(json!({
        "window": if told.is_some() { "told" } else { "learnt" },
        "lines": args.lines,
        "cover_s": (cover.as_secs_f64() * 10.0).round() / 10.0,
        "calls": calls.ok.len() + calls.failed.len(),
        "failed_calls": calls.failed.len(),
        "refused": calls.refused,
        "call_s": ((ok + failed) * 10.0).round() / 10.0,
        "wasted_s": (failed * 10.0).round() / 10.0,
        "wasted_share": if ok + failed > 0.0 { ((failed / (ok + failed)) * 1000.0).round() / 1000.0 } else { 0.0 },
        "context": info.context,
    }))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    // The engine's log on stderr, as `serve` writes it (RUST_LOG=info).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    for told in [None, Some(args.context)] {
        println!("{}", pass(&args, told).await?);
    }
    Ok(())
}
