//! Both ways in, and results out: ingest pushed to `/ingest` against the
//! same frames on a feed inflight dials, and the lag of webhook deliveries
//! to a local receiver.
//!
//! ```sh
//! cargo run --release --example push_cost
//! ```
//!
//! **Ingest.** `--frames` native transcript frames round-robin over
//! `--sessions` sessions, sent as fast as one WebSocket takes them, to an
//! engine whose runs take 50 ms. *Dialled*: a local WebSocket server sends
//! them to inflight's feed client. *Pushed*: a local client sends them to
//! the API's `/ingest`. The time runs from the first frame sent to the last
//! transcript held. A third variant pushes with every result also to be
//! delivered to a webhook receiver that refuses connections. The three
//! alternate for `--rounds` rounds each; the medians are reported, pushed
//! as a share of dialled, and with the dead receiver as a share of without.
//!
//! **Delivery lag.** `--rate` deliveries a second for `--seconds` seconds,
//! each for a session of its own, offered to the outbox of one endpoint on
//! loopback that answers 200 at once. The lag is from the offer to the
//! receiver reading the body; p50 and p99 are reported.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use inflight::api::ApiConfig;
use inflight::engine::{Engine, EngineConfig, SessionLimits};
use inflight::feed::client::FeedOptions;
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::SessionId;
use inflight::webhooks::{Delivery, Endpoint, EventKind, Key, Settings, Webhooks};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    frames: usize,
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

fn engine(sessions: usize) -> Engine {
    Engine::new(
        EngineConfig {
            sessions: SessionLimits {
                max_sessions: sessions * 2,
                ..Default::default()
            },
            ..Default::default()
        },
        Arc::new(BuiltinBackend::new(LatencyRange::fixed(
            Duration::from_millis(50),
        ))),
    )
}

fn frames(args: &Args) -> Vec<String> {
    (0..args.frames)
        .map(|i| {
            json!({
                "type": "transcript",
                "session_id": format!("s{}", i % args.sessions),
                "seq": i / args.sessions + 1,
                "speaker": "A",
                "text": format!("line {i}: we plan the release and the budget for next quarter."),
            })
            .to_string()
        })
        .collect()
}

/// Waits until the engine holds every frame; the time since `from`.
async fn held_all(engine: &Engine, args: &Args, from: Instant) -> Duration {
    let each = (args.frames / args.sessions) as u64;
    let ids: Vec<SessionId> = (0..args.sessions)
        .filter_map(|s| SessionId::parse(&format!("s{s}")).ok())
        .collect();
    loop {
        if ids.iter().all(|id| engine.generation(id) >= each) {
            return from.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A feed inflight dials: a local server that sends every frame to the
/// first client.
async fn dialled(args: &Args, frames: Arc<Vec<String>>) -> Result<Duration, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let started: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mark = started.clone();
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        *mark.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        for frame in frames.iter() {
            if socket.feed(Message::text(frame.clone())).await.is_err() {
                return;
            }
        }
        let _ = socket.flush().await;
        // Keep the connection while the engine reads.
        while socket.next().await.is_some() {}
    });
    let engine = engine(args.sessions);
    let stop = CancellationToken::new();
    let _feed = inflight::feed::client::spawn(
        engine.clone(),
        format!("ws://{addr}/"),
        FeedOptions::default(),
        stop.clone(),
    );
    let from = loop {
        if let Some(at) = *started.lock().unwrap_or_else(|e| e.into_inner()) {
            break at;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let took = held_all(&engine, args, from).await;
    stop.cancel();
    Ok(took)
}

/// The same frames pushed to the API's `/ingest`; with `dead_hook`, every
/// result is also to be delivered to a receiver that refuses connections.
async fn pushed(
    args: &Args,
    frames: Arc<Vec<String>>,
    dead_hook: bool,
) -> Result<Duration, String> {
    let engine = engine(args.sessions);
    let stop = CancellationToken::new();
    if dead_hook {
        // A port nobody listens on: every attempt is refused and retried.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let url = format!(
            "http://{}/hook",
            closed.local_addr().map_err(|e| e.to_string())?
        );
        drop(closed);
        let webhooks = Arc::new(Webhooks::new(
            vec![Endpoint {
                url: reqwest::Url::parse(&url).map_err(|e| e.to_string())?,
                secret: Arc::from(&b"bench-secret"[..]),
                events: vec![EventKind::Result],
                operations: Vec::new(),
                kinds: Vec::new(),
            }],
            Settings::default(),
        ));
        engine.use_webhooks(webhooks.clone());
        tokio::spawn(inflight::webhooks::sender::run(
            webhooks,
            Arc::new(inflight::engine::NoRecord),
            stop.clone(),
        ));
    }
    let addr = inflight::api::serve(
        engine.clone(),
        ApiConfig {
            addr: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            ingest_token: Some("push".into()),
            ..Default::default()
        },
        stop.clone(),
    )
    .await?;
    let mut request = format!("ws://{addr}/ingest")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "authorization",
        "Bearer push".parse().map_err(|_| "header".to_string())?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| e.to_string())?;
    let from = Instant::now();
    for frame in frames.iter() {
        socket
            .feed(Message::text(frame.clone()))
            .await
            .map_err(|e| e.to_string())?;
    }
    socket.flush().await.map_err(|e| e.to_string())?;
    // Read what comes back (the hello, statuses) so the server never waits.
    let reader = tokio::spawn(async move { while socket.next().await.is_some() {} });
    let took = held_all(&engine, args, from).await;
    reader.abort();
    stop.cancel();
    Ok(took)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

/// Delivery lag to a receiver on loopback that answers at once.
async fn delivery_lag(args: &Args) -> Result<(Vec<f64>, u64), String> {
    let lags: Arc<Mutex<Vec<f64>>> = Arc::default();
    let seen = lags.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let now = unix_micros();
                if let Some(sent) = std::str::from_utf8(&body)
                    .ok()
                    .and_then(|b| b.parse::<u64>().ok())
                {
                    let lag = now.saturating_sub(sent) as f64 / 1000.0;
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push(lag);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let webhooks = Arc::new(Webhooks::new(
        vec![Endpoint {
            url: reqwest::Url::parse(&format!("http://{addr}/hook")).map_err(|e| e.to_string())?,
            secret: Arc::from(&b"bench-secret"[..]),
            events: vec![EventKind::Result],
            operations: Vec::new(),
            kinds: Vec::new(),
        }],
        Settings {
            max_pending: 1_000_000,
            ..Default::default()
        },
    ));
    let stop = CancellationToken::new();
    tokio::spawn(inflight::webhooks::sender::run(
        webhooks.clone(),
        Arc::new(inflight::engine::NoRecord),
        stop.clone(),
    ));
    let total = args.rate * args.seconds;
    let every = Duration::from_secs(1).div_f64(args.rate as f64);
    let mut tick = tokio::time::interval(every);
    for i in 0..total {
        tick.tick().await;
        let session = SessionId::parse(&format!("d{i}")).map_err(|e| e.to_string())?;
        webhooks.outbox.offer(Delivery::new(
            Key {
                endpoint: 0,
                session,
                op: Some(inflight::model::Operation::SUMMARY),
                event: EventKind::Result,
            },
            1,
            format!("d{i}"),
            unix_micros().to_string().into(),
            SystemTime::now(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (lags.lock().unwrap_or_else(|e| e.into_inner()).len() as u64) < total
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let lags = lags.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((lags, total))
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    inflight::net::install_crypto();
    let args = Args::parse();
    // The lag first: the ingest rounds leave engines that catch up on
    // their backlogs for seconds after (both cores busy), which would be
    // measured instead.
    let (lags, sent) = delivery_lag(&args).await?;
    let frames = Arc::new(frames(&args));
    let (mut out, mut back, mut dead) = (Vec::new(), Vec::new(), Vec::new());
    let rate = |took: Duration| args.frames as f64 / took.as_secs_f64();
    for _ in 0..args.rounds {
        out.push(rate(dialled(&args, frames.clone()).await?));
        back.push(rate(pushed(&args, frames.clone(), false).await?));
        dead.push(rate(pushed(&args, frames.clone(), true).await?));
    }
    let (dialled, pushed, with_dead_hook) = (median(out), median(back), median(dead));
    println!(
        "{}",
        json!({
            "frames": args.frames,
            "sessions": args.sessions,
            "rounds": args.rounds,
            "dialled_transcripts_per_s": dialled.round(),
            "pushed_transcripts_per_s": pushed.round(),
            "pushed_vs_dialled": (pushed / dialled * 1000.0).round() / 1000.0,
            "pushed_with_dead_webhook_per_s": with_dead_hook.round(),
            "dead_webhook_vs_none": (with_dead_hook / pushed * 1000.0).round() / 1000.0,
            "deliveries_per_s": args.rate,
            "deliveries_sent": sent,
            "deliveries_received": lags.len(),
            "delivery_lag_p50_ms": (percentile(&lags, 0.5) * 100.0).round() / 100.0,
            "delivery_lag_p99_ms": (percentile(&lags, 0.99) * 100.0).round() / 100.0,
        })
    );
    Ok(())
}
