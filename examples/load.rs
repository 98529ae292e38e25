//! Load harness: one feed, one policy, one JSON line of results.
//!
//! ```sh
//! # against any native-protocol feed (for example the Python reference feed)
//! cargo run --release --example load -- --feed ws://127.0.0.1:9100 --policy coalesce --latency 0.5
//! # against its own replay server: S sessions × N transcripts at R per second per session (0: unthrottled)
//! cargo run --release --example load -- --sessions 100 --count 1000 --rate 0 --policy coalesce --latency 0.05
//! ```
//!
//! Policies: `coalesce` and `skip` run the real engine with an LLM that only
//! waits its fixed latency (as the Python baseline's does), behind a probe
//! that counts calls and overlap;
//! `naive` models what admission control prevents: every request becomes an
//! LLM call queued behind the same permit cap;
//! `bare` is the ceiling for ingest: a read-and-parse loop over the same
//! feed (tokio-tungstenite, serde_json into borrowed fields), no engine.
//!
//! Reported: transcripts/s ingested (first to last message) and, with a
//! database, on disk (first message to the last line committed), LLM calls,
//! skipped requests, the most calls open at once for one (session, op), the
//! most runs waiting in the permits' queue at once (sampled every 10 ms), stale
//! sessions at the end (newest transcript not covered by a summary),
//! freshness lag (newest transcript to the summary covering it), peak RSS.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use inflight::engine::{Engine, EngineConfig, FeedState};
use inflight::feed::adapters::FeedFormat;
use inflight::feed::meetings::Meeting;
use inflight::feed::protocol::{self, FeedMessage};
use inflight::feed::{client, replay};
use inflight::llm::probe::ConcurrencyProbe;
use inflight::llm::{Backend, BackendInfo, BoxFuture, LlmError, LlmRequest, LlmResponse, Progress};
use inflight::model::{Operation, SessionId, Transcript};
use inflight::state::{Policy, StateConfig};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Naive,
    Skip,
    Coalesce,
    Bare,
}

#[derive(Debug, Parser)]
struct Args {
    /// A native-protocol feed; without it, the harness serves its own.
    #[arg(long)]
    feed: Option<String>,
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    #[arg(long, default_value_t = 200)]
    count: u64,
    /// Transcripts per second per session; 0 is unthrottled.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, value_enum, default_value = "coalesce")]
    policy: Mode,
    /// Seconds per LLM call.
    #[arg(long, default_value_t = 0.5)]
    latency: f64,
    /// LLM calls at once (high by default, like the original system, which has no cap).
    #[arg(long, default_value_t = 1024)]
    llm_concurrency: usize,
    /// `--min-interval` in seconds: a follow-up waits this long after the
    /// previous run of its (session, op) started.
    #[arg(long, default_value_t = 0.0)]
    min_interval: f64,
    /// Also follow freshness during the run, not only at the end: the
    /// longest any transcript waited for a summary to cover it
    /// (`max_stale_s`). Reads every event, so leave it off for ingest runs.
    #[arg(long)]
    lag_over_time: bool,
    /// Write everything to a SQLite file here (deleted first), as `serve`
    /// does; reports the bytes it took.
    #[arg(long)]
    db: Option<std::path::PathBuf>,
    /// Record everything to this file (deleted first), as `--record` does.
    #[arg(long)]
    record: Option<std::path::PathBuf>,
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn own_meetings(args: &Args) -> Vec<Meeting> {
    let spacing = if args.rate > 0.0 {
        1.0 / args.rate
    } else {
        0.0
    };
    (0..args.sessions)
        .map(|i| {
            let session = SessionId::parse(&format!("sess-{i:05}")).expect("valid id");
            let lines = (1..=args.count)
                .map(|seq| Transcript {
                    session_id: session.clone(),
                    seq: Some(seq),
                    text: format!(
                        "Point {seq}: the budget review moves the release and the hiring plan."
                    ),
                    speaker: Some(format!("spk{}", seq % 3)),
                    start: Some(seq as f64 * spacing),
                    end: Some(seq as f64 * spacing),
                    is_final: true,
                    kind: None,
                })
                .collect();
            Meeting { session, lines }
        })
        .collect()
}

fn main() -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("no runtime: {e}"))?
        .block_on(run())
}

async fn run() -> Result<(), String> {
    let args = Args::parse();
    let shutdown = CancellationToken::new();
    let url = match &args.feed {
        Some(url) => url.clone(),
        None => {
            let options = replay::ReplayOptions {
                speed: if args.rate > 0.0 { 1.0 } else { 0.0 },
                partials: false,
                ..Default::default()
            };
            let addr = replay::start(
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                own_meetings(&args),
                options,
                shutdown.clone(),
            )
            .await
            .map_err(|e| e.to_string())?;
            format!("ws://{addr}/")
        }
    };
    let latency = Duration::from_secs_f64(args.latency);
    let report = match args.policy {
        Mode::Naive => naive(&url, latency, args.llm_concurrency).await?,
        Mode::Bare => bare(&url).await?,
        Mode::Skip => engine_run(&url, latency, &args, Policy::Skip, &shutdown).await,
        Mode::Coalesce => engine_run(&url, latency, &args, Policy::Coalesce, &shutdown).await,
    };
    let mut report = report;
    report["peak_rss_mb"] = json!(peak_rss_mb().map(|m| (m * 10.0).round() / 10.0));
    println!("{report}");
    shutdown.cancel();
    Ok(())
}

/// An LLM that takes `latency` and answers a fixed text: the harness
/// measures scheduling, not text processing.
struct Sleeper(Duration);

impl Backend for Sleeper {
    fn info(&self) -> BackendInfo {
        BackendInfo::simulated("sleeper", "fixed latency")
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        _: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            let text = if request.op == Operation::MIND_MAP {
                r#"{"root": {"label": "ok", "children": []}}"#.to_string()
            } else {
                "ok".to_string()
            };
            Ok(LlmResponse {
                text,
                model: "sleeper".into(),
                usage: Default::default(),
                truncated: false,
            })
        })
    }
}

async fn engine_run(
    url: &str,
    latency: Duration,
    args: &Args,
    policy: Policy,
    shutdown: &CancellationToken,
) -> serde_json::Value {
    let probe = ConcurrencyProbe::new(Arc::new(Sleeper(latency)));
    let config = EngineConfig {
        state: StateConfig {
            policy: inflight::ops::OpMap::filled_with(|_| policy),
            op_timeout: Duration::from_secs(600),
            ..Default::default()
        },
        llm_concurrency: args.llm_concurrency,
        min_interval: Duration::from_secs_f64(args.min_interval),
        // Every session of the run is held: on an outside feed the
        // harness does not know how many there are.
        sessions: inflight::engine::SessionLimits {
            max_sessions: if args.feed.is_some() {
                10_000_000
            } else {
                args.sessions.max(1)
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = Engine::new(config, probe.clone());
    let recorder = args.record.as_ref().map(|path| {
        let _ = std::fs::remove_file(path);
        engine
            .events()
            .tap()
            .record_into(inflight::record::RecordOptions {
                path: path.clone(),
                max_bytes: 1 << 34,
                keep: 1,
                max_age: None,
            })
            .expect("the recording opens")
    });
    let db = args.db.as_ref().map(|path| {
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
        let opened = inflight::db::open(
            path,
            inflight::db::RestoreLimits {
                forget_after: Duration::from_secs(1800),
                max_sessions: 10_000_000,
                retain: Duration::from_secs(86_400),
                remember_forgotten: 100_000,
            },
        )
        .expect("the database opens");
        engine.use_db(opened.db.clone());
        opened.db
    });
    let stop_watching = CancellationToken::new();
    let watcher = args.lag_over_time.then(|| {
        tokio::spawn(longest_wait_for_cover(
            engine.subscribe(),
            stop_watching.clone(),
        ))
    });
    let options = client::FeedOptions {
        retries: Some(0),
        format: FeedFormat::Native,
        ..Default::default()
    };
    let feed = client::spawn(engine.clone(), url.to_string(), options, shutdown.clone());
    // The feed's end and, with a database, when the last line it sent is
    // committed: ingest is also told as lines on disk a second (a feed
    // that outruns the writer waits for it; see `db/pace.rs`).
    let db_for_flush = db.clone();
    let fed = tokio::spawn(async move {
        let _ = feed.await;
        let db = db_for_flush?;
        let flushed = tokio::task::spawn_blocking(move || db.flush(Duration::from_secs(60)));
        flushed.await.unwrap_or(false).then(Instant::now)
    });

    // Sample the queue while the feed streams and the runs drain: a count
    // and a state read, not a snapshot, whose copy of every row (8 MB at
    // 10 000 sessions, a hundred times a second) would be measured as the
    // engine's memory.
    let mut max_queued = 0u64;
    let mut connected_at = None;
    let mut sampler = tokio::time::interval(Duration::from_millis(10));
    loop {
        sampler.tick().await;
        max_queued = max_queued.max(engine.permits_waiting() as u64);
        let state = engine.feeds().statuses().first().map(|f| f.state());
        if connected_at.is_none() && state == Some(FeedState::Connected) {
            connected_at = Some(Instant::now());
        }
        if fed.is_finished() && engine.is_idle() {
            break;
        }
    }
    // The engine's own peak, before this harness takes a snapshot of every
    // session and reads their results to report on them (a copy of every
    // row that `serve` makes only when asked, as a `/metrics` scrape).
    let engine_peak = peak_rss_mb();
    let snapshot = engine.snapshot();
    let feed_view = &snapshot.feeds[0];
    let first = connected_at.unwrap_or_else(Instant::now);
    let on_disk_s = fed
        .await
        .ok()
        .flatten()
        .map(|at| at.saturating_duration_since(first).as_secs_f64());
    let ingest_s = feed_view
        .last_message_at
        .map_or(0.0, |t| t.saturating_duration_since(first).as_secs_f64());
    let mut stale = 0;
    let mut lags = Vec::new();
    for row in &snapshot.sessions {
        let result = engine.result(&row.id, Operation::SUMMARY);
        match result {
            Some(r) if r.covered_generation >= row.transcripts => {
                let detail = engine.session_detail(&row.id, 1);
                if let Some(last) = detail.and_then(|d| d.content.recent.last().cloned()) {
                    lags.push(
                        r.finished_at
                            .duration_since(last.received_at)
                            .unwrap_or_default()
                            .as_secs_f64(),
                    );
                }
            }
            _ => stale += 1,
        }
    }
    let mut out = report(
        if policy == Policy::Skip {
            "skip"
        } else {
            "coalesce"
        },
        snapshot.sessions.len(),
        snapshot.totals.transcripts,
        ingest_s,
        probe.calls(),
        snapshot.totals.counts.skipped,
        probe.max_overlap(),
        max_queued,
        stale,
        &lags,
    );
    out["min_interval_s"] = json!(args.min_interval);
    out["peak_rss_before_report_mb"] = json!(engine_peak.map(|m| (m * 10.0).round() / 10.0));
    if let Some(recorder) = &recorder {
        let lost = recorder.lost();
        recorder.close(Duration::from_secs(60));
        out["policy"] = json!("coalesce+record");
        out["recorded"] = json!(recorder.written());
        out["record_dropped"] = json!(lost);
    }
    if let (Some(db), Some(path)) = (db, &args.db) {
        db.close(Duration::from_secs(60));
        let bytes: u64 = ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let mut file = path.as_os_str().to_owned();
                file.push(suffix);
                std::fs::metadata(file).ok().map(|m| m.len())
            })
            .sum();
        out["policy"] = json!("coalesce+db");
        out["db_bytes"] = json!(bytes);
        out["db_dropped"] = json!(engine.db().map(|d| d.health().dropped()));
        if let Some(seconds) = on_disk_s.filter(|s| *s > 0.0) {
            out["on_disk_seconds"] = json!((seconds * 1000.0).round() / 1000.0);
            let total = snapshot.totals.transcripts as f64;
            out["on_disk_per_s"] = json!((total / seconds).round());
        }
    }
    if let Some(watcher) = watcher {
        stop_watching.cancel();
        out["max_stale_s"] = json!(watcher.await.ok().map(|s| (s * 1000.0).round() / 1000.0));
    }
    out
}

/// The longest any final transcript waited, from its arrival to the
/// summary that covered it, over the whole run.
async fn longest_wait_for_cover(
    mut events: tokio::sync::broadcast::Receiver<inflight::events::Event>,
    stop: CancellationToken,
) -> f64 {
    use inflight::events::Event;
    let mut arrived: HashMap<SessionId, Vec<Instant>> = HashMap::new();
    let mut covered: HashMap<SessionId, u64> = HashMap::new();
    let mut longest = Duration::ZERO;
    loop {
        // Events first: stop only once every event sent has been read.
        let event = tokio::select! {
            biased;
            event = events.recv() => event,
            _ = stop.cancelled() => return longest.as_secs_f64(),
        };
        match event {
            Ok(Event::TranscriptReceived {
                session,
                is_final: true,
                ..
            }) => arrived.entry(session).or_default().push(Instant::now()),
            Ok(Event::ResultReady {
                session,
                op: Operation::SUMMARY,
                covered_generation,
                ..
            }) => {
                let before = covered
                    .insert(session.clone(), covered_generation)
                    .unwrap_or(0);
                if let Some(at) = arrived
                    .get(&session)
                    .and_then(|times| times.get(before as usize))
                {
                    longest = longest.max(at.elapsed());
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return f64::NAN,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return longest.as_secs_f64(),
        }
    }
}

/// The ceiling: read every frame and parse it, as cheaply as serde allows,
/// and nothing else.
async fn bare(url: &str) -> Result<serde_json::Value, String> {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        session_id: Option<&'a str>,
        seq: Option<u64>,
        #[serde(borrow)]
        text: Option<std::borrow::Cow<'a, str>>,
        is_final: Option<bool>,
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    // As every client does: a feed streams once it has the hello.
    futures_util::SinkExt::send(
        &mut socket,
        tokio_tungstenite::tungstenite::Message::text(r#"{"type":"hello","resume":{}}"#),
    )
    .await
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut last = started;
    let mut transcripts = 0u64;
    let mut sessions = std::collections::HashSet::new();
    while let Some(Ok(message)) = socket.next().await {
        let Ok(text) = message.to_text() else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Frame>(text) else {
            continue;
        };
        if frame.kind == "transcript" && frame.is_final != Some(false) {
            transcripts += 1;
            last = Instant::now();
            if let Some(id) = frame.session_id
                && !sessions.contains(id)
            {
                sessions.insert(id.to_string());
            }
        }
    }
    let ingest_s = last.saturating_duration_since(started).as_secs_f64();
    Ok(json!({
        "policy": "bare",
        "sessions": sessions.len(),
        "transcripts": transcripts,
        "ingest_seconds": (ingest_s * 1000.0).round() / 1000.0,
        "transcripts_per_s": if ingest_s > 0.0 { Some((transcripts as f64 / ingest_s).round()) } else { None },
    }))
}

#[allow(clippy::too_many_arguments)]
fn report(
    policy: &str,
    sessions: usize,
    transcripts: u64,
    ingest_s: f64,
    calls: u64,
    skipped: u64,
    overlap: usize,
    max_queued: u64,
    stale: usize,
    lags: &[f64],
) -> serde_json::Value {
    let max_lag = lags
        .iter()
        .copied()
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let mean_lag = (!lags.is_empty()).then(|| lags.iter().sum::<f64>() / lags.len() as f64);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "policy": policy,
        "sessions": sessions,
        "transcripts": transcripts,
        "ingest_seconds": round(ingest_s),
        "transcripts_per_s": if ingest_s > 0.0 { Some((transcripts as f64 / ingest_s).round()) } else { None },
        "llm_calls": calls,
        "skipped": skipped,
        "max_concurrent_per_session_op": overlap,
        "max_queued": max_queued,
        "stale_sessions": stale,
        "max_fresh_lag_s": max_lag.map(round),
        "mean_fresh_lag_s": mean_lag.map(round),
    })
}

/// Every final transcript asks for both operations; every request runs,
/// queued behind the permit cap. Nothing is skipped and nothing coalesced.
async fn naive(url: &str, latency: Duration, cap: usize) -> Result<serde_json::Value, String> {
    struct Session {
        latest: u64,
        latest_at: SystemTime,
        covered: u64,
        covered_at: Option<SystemTime>,
    }
    let sessions: Arc<Mutex<HashMap<SessionId, Session>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(cap));
    let (queued, max_queued) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
    let probe = ConcurrencyProbe::new(Arc::new(Sleeper(latency)));
    let mut tasks = Vec::new();
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut last_message = started;
    let mut transcripts = 0u64;
    while let Some(Ok(message)) = socket.next().await {
        let Ok(text) = message.to_text() else {
            continue;
        };
        last_message = Instant::now();
        let Ok(FeedMessage::Transcript { transcript, .. }) = protocol::parse(text) else {
            continue;
        };
        if !transcript.is_final {
            continue;
        }
        transcripts += 1;
        let session = transcript.session_id.clone();
        let generation = {
            let mut all = sessions.lock().unwrap_or_else(|e| e.into_inner());
            let entry = all.entry(session.clone()).or_insert(Session {
                latest: 0,
                latest_at: SystemTime::now(),
                covered: 0,
                covered_at: None,
            });
            entry.latest += 1;
            entry.latest_at = SystemTime::now();
            entry.latest
        };
        for op in inflight::ops::BUILT_IN {
            let (sessions, permits, queued, max_queued, probe, session) = (
                sessions.clone(),
                permits.clone(),
                queued.clone(),
                max_queued.clone(),
                probe.clone(),
                session.clone(),
            );
            let now_queued = queued.fetch_add(1, Ordering::SeqCst) + 1;
            max_queued.fetch_max(now_queued, Ordering::SeqCst);
            tasks.push(tokio::spawn(async move {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                queued.fetch_sub(1, Ordering::SeqCst);
                let request = LlmRequest::new(session.clone(), op, Vec::new());
                let _ = probe.generate(request, &Progress::default()).await;
                if op == Operation::SUMMARY {
                    let mut all = sessions.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(s) = all.get_mut(&session)
                        && generation >= s.covered
                    {
                        s.covered = generation;
                        s.covered_at = Some(SystemTime::now());
                    }
                }
            }));
        }
    }
    let ingest_s = last_message.duration_since(started).as_secs_f64();
    for task in tasks {
        let _ = task.await;
    }
    let all = sessions.lock().unwrap_or_else(|e| e.into_inner());
    let stale = all.values().filter(|s| s.covered < s.latest).count();
    let lags: Vec<f64> = all
        .values()
        .filter(|s| s.covered >= s.latest)
        .filter_map(|s| {
            s.covered_at
                .and_then(|at| at.duration_since(s.latest_at).ok())
        })
        .map(|d| d.as_secs_f64())
        .collect();
    let overlap = probe.max_overlap();
    Ok(report(
        "naive",
        all.len(),
        transcripts,
        ingest_s,
        probe.calls(),
        0,
        overlap,
        max_queued.load(Ordering::SeqCst).max(0) as u64,
        stale,
        &lags,
    ))
}
