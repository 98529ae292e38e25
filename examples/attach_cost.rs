//! What `inflight attach` costs at scale: bytes per second from the server,
//! idle and busy, and the dashboard's frame time attached against embedded.
//!
//! ```sh
//! cargo run --release --example attach_cost -- --sessions 10000
//! ```
//!
//! Fills an engine with `--sessions` sessions (one final line each, their
//! runs done), serves its API on loopback behind a byte-counting proxy, and
//! attaches the real remote source through the proxy. Then, one JSON line
//! per phase:
//! - `load`: the first full picture (bytes, seconds until every row is in);
//! - `idle`: `--seconds` with nothing happening;
//! - `busy`: `--seconds` with `--rate` transcripts a second spread over the
//!   sessions (each asks for a summary and a mind map, 200 ms a call);
//! - `frames`: the time to read the source and draw a 120x40 frame, median
//!   over `--frames` frames, embedded (the engine's snapshot) and attached
//!   (the remote picture), side by side, while idle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use inflight::api::{self, ApiConfig};
use inflight::engine::{Engine, EngineConfig, SessionLimits};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::logs::LogBuffer;
use inflight::model::{SessionId, Transcript};
use inflight::tui::app::App;
use inflight::tui::source::Source;
use inflight::tui::source::embedded::Embedded;
use inflight::tui::source::remote::{Remote, RemoteOptions};
use inflight::tui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Transcripts a second in the busy phase.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    #[arg(long, default_value_t = 200)]
    frames: usize,
}

fn line(session: &SessionId, seq: u64) -> Transcript {
    Transcript {
        session_id: session.clone(),
        seq: Some(seq),
        text: "We ship on Friday, after the review.".into(),
        speaker: Some("Ana".into()),
        start: None,
        end: None,
        is_final: true,
        kind: None,
    }
}

/// Copies one direction, counting what passes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A loopback proxy to `target` counting the bytes the server sends.
async fn proxy(target: SocketAddr, down: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(server_read, client_write, down.clone()));
            tokio::spawn(pump(client_read, server_write, Arc::new(AtomicU64::new(0))));
        }
    });
    addr
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The median time to read `source` into an app and draw one frame.
fn frame_times(source: &mut impl Source, frames: usize) -> f64 {
    let mut app = App::new(Theme::new(true), source.snapshot());
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).expect("a test terminal");
    let mut times = Vec::with_capacity(frames);
    for _ in 0..frames {
        let start = Instant::now();
        inflight::tui::refresh(source, &mut app);
        app.fit(120, 40);
        terminal
            .draw(|frame| inflight::tui::views::draw(frame, &app))
            .expect("drawn");
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    median(times)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let engine = Engine::new(
        EngineConfig {
            sessions: SessionLimits {
                max_sessions: args.sessions * 2,
                ..Default::default()
            },
            ..Default::default()
        },
        Arc::new(BuiltinBackend::new(LatencyRange::fixed(
            Duration::from_millis(200),
        ))),
    );
    let ids: Vec<SessionId> = (0..args.sessions)
        .map(|i| SessionId::parse(&format!("session-{i:06}")).expect("an id"))
        .collect();
    for id in &ids {
        engine.ingest(line(id, 1), None);
    }
    while engine.snapshot().totals.running + engine.snapshot().totals.queued > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let server = api::serve(
        engine.clone(),
        ApiConfig {
            addr: "127.0.0.1:0".parse().expect("an address"),
            logs: Some(LogBuffer::new()),
            ..Default::default()
        },
        stop.clone(),
    )
    .await
    .expect("the API");
    let down = Arc::new(AtomicU64::new(0));
    let via = proxy(server, down.clone()).await;

    // The first full picture.
    let started = Instant::now();
    let mut remote = Remote::start(RemoteOptions {
        url: format!("http://{via}"),
        token: None,
    })
    .expect("attached");
    while remote.snapshot().sessions.len() < args.sessions {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{{\"phase\":\"load\",\"sessions\":{},\"bytes\":{},\"seconds\":{:.2}}}",
        args.sessions,
        down.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Idle.
    let before = down.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let idle = (down.load(Ordering::Relaxed) - before) as f64 / args.seconds as f64;
    println!("{{\"phase\":\"idle\",\"bytes_per_second\":{idle:.0}}}");

    // Frames, while idle.
    let embedded = frame_times(
        &mut Embedded::new(engine.clone(), LogBuffer::new()),
        args.frames,
    );
    let attached = frame_times(&mut remote, args.frames);
    println!(
        "{{\"phase\":\"frames\",\"embedded_ms\":{embedded:.2},\"attached_ms\":{attached:.2},\"ratio\":{:.2}}}",
        attached / embedded
    );

    // Busy: transcripts spread over the sessions at `rate` a second.
    let before = down.load(Ordering::Relaxed);
    let busy_engine = engine.clone();
    let rate = args.rate;
    let seconds = args.seconds;
    let feeder = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let per_tick = (rate / 100).max(1);
        let mut n = 0u64;
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            tick.tick().await;
            for _ in 0..per_tick {
                let id = &ids[(n as usize * 7919) % ids.len()];
                busy_engine.ingest(line(id, 2 + n), None);
                n += 1;
            }
        }
        n
    });
    let sent = feeder.await.expect("the feeder");
    let busy = (down.load(Ordering::Relaxed) - before) as f64 / args.seconds as f64;
    println!(
        "{{\"phase\":\"busy\",\"transcripts_per_second\":{:.0},\"bytes_per_second\":{busy:.0}}}",
        sent as f64 / args.seconds as f64
    );
    stop.cancel();
}
