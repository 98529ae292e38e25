//! Overload harness: more demand than the LLM can serve, and how fairly and
//! freshly inflight spends what it has.
//!
//! ```sh
//! cargo run --release --example overload -- --sessions 200 --permits 4 --latency 0.5 --seconds 120
//! ```
//!
//! Every session gets a final transcript every `--every` seconds (starts
//! staggered) for `--seconds`; then the feed stops and the engine drains.
//! The LLM answers after a fixed latency. The run is simulated on tokio's
//! paused clock: the figures are the scheduler's, exact and repeatable,
//! whatever the machine is doing (no wall-clock time passes).
//!
//! Reported, as one JSON line:
//! - `killed_after_start`: calls that started and were then timed out or
//!   cancelled (LLM time thrown away);
//! - `max_lag_s`: the longest any session waited, from its oldest
//!   transcript not covered yet to the summary that covered it;
//! - `ideal_round_robin_lag_s`: the same for a perfect round robin over the
//!   sessions: `latency × (sessions / permits + 1)`; `lag_ratio` compares;
//! - `jain_fairness`: Jain's index of LLM time per session (1 is equal);
//! - `stale_after_drain`: sessions whose newest transcript no summary covers
//!   once the feed has ended and the runs have finished;
//! - `freshness_error_median` (and p90): every second, each session's
//!   estimate of when its summary will next cover what it has said ("fresh
//!   in ~12s") is noted, then compared with when a result did: the error
//!   as a share of the wait that really came.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use inflight::engine::freshness::Freshness;
use inflight::engine::{Engine, EngineConfig};
use inflight::events::{Event, Outcome};
use inflight::llm::{
    Backend, BackendInfo, BoxFuture, LlmError, LlmRequest, LlmResponse, Progress, Usage,
};
use inflight::model::{Operation, SessionId, Transcript};
use inflight::state::StateConfig;
use serde_json::json;
use tokio::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    #[arg(long, default_value_t = 4)]
    permits: usize,
    /// LLM latency in seconds.
    #[arg(long, default_value_t = 0.5)]
    latency: f64,
    /// Seconds between two transcripts of one session.
    #[arg(long, default_value_t = 1.0)]
    every: f64,
    /// How long the feed speaks, in seconds.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// `--op-timeout` in seconds.
    #[arg(long, default_value_t = 5.0)]
    op_timeout: f64,
}

/// Answers after a fixed latency; adds up each session's LLM time.
struct Timed {
    latency: Duration,
    busy: Mutex<HashMap<String, Duration>>,
}

impl Backend for Timed {
    fn info(&self) -> BackendInfo {
        BackendInfo::simulated("timed", "fixed latency")
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        _: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            let started = Instant::now();
            // Counted even when the call is dropped half way: time spent.
            struct Spent<'a>(&'a Timed, String, Instant);
            impl Drop for Spent<'_> {
                fn drop(&mut self) {
                    let mut busy = self.0.busy.lock().unwrap_or_else(|e| e.into_inner());
                    *busy.entry(std::mem::take(&mut self.1)).or_default() += self.2.elapsed();
                }
            }
            let _spent = Spent(self, request.session.as_str().to_string(), started);
            tokio::time::sleep(self.latency).await;
            Ok(LlmResponse {
                text: "ok".into(),
                model: "timed".into(),
                usage: Usage::default(),
                truncated: false,
            })
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let report = runtime.block_on(run(&args))?;
    println!("{report}");
    Ok(())
}

async fn run(args: &Args) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let latency = Duration::from_secs_f64(args.latency);
    let backend = Arc::new(Timed {
        latency,
        busy: Mutex::new(HashMap::new()),
    });
    let config = EngineConfig {
        state: StateConfig {
            op_timeout: Duration::from_secs_f64(args.op_timeout),
            ..Default::default()
        },
        llm_concurrency: args.permits,
        automatic_ops: vec![Operation::SUMMARY],
        ..Default::default()
    };
    let engine = Engine::new(config, backend.clone());
    let mut events = engine.subscribe();
    let ids: Vec<SessionId> = (0..args.sessions)
        .map(|i| SessionId::parse(&format!("s{i:04}")))
        .collect::<Result<_, _>>()?;

    // When each generation of each session was said.
    let said: Arc<Mutex<HashMap<SessionId, Vec<Instant>>>> = Default::default();
    let start = Instant::now();
    let every = Duration::from_secs_f64(args.every);
    let end = start + Duration::from_secs(args.seconds);
    let feed = {
        let (engine, ids, said) = (engine.clone(), ids.clone(), said.clone());
        let n = ids.len() as u32;
        tokio::spawn(async move {
            // One tick per session per `every`, spread evenly over it.
            let step = every / n.max(1);
            let mut seq = 0u64;
            let mut tick = tokio::time::interval(step);
            'feed: loop {
                seq += 1;
                for id in &ids {
                    tick.tick().await;
                    if Instant::now() >= end {
                        break 'feed;
                    }
                    said.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(id.clone())
                        .or_default()
                        .push(Instant::now());
                    engine.ingest(
                        Transcript {
                            session_id: id.clone(),
                            seq: Some(seq),
                            text: format!("line {seq}"),
                            speaker: None,
                            start: None,
                            end: None,
                            is_final: true,
                            kind: None,
                        },
                        None,
                    );
                }
            }
        })
    };

    // Estimates noted: per session, (generation to cover, noted at, fresh
    // by); and the errors once they came true.
    let mut estimates: HashMap<SessionId, Vec<(u64, Instant, Instant)>> = HashMap::new();
    let mut errors: Vec<f64> = Vec::new();
    let mut sample = tokio::time::interval(Duration::from_secs(1));
    let mut covered: HashMap<SessionId, u64> = HashMap::new();
    let mut max_lag = Duration::ZERO;
    let mut killed = 0u64;
    let mut calls = 0u64;
    let mut feed = Some(feed);
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            done = async { feed.as_mut().expect("polled only while set").await }, if feed.is_some() => {
                done?;
                feed = None;
                continue;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)), if feed.is_none() => {
                if engine.is_idle() {
                    break;
                }
                continue;
            }
            _ = sample.tick() => {
                let now = Instant::now();
                for row in engine.snapshot().sessions {
                    if let Freshness::In(wait) = row.op(Operation::SUMMARY).fresh {
                        estimates.entry(row.id.clone()).or_default().push((row.transcripts, now, now + wait));
                    }
                }
                continue;
            }
        };
        match event {
            Ok(Event::ResultReady {
                session,
                covered_generation,
                ..
            }) => {
                let before = covered
                    .insert(session.clone(), covered_generation)
                    .unwrap_or(0);
                if let Some(noted) = estimates.get_mut(&session) {
                    let now = Instant::now();
                    noted.retain(|(generation, at, by)| {
                        if *generation > covered_generation {
                            return true;
                        }
                        let waited = now.saturating_duration_since(*at).as_secs_f64();
                        if waited > 0.0 {
                            let off = (now.saturating_duration_since(*by).as_secs_f64()
                                - by.saturating_duration_since(now).as_secs_f64())
                            .abs();
                            errors.push(off / waited);
                        }
                        false
                    });
                }
                let said = said.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(at) = said
                    .get(&session)
                    .and_then(|times| times.get(before as usize))
                {
                    max_lag = max_lag.max(at.elapsed());
                }
            }
            Ok(Event::OpStarted { .. }) => calls += 1,
            Ok(Event::OpFinished {
                outcome: Outcome::TimedOut | Outcome::Cancelled,
                ..
            }) => killed += 1,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                return Err(format!("the harness fell {n} events behind").into());
            }
            Err(e) => return Err(e.into()),
        }
    }

    let stale = ids
        .iter()
        .filter(|id| {
            engine
                .result(id, Operation::SUMMARY)
                .map_or(0, |r| r.covered_generation)
                < engine.generation(id)
        })
        .count();
    let busy = backend.busy.lock().unwrap_or_else(|e| e.into_inner());
    let times: Vec<f64> = ids
        .iter()
        .map(|id| busy.get(id.as_str()).map_or(0.0, Duration::as_secs_f64))
        .collect();
    let sum: f64 = times.iter().sum();
    let squares: f64 = times.iter().map(|t| t * t).sum();
    let jain = if squares > 0.0 {
        sum * sum / (times.len() as f64 * squares)
    } else {
        0.0
    };
    errors.sort_by(f64::total_cmp);
    let share = |q: f64| {
        errors
            .get(((errors.len() as f64 * q) as usize).min(errors.len().saturating_sub(1)))
            .copied()
    };
    let ideal = args.latency * (args.sessions as f64 / args.permits as f64 + 1.0);
    let demand = args.sessions as f64 / args.every;
    let capacity = args.permits as f64 / args.latency;
    Ok(json!({
        "sessions": args.sessions,
        "permits": args.permits,
        "latency_s": args.latency,
        "demand_over_capacity": demand / capacity,
        "feed_seconds": args.seconds,
        "calls": calls,
        "killed_after_start": killed,
        "max_lag_s": max_lag.as_secs_f64(),
        "ideal_round_robin_lag_s": ideal,
        "lag_ratio": max_lag.as_secs_f64() / ideal,
        "jain_fairness": jain,
        "stale_after_drain": stale,
        "freshness_estimates": errors.len(),
        "freshness_error_median": share(0.5),
        "freshness_error_p90": share(0.9),
        "simulated_seconds": start.elapsed().as_secs_f64(),
    }))
}
