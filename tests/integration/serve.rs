//! `inflight serve`, the real binary, stopped the ways a service is: SIGTERM
//! drains (feeds get a Close frame, runs in flight finish up to
//! --drain-timeout, the rest are cancelled, exit 0 with a summary line), and
//! SIGHUP does not stop it.

use crate::common::child::field;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A feed that sends one line of session `s1`, then reports the close code
/// the client sends, if any, when it leaves.
async fn feed() -> (SocketAddr, tokio::sync::oneshot::Receiver<Option<u16>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed, close) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let _hello = ws.next().await;
        let line = r#"{"type":"transcript","session_id":"s1","seq":1,"text":"We ship on Friday."}"#;
        ws.send(Message::text(line)).await.unwrap();
        let mut code = None;
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(frame) = message {
                code = frame.map(|f| u16::from(f.code));
            }
        }
        let _ = closed.send(code);
    });
    (addr, close)
}

/// An empty folder of its own under the temp folder.
fn fresh_state_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("inflight-serve-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp folder");
    dir
}

use crate::common::child;

use child::Logged;

/// `inflight serve` on `feed`, with a database of its own (tests running at
/// once never share one).
fn start(feed: SocketAddr, extra: &[&str]) -> Logged {
    Logged::spawn(
        Command::new(env!("CARGO_BIN_EXE_inflight"))
            .args(["serve", "--api", "127.0.0.1:0", "--ops", "summary"])
            .args(["--feed", &format!("ws://{feed}/")])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("XDG_STATE_HOME", fresh_state_dir()),
    )
}

/// Starts serve on `feed` and waits until its first run is under way.
fn with_a_run_in_flight(feed: SocketAddr, extra: &[&str]) -> Logged {
    let mut serve = start(feed, extra);
    serve.wait_for("processing started");
    serve
}

/// The one line `serve` writes when it has stopped.
fn summary(serve: &Logged) -> &str {
    serve
        .seen
        .iter()
        .rev()
        .find(|l| l.contains(" stopped "))
        .unwrap_or_else(|| panic!("no summary line in:\n{}", serve.seen.join("\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_runs_in_flight_and_says_goodbye_to_the_feeds() {
    let (addr, close) = feed().await;
    let mut serve = with_a_run_in_flight(
        addr,
        &["--simulate-latency", "1s", "--drain-timeout", "30s"],
    );
    serve.signal(libc::SIGTERM);
    let code = tokio::time::timeout(Duration::from_secs(10), close)
        .await
        .expect("the feed connection ends")
        .unwrap();
    assert_eq!(code, Some(1000), "the feed got a normal Close frame");
    assert_eq!(serve.exit_code(), Some(0));
    let log = serve.seen.join("\n");
    assert!(
        log.contains("processing finished") && log.contains("outcome=\"ok\""),
        "the run in flight finished: {log}"
    );
    let summary = summary(&serve);
    assert_eq!(field(summary, "in_flight_at_stop"), "1", "{summary}");
    assert_eq!(field(summary, "cancelled_at_stop"), "0", "{summary}");
    assert_eq!(field(summary, "runs"), "1", "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_the_drain_timeout_is_cancelled_and_the_exit_is_clean() {
    let (addr, _close) = feed().await;
    let mut serve = with_a_run_in_flight(
        addr,
        &["--simulate-latency", "120s", "--drain-timeout", "200ms"],
    );
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.exit_code(), Some(0));
    let log = serve.seen.join("\n");
    assert!(log.contains("the process is stopping"), "{log}");
    let summary = summary(&serve);
    assert_eq!(field(summary, "in_flight_at_stop"), "1", "{summary}");
    assert_eq!(field(summary, "cancelled_at_stop"), "1", "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_does_not_stop_serve() {
    let (addr, _close) = feed().await;
    let mut serve = start(addr, &[]);
    let listening = serve.wait_for("API listening");
    let api = field(&listening, "bound");
    serve.signal(libc::SIGHUP);
    serve.wait_for("SIGHUP ignored");
    let client = inflight::net::http_client(reqwest::Client::builder()).unwrap();
    let health = client
        .get(format!("http://{api}/healthz"))
        .send()
        .await
        .expect("still serving after SIGHUP");
    assert_eq!(health.status().as_u16(), 200);
    assert!(serve.child.try_wait().unwrap().is_none(), "still running");
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.exit_code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_the_runs_fields() {
    let (addr, _closed) = feed().await;
    let mut serve = start(
        addr,
        &[
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--simulate-latency",
            "10ms",
        ],
    );
    let finished = serve.wait_for("processing finished");
    serve.wait_for("session state cleaned up");
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.exit_code(), Some(0));
    for line in &serve.seen {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not one JSON object: {line}");
    }
    let event: serde_json::Value = serde_json::from_str(&finished).unwrap();
    assert_eq!(event["message"], "processing finished");
    assert_eq!(event["level"], "INFO");
    assert!(event["timestamp"].is_string());
    assert_eq!(event["session_id"], "s1");
    assert_eq!(event["op"], "summary");
    assert!(
        event["run_id"].is_u64() && event["duration_ms"].is_u64(),
        "{event}"
    );
    assert_eq!(event["outcome"], "ok");
}

/// A feed that takes the first connection (noting its `Authorization`
/// header) and closes it at once, then refuses every later one with a 401.
async fn refusing_feed() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, headers) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let seen = tx.clone();
        // The library's callback type, whose error is a whole response.
        #[allow(clippy::result_large_err)]
        let callback =
            move |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                  response| {
                let value = request.headers().get("authorization");
                let _ = seen.send(value.and_then(|v| v.to_str().ok()).map(String::from));
                Ok(response)
            };
        if let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await {
            let _ = ws.close(None).await;
        }
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = vec![0u8; 4096];
            let _ = stream.read(&mut request).await;
            let _ = stream
                .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 12\r\n\r\nunauthorized")
                .await;
            let _ = tx.send(None);
        }
    });
    (addr, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_header_values_are_never_logged_even_at_trace() {
    const SECRET: &str = "s3cr3t-feed-token";
    let header = format!("Authorization: Bearer {SECRET}");
    let (addr, mut headers) = refusing_feed().await;
    let mut serve = Logged::spawn(
        Command::new(env!("CARGO_BIN_EXE_inflight"))
            .args([
                "serve",
                "--api",
                "127.0.0.1:0",
                "--no-db",
                "--ops",
                "summary",
            ])
            .args(["--feed", &format!("ws://{addr}/"), "--feed-header", &header])
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1"),
    );
    // The header reached the feed, so the process had it in hand.
    let first = tokio::time::timeout(Duration::from_secs(30), headers.recv())
        .await
        .expect("the feed was dialled")
        .expect("the feed runs");
    assert_eq!(first.as_deref(), Some(format!("Bearer {SECRET}").as_str()));
    // Closed once, then refused twice: every path that logs a feed's
    // trouble has run.
    for _ in 0..2 {
        let refused = tokio::time::timeout(Duration::from_secs(30), headers.recv())
            .await
            .expect("the feed was dialled again");
        assert_eq!(refused, Some(None));
    }
    serve.wait_for("401");
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.exit_code(), Some(0));
    let log = serve.seen.join("\n");
    assert!(
        log.contains("feed"),
        "the log says something of the feed:\n{log}"
    );
    assert!(!log.contains(SECRET), "a header value in the log:\n{log}");

    // Nor does `config show` print it.
    let shown = child::output(
        Command::new(env!("CARGO_BIN_EXE_inflight"))
            .args(["config", "show", "--feed-header", &header])
            .env("NO_COLOR", "1"),
    );
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(!text.contains(SECRET), "{text}");
}
