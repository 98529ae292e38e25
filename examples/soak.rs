//! Soak harness: weeks of a service compressed into minutes, against the
//! real `inflight serve` binary.
//!
//! ```sh
//! cargo build --release && cargo run --release --example soak -- --minutes 10
//! ```
//!
//! It starts, on loopback:
//! - `--feeds` feed servers that churn `--sessions` sessions over the run,
//!   three lines each; half end with `session_end`, half just go silent (as
//!   Deepgram and crashed feeds do). Every `--chaos-every` one feed's
//!   connection is frozen (no byte moves either way, the socket stays open)
//!   or killed, in turn. Recovery is the time until inflight's next `hello`.
//! - an OpenAI-compatible LLM that serves `--llm-slots` calls at once and
//!   answers 503 past them, as real servers do; it answers most calls in
//!   20–80 ms, and else hangs, streams forever or sends a 5 MB error.
//! - `target/release/inflight serve` with short lifetimes and timeouts.
//!
//! Every `--sample-every` it reads the child's RSS and scrapes `/metrics`,
//! checking that every counter only grew. It prints one JSON line per
//! sample and a summary: RSS spread after warm-up, recovery times, panics
//! seen on the child's stderr, counters that fell.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Response, StatusCode};
use axum::routing::{get, post};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Sessions churned over the whole run (50 a second over ten minutes:
    /// what `--llm-slots` calls at once serve, with a sixth of the calls
    /// held to the 5 s deadline).
    #[arg(long, default_value_t = 30_000)]
    sessions: u64,
    #[arg(long, default_value_t = 4)]
    feeds: usize,
    /// Seconds between two feed faults.
    #[arg(long, default_value_t = 60.0)]
    chaos_every: f64,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 5.0)]
    sample_every: f64,
    /// LLM calls the service makes at once (`--llm-concurrency`).
    #[arg(long, default_value_t = 1024)]
    llm_concurrency: usize,
    /// The service's wait before a failed run's first retry
    /// (`--retry-backoff`), compressed as its other lifetimes are: a
    /// session lives seconds here, and five retries from 2 s wait a minute.
    #[arg(long, default_value = "250ms")]
    retry_backoff: String,
    /// Calls the soak's LLM serves at once; past them it answers 503.
    #[arg(long, default_value_t = 1024)]
    llm_slots: u64,
    /// The binary under test.
    #[arg(long, default_value = "target/release/inflight")]
    binary: String,
}

// ---------------------------------------------------------------- the LLM

/// What the chaotic LLM did, by kind, and the calls it is serving now.
#[derive(Default)]
struct LlmCounts {
    ok: AtomicU64,
    hang: AtomicU64,
    busy: AtomicU64,
    endless: AtomicU64,
    huge: AtomicU64,
    serving: AtomicU64,
}

/// One call the LLM serves, counted until its answer (or its hang, or its
/// endless stream) is dropped.
struct Serving(Arc<LlmCounts>);

impl Serving {
    fn new(counts: &Arc<LlmCounts>) -> Self {
        counts.serving.fetch_add(1, Ordering::Relaxed);
        Self(counts.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers as a server with `slots` calls at once does: past them, 503
/// (as llama.cpp's and vLLM's servers refuse a full queue). Within them,
/// most calls in 20–80 ms; else it hangs, streams forever or sends a 5 MB
/// error.
async fn chat(counts: Arc<LlmCounts>, slots: u64, body: Bytes) -> Response<Body> {
    let serving = Serving::new(&counts);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mind_map = request.get("response_format").is_some();
    let sse = |status: StatusCode, body: Body| {
        Response::builder()
            .status(status)
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap_or_default()
    };
    if counts.serving.load(Ordering::Relaxed) > slots {
        counts.busy.fetch_add(1, Ordering::Relaxed);
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("retry-after", "1")
            .body(Body::from(r#"{"error": "busy"}"#))
            .unwrap_or_default();
    }
    match fastrand::u32(..100) {
        0..=77 => {
            counts.ok.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(fastrand::u64(20..80))).await;
            let content = if mind_map {
                json!({"root": {"label": "Soak", "children": [{"label": "Budget", "children": []}]}})
                    .to_string()
            } else {
                "The team agreed to ship on Friday.".to_string()
            };
            let events = format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({"model": "soak", "choices": [{"delta": {"content": content}}]})
            );
            sse(StatusCode::OK, Body::from(events))
        }
        78..=85 => {
            counts.hang.fetch_add(1, Ordering::Relaxed);
            std::future::pending::<()>().await;
            unreachable!()
        }
        86..=92 => {
            counts.endless.fetch_add(1, Ordering::Relaxed);
            let piece = format!(
                "data: {}\n\n",
                json!({"choices": [{"delta": {"content": "and so on, "}}]})
            );
            // The stream holds the slot for as long as it is read.
            let stream = futures_util::stream::unfold((piece, serving), |state| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Some((Ok::<_, Infallible>(Bytes::from(state.0.clone())), state))
            });
            sse(StatusCode::OK, Body::from_stream(stream))
        }
        _ => {
            counts.huge.fetch_add(1, Ordering::Relaxed);
            let body = format!("{{\"error\": \"{}\"}}", "x".repeat(5 << 20));
            Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Body::from(body))
                .unwrap_or_default()
        }
    }
}

async fn start_llm(counts: Arc<LlmCounts>, slots: u64) -> SocketAddr {
    let app = Router::new()
        .route(
            "/v1/models",
            get(|| async { axum::Json(json!({"data": [{"id": "soak"}]})) }),
        )
        .route(
            "/v1/chat/completions",
            post(move |body: Bytes| chat(counts.clone(), slots, body)),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("LLM binds");
    let addr = listener.local_addr().expect("LLM address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

// ---------------------------------------------------------------- feeds

/// What a feed is told to do to its current connection.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    None,
    Freeze,
    Kill,
}

struct Feed {
    addr: SocketAddr,
    fault: watch::Sender<(u64, Fault)>,
    /// When the last fault was injected, and the recovery times seen.
    recoveries: Arc<Mutex<(Option<Instant>, Vec<f64>)>>,
}

/// A feed server: sessions `f{index}-{n}` appear at `per_second`, each says
/// three lines 100 ms apart; even ones end, odd ones go silent.
async fn start_feed(index: usize, per_second: f64, sent: Arc<AtomicU64>) -> Feed {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("feed binds");
    let addr = listener.local_addr().expect("feed address");
    let (fault, faults) = watch::channel((0u64, Fault::None));
    let recoveries: Arc<Mutex<(Option<Instant>, Vec<f64>)>> =
        Arc::new(Mutex::new((None, Vec::new())));
    let next_session = Arc::new(AtomicU64::new(0));
    let seen = recoveries.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                continue;
            };
            let (mut sink, mut source) = ws.split();
            if source.next().await.is_none() {
                continue; // no hello
            }
            {
                let mut seen = seen.lock().unwrap();
                if let Some(at) = seen.0.take() {
                    seen.1.push(at.elapsed().as_secs_f64());
                }
            }
            let mut faults = faults.clone();
            let handled = faults.borrow_and_update().0;
            let (next_session, sent) = (next_session.clone(), sent.clone());
            // Sessions speaking now: (n, lines said).
            let mut speaking: Vec<(u64, u64)> = Vec::new();
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let due = move |elapsed: f64| (elapsed * per_second) as u64;
            let base = next_session.load(Ordering::Relaxed);
            let fault = loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    changed = faults.changed() => {
                        if changed.is_err() { return; }
                        let (id, fault) = *faults.borrow_and_update();
                        if id != handled { break fault; }
                        continue;
                    }
                    incoming = source.next() => match incoming {
                        Some(Ok(_)) => continue,
                        _ => break Fault::None,
                    },
                }
                // New sessions due since this connection began.
                let target = base + due(started.elapsed().as_secs_f64());
                while next_session.load(Ordering::Relaxed) < target {
                    speaking.push((next_session.fetch_add(1, Ordering::Relaxed), 0));
                }
                let mut frames = Vec::with_capacity(speaking.len() + 1);
                for (n, said) in speaking.iter_mut() {
                    *said += 1;
                    frames.push(json!({"type": "transcript", "session_id": format!("f{index}-{n}"),
                        "seq": *said, "text": format!("Line {said} about the budget and the plan.")}));
                    if *said == 3 && *n % 2 == 0 {
                        frames.push(
                            json!({"type": "session_end", "session_id": format!("f{index}-{n}")}),
                        );
                    }
                }
                speaking.retain(|(_, said)| *said < 3);
                let mut failed = false;
                for frame in frames {
                    if sink.feed(Message::text(frame.to_string())).await.is_err() {
                        failed = true;
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                if failed || sink.flush().await.is_err() {
                    break Fault::None;
                }
            };
            match fault {
                // Hold both halves, read and send nothing, until the client leaves.
                Fault::Freeze => {
                    tokio::spawn(async move {
                        let _held = (sink, source);
                        tokio::time::sleep(Duration::from_secs(600)).await;
                    });
                }
                // Drop both halves: the TCP connection goes away at once.
                Fault::Kill | Fault::None => {}
            }
        }
    });
    Feed {
        addr,
        fault,
        recoveries,
    }
}

// ---------------------------------------------------------------- samples

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `_total` counters of a Prometheus text, by series.
fn counters(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series
                .split('{')
                .next()
                .is_some_and(|n| n.ends_with("_total"))
        })
        .filter_map(|(series, value)| Some((series.to_string(), value.parse().ok()?)))
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn spread(values: &[f64]) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    json!({"min": sorted[0], "median": sorted[sorted.len() / 2], "max": sorted[sorted.len() - 1], "n": sorted.len()})
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let per_feed = args.sessions as f64 / duration.as_secs_f64() / args.feeds as f64;
    let llm_counts = Arc::new(LlmCounts::default());
    let llm = start_llm(llm_counts.clone(), args.llm_slots).await;
    let sent = Arc::new(AtomicU64::new(0));
    let mut feeds = Vec::new();
    for index in 0..args.feeds {
        feeds.push(start_feed(index, per_feed, sent.clone()).await);
    }
    let api = format!("127.0.0.1:{}", free_port());
    // A database of its own, fresh each run: the user's default file would
    // hand the service every session an earlier soak left there.
    let db_dir = std::env::temp_dir().join(format!("inflight-soak-{}", std::process::id()));
    std::fs::create_dir_all(&db_dir).expect("a folder for the soak's database");
    let db = db_dir.join("soak.db");
    let mut command = tokio::process::Command::new(&args.binary);
    command
        .args(["serve", "--api", &api, "--llm", "openai", "--model", "soak"])
        .arg("--db")
        .arg(&db)
        .args(["--llm-url", &format!("http://{llm}")])
        .args([
            "--idle-after",
            "5s",
            "--forget-after",
            "5s",
            "--op-timeout",
            "5s",
        ])
        .args(["--feed-idle-timeout", "3s"])
        .args(["--llm-concurrency", &args.llm_concurrency.to_string()])
        .args(["--retry-backoff", &args.retry_backoff])
        .args(["--max-sessions", "50000", "--max-answer-bytes", "65536"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for feed in &feeds {
        command.args(["--feed", &format!("ws://{}/", feed.addr)]);
    }
    let mut child = command.spawn().expect("inflight serve starts");
    let pid = child.id().expect("a pid");
    let panics = Arc::new(AtomicU64::new(0));
    if let Some(stderr) = child.stderr.take() {
        let panics = panics.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("panicked") {
                    panics.fetch_add(1, Ordering::Relaxed);
                    eprintln!("child: {line}");
                }
            }
        });
    }
    let http =
        inflight::net::http_client(reqwest::Client::builder().timeout(Duration::from_secs(10)))
            .expect("an HTTP client");

    let started = Instant::now();
    let mut next_chaos = Duration::from_secs_f64(args.chaos_every);
    let mut chaos = 0u64;
    let mut previous: BTreeMap<String, f64> = BTreeMap::new();
    let mut fell = Vec::new();
    let mut rss = Vec::new();
    let mut sample = tokio::time::interval(Duration::from_secs_f64(args.sample_every));
    while started.elapsed() < duration {
        sample.tick().await;
        let elapsed = started.elapsed();
        if elapsed >= next_chaos {
            next_chaos += Duration::from_secs_f64(args.chaos_every);
            chaos += 1;
            let feed = &feeds[(chaos as usize) % feeds.len()];
            let fault = if chaos % 2 == 1 {
                Fault::Freeze
            } else {
                Fault::Kill
            };
            feed.recoveries.lock().unwrap().0 = Some(Instant::now());
            feed.fault.send_replace((chaos, fault));
            eprintln!(
                "{:>6.1}s: {fault:?} feed {}",
                elapsed.as_secs_f64(),
                (chaos as usize) % feeds.len()
            );
        }
        let Some(kib) = rss_kib(pid) else {
            eprintln!("inflight is gone");
            break;
        };
        let metrics = match http.get(format!("http://{api}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => {
                eprintln!("scrape failed: {e}");
                continue;
            }
        };
        let now = counters(&metrics);
        for (series, value) in &now {
            if previous.get(series).is_some_and(|before| value < before) {
                fell.push(format!("{series}: {} -> {value}", previous[series]));
            }
        }
        let gauge = |name: &str| -> f64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1.0)
        };
        let sessions = gauge("inflight_sessions");
        let get = |name: &str| {
            now.iter()
                .filter(|(s, _)| s.starts_with(name))
                .map(|(_, v)| v)
                .sum::<f64>()
        };
        println!(
            "{}",
            json!({
                "t": elapsed.as_secs(),
                "rss_mib": kib as f64 / 1024.0,
                "sessions_held": sessions,
                // The calls at once the service learnt the LLM takes, and
                // the runs waiting for one: a service that cannot keep up
                // holds its sessions until they are served.
                "llm_limit": gauge("inflight_llm_permits_limit"),
                "queued_runs": metrics
                    .lines()
                    .filter(|l| l.starts_with("inflight_in_flight{") && l.contains("phase=\"queued\""))
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum::<f64>(),
                "transcripts": get("inflight_transcripts_total"),
                "runs": get("inflight_runs_total"),
                "refused": get("inflight_feed_sessions_refused_total"),
                "frames_sent": sent.load(Ordering::Relaxed),
            })
        );
        rss.push((elapsed.as_secs_f64(), kib as f64 / 1024.0));
        previous = now;
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&db_dir);
    let warm: Vec<f64> = rss
        .iter()
        .filter(|(t, _)| *t >= duration.as_secs_f64() / 5.0)
        .map(|(_, r)| *r)
        .collect();
    let median = spread(&warm)["median"].as_f64().unwrap_or(0.0);
    // From minute 1: how far any sample strays from their median.
    let settled: Vec<f64> = rss
        .iter()
        .filter(|(t, _)| *t >= 60.0)
        .map(|(_, r)| *r)
        .collect();
    let settled_median = spread(&settled)["median"].as_f64().unwrap_or(0.0);
    let stray = |samples: &[f64], median: f64| {
        samples
            .iter()
            .map(|r| (r - median).abs() / median * 100.0)
            .fold(0.0, f64::max)
    };
    let recoveries: Vec<f64> = feeds
        .iter()
        .flat_map(|f| f.recoveries.lock().unwrap().1.clone())
        .collect();
    let total = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({
            "summary": {
                "minutes": args.minutes,
                "sessions_started": feeds.len() as f64 * per_feed * started.elapsed().as_secs_f64(),
                "frames_sent": sent.load(Ordering::Relaxed),
                "rss_mib_after_warmup": spread(&warm),
                "rss_spread_percent": stray(&warm, median),
                "rss_from_minute_1": spread(&settled),
                "rss_spread_from_minute_1_percent": stray(&settled, settled_median),
                "feed_faults": chaos,
                "recovery_seconds": spread(&recoveries),
                "panics": panics.load(Ordering::Relaxed),
                "counters_that_fell": fell,
                "llm": {"ok": total(&llm_counts.ok), "hang": total(&llm_counts.hang),
                        "busy_503": total(&llm_counts.busy), "endless": total(&llm_counts.endless),
                        "huge_error": total(&llm_counts.huge)},
            }
        })
    );
}
