//! What sharing the work through Redis costs and keeps, against one
//! instance alone, measured in the same run.
//!
//! ```sh
//! cargo run --release --example cluster_bench
//! ```
//!
//! Starts its own `redis-server` (Debian's package) on a free loopback
//! port, persistence off, and prints one JSON line per phase:
//! - `admissions`: admissions a second (a start and its finish), by the
//!   state manager alone (no Redis: the baseline), through Redis from one
//!   instance, and from three at once;
//! - `llm_calls`: the LLM calls one engine makes on a feed, against three
//!   engines sharing it through Redis, each hearing the same feed (mirrored);
//!   with the most calls of one (session, op) ever open at once;
//! - `takeover`: after the holder of a run dies without a word (its runtime
//!   dropped mid-call, as `kill -9` would), how long until another
//!   instance has the result, for several lease TTLs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use inflight::cluster::{Cluster, ClusterConfig, Ending, Start};
use inflight::engine::{Engine, EngineConfig};
use inflight::events::{EventBus, Outcome};
use inflight::llm::builtin::BuiltinBackend;
use inflight::llm::probe::ConcurrencyProbe;
use inflight::llm::{Backend, LatencyRange};
use inflight::model::{Operation, SessionId, Transcript};
use inflight::state::{Admission, ProcessingStateManager, StateConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Admissions per measurement through Redis.
    #[arg(long, default_value_t = 20_000)]
    admissions: u64,
    /// Starts in flight at once per instance.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Sessions and lines each on the mirrored feed.
    #[arg(long, default_value_t = 12)]
    sessions: usize,
    #[arg(long, default_value_t = 30)]
    lines: u64,
    /// Time between two lines of a session.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    every: Duration,
    /// How much later each instance hears a line than the one before it
    /// (mirrored feeds never arrive at once).
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    skew: Duration,
    /// Leave the takeover phase out.
    #[arg(long)]
    no_takeover: bool,
    /// The simulated LLM call's time.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    call: Duration,
}

/// The tests' own `redis-server` starter: a free loopback port,
/// persistence off, stopped when dropped; installed first when missing.
#[path = "../tests/integration/common/redis_server.rs"]
mod redis_server;
#[path = "../tests/integration/common/test_deps.rs"]
mod test_deps;

use redis_server::RedisServer as Redis;

fn cluster(redis: &Redis, prefix: &str, instance: &str, ttl: Duration) -> Cluster {
    Cluster::connect(ClusterConfig {
        url: redis.url(),
        prefix: prefix.into(),
        lease_ttl: ttl,
        instance: instance.into(),
    })
    .expect("a cluster handle")
}

fn sid(raw: String) -> SessionId {
    SessionId::parse(&raw).expect("a session id")
}

// --- admissions -----------------------------------------------------------

fn local_admissions(n: u64) -> f64 {
    let state = ProcessingStateManager::new(StateConfig::default(), EventBus::new());
    let sessions: Vec<SessionId> = (0..1000).map(|i| sid(format!("s{i}"))).collect();
    let started = Instant::now();
    for i in 0..n {
        let session = &sessions[(i % 1000) as usize];
        if let Admission::Started(guard) = state.try_start(session, Operation::SUMMARY) {
            guard.finish(Outcome::Ok, None, &|| 0);
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn redis_admissions(clusters: &[Cluster], n: u64, concurrency: usize) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, cluster) in clusters.iter().enumerate() {
        for t in 0..concurrency {
            let (cluster, next) = (cluster.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let session = sid(format!("a{c}-{t}"));
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let Ok(Start::Started(lease)) =
                        cluster.try_start(&session, Operation::SUMMARY, 1).await
                    else {
                        panic!("a fresh key was held");
                    };
                    let ending = Ending {
                        covered_generation: 1,
                        outcome: "ok",
                        error: None,
                    };
                    cluster.finish(&lease, ending).await.expect("finish");
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("a task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

// --- LLM calls ---------------------------------------------------------------

/// The builtin backend behind a probe: its calls, and the most ever open
/// at once for one (session, op), across every engine sharing the probe.
fn probe(call: Duration) -> Arc<ConcurrencyProbe> {
    ConcurrencyProbe::new(Arc::new(BuiltinBackend::new(LatencyRange {
        min: call,
        max: call,
    })))
}

/// Enough LLM permits that capacity never decides how many calls are made:
/// only the feed and the coordination do.
const PERMITS: usize = 256;

fn engine(probe: &Arc<ConcurrencyProbe>) -> Engine {
    let backend: Arc<dyn Backend> = probe.clone();
    let config = EngineConfig {
        llm_concurrency: PERMITS,
        ..EngineConfig::default()
    };
    Engine::new(config, backend)
}

fn line(session: &SessionId, seq: u64) -> Transcript {
    Transcript {
        session_id: session.clone(),
        seq: Some(seq),
        text: format!("Line {seq}: we ship on Friday, after the review."),
        speaker: Some("Ana".into()),
        start: None,
        end: None,
        is_final: true,
        kind: None,
    }
}

/// Plays the feed into every engine (each a few ms apart, as mirrored
/// feeds arrive), ends the sessions, and waits until every engine holds
/// every result covering every line.
async fn play(engines: &[Engine], args: &Args) -> Duration {
    let sessions: Vec<SessionId> = (0..args.sessions).map(|i| sid(format!("m{i}"))).collect();
    let started = Instant::now();
    for seq in 1..=args.lines {
        for (e, engine) in engines.iter().enumerate() {
            if e > 0 && !args.skew.is_zero() {
                tokio::time::sleep(args.skew).await;
            }
            for session in &sessions {
                engine.ingest(line(session, seq), None);
            }
        }
        tokio::time::sleep(args.every).await;
    }
    for engine in engines {
        for session in &sessions {
            engine.end_session(session, None);
        }
    }
    let fresh = |engine: &Engine| {
        engine.is_idle()
            && sessions.iter().all(|s| {
                inflight::ops::BUILT_IN.iter().all(|op| {
                    engine
                        .result(s, *op)
                        .is_some_and(|r| r.covered_generation == args.lines)
                })
            })
    };
    while !engines.iter().all(fresh) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

// --- takeover --------------------------------------------------------------

/// One engine on a runtime of its own, so dropping the runtime kills it
/// mid-call without a word, as `kill -9` would.
struct Node {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
}

fn node(redis: &Redis, prefix: &str, name: &str, ttl: Duration, call: Duration) -> Node {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let engine = runtime.block_on(async {
        let engine = engine(&probe(call));
        engine.join_cluster(cluster(redis, prefix, name, ttl));
        tokio::spawn(engine.clone().run_cluster(CancellationToken::new()));
        engine
    });
    Node { runtime, engine }
}

/// Runs outside any runtime: each node has its own.
fn takeover(redis: &Redis, ttl: Duration, call: Duration, round: usize) -> Duration {
    let prefix = format!("takeover{round}:");
    let holder = node(redis, &prefix, "holder", ttl, call);
    let other = node(redis, &prefix, "other", ttl, call);
    let session = sid("t1".into());
    let holds = |name: &str| {
        other.runtime.block_on(async {
            let watch = cluster(redis, &prefix, "watch", ttl);
            matches!(watch.look(&session, Operation::SUMMARY).await, Ok(l) if l.holder.as_ref().is_some_and(|(h, _)| h.instance == name))
        })
    };
    holder
        .runtime
        .block_on(async { holder.engine.ingest(line(&session, 1), None) });
    while !holds("holder") {
        std::thread::sleep(Duration::from_millis(5));
    }
    other
        .runtime
        .block_on(async { other.engine.ingest(line(&session, 1), None) });
    // Mid-call, the holder dies.
    std::thread::sleep(call / 4);
    let killed = Instant::now();
    holder.runtime.shutdown_background();
    while other.engine.result(&session, Operation::SUMMARY).is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = killed.elapsed();
    other.runtime.shutdown_background();
    took
}

fn main() {
    let args = Args::parse();
    let redis = Redis::start();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(shared_work(&redis, &args));
    drop(runtime);
    if args.no_takeover {
        return;
    }

    let call = Duration::from_millis(500);
    for (round, ttl) in [1u64, 2, 4].into_iter().enumerate() {
        let ttl = Duration::from_secs(ttl);
        let took = takeover(&redis, ttl, call, round);
        println!(
            "{}",
            serde_json::json!({
                "phase": "takeover",
                "lease_ttl_s": ttl.as_secs_f64(),
                "call_s": call.as_secs_f64(),
                "result_after_kill_s": took.as_secs_f64(),
                "minus_one_call_against_ttl": (took.as_secs_f64() - call.as_secs_f64()) / ttl.as_secs_f64(),
            })
        );
    }
}

async fn shared_work(redis: &Redis, args: &Args) {
    let local = local_admissions(200_000);
    let one = redis_admissions(
        &[cluster(redis, "one:", "a", Duration::from_secs(30))],
        args.admissions,
        args.concurrency,
    )
    .await;
    let three: Vec<Cluster> = ["a", "b", "c"]
        .iter()
        .map(|name| cluster(redis, "three:", name, Duration::from_secs(30)))
        .collect();
    let three = redis_admissions(&three, args.admissions, args.concurrency).await;
    println!(
        "{}",
        serde_json::json!({
            "phase": "admissions",
            "local_per_s": local.round(),
            "redis_one_instance_per_s": one.round(),
            "redis_three_instances_per_s": three.round(),
            "one_against_local": one / local,
        })
    );

    let one = probe(args.call);
    let alone = engine(&one);
    let alone_took = play(std::slice::from_ref(&alone), args).await;
    let three = probe(args.call);
    let stop = CancellationToken::new();
    let engines: Vec<Engine> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let engine = engine(&three);
            engine.join_cluster(cluster(redis, "calls:", name, Duration::from_secs(30)));
            tokio::spawn(engine.clone().run_cluster(stop.clone()));
            engine
        })
        .collect();
    let shared_took = play(&engines, args).await;
    stop.cancel();
    let (one_calls, three_calls) = (one.calls(), three.calls());
    let ran_here: Vec<u64> = engines
        .iter()
        .map(|e| e.cluster_view().map_or(0, |c| c.counts.ran_here))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "phase": "llm_calls",
            "sessions": args.sessions,
            "skew_ms": args.skew.as_secs_f64() * 1e3,
            "lines": args.lines,
            "one_instance_calls": one_calls,
            "three_instances_calls": three_calls,
            "three_against_one": three_calls as f64 / one_calls as f64,
            "calls_per_instance": ran_here,
            "most_open_at_once_one": one.max_overlap(),
            "most_open_at_once_three": three.max_overlap(),
            "one_instance_seconds": alone_took.as_secs_f64(),
            "three_instances_seconds": shared_took.as_secs_f64(),
        })
    );
}
