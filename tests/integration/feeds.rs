//! Feeds under stress over real sockets: a replay server killed and
//! restarted while streaming, a feed of garbage beside a good one, and
//! statuses sent back up a feed's socket.

use crate::common;

use crate::common::feed;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{final_line, sid};
use feed::one_client_feed;
use futures_util::{SinkExt, StreamExt};
use inflight::engine::feeds::BadFrame;
use inflight::engine::{Engine, EngineConfig};
use inflight::feed::adapters::FeedFormat;
use inflight::feed::meetings::Meeting;
use inflight::feed::{client, protocol, replay};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::Operation;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_util::sync::CancellationToken;

fn quick_reconnects() -> client::FeedOptions {
    client::FeedOptions {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(400),
        format: FeedFormat::Native,
        ..Default::default()
    }
}

fn engine(ops: Vec<Operation>) -> Engine {
    let config = EngineConfig {
        automatic_ops: ops,
        ..Default::default()
    };
    Engine::new(config, Arc::new(BuiltinBackend::new(LatencyRange::ZERO)))
}

/// A folder of meetings `m-0` … `m-{n-1}`, `lines` lines each, one second apart.
fn meeting_dir(n: usize, lines: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "inflight-feeds-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        let name = format!("m-{i}");
        let text: String = (1..=lines)
            .map(|seq| {
                let mut line = final_line(&name, seq, &format!("line {seq} of {name}"));
                line.start = Some(seq as f64);
                line.end = Some(seq as f64 + 0.5);
                protocol::transcript_frame(&line) + "\n"
            })
            .collect();
        std::fs::write(dir.join(format!("{name}.jsonl")), text).unwrap();
    }
    dir
}

/// `count` meetings `{prefix}-0` …, each of `lines` final lines "line N".
fn numbered_meetings(prefix: &str, count: usize, lines: u64) -> Vec<Meeting> {
    (0..count)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            Meeting {
                session: sid(&name),
                lines: (1..=lines)
                    .map(|seq| final_line(&name, seq, &format!("line {seq}")))
                    .collect(),
            }
        })
        .collect()
}

/// A TCP proxy on a port the test holds for its whole life. Each connection
/// goes to wherever `backend` points at the time, so the feed binary can be
/// killed and restarted on a port of its own choosing while the client's URL
/// stays the same. When either side closes, so does the other.
async fn proxy(backend: Arc<Mutex<SocketAddr>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = *backend.lock().unwrap();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

/// Starts `inflight feed` on a port of its own choosing and waits until it
/// says where it listens.
fn start_feed_binary(dir: &PathBuf) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_inflight"))
        .args(["feed", "--listen", "127.0.0.1:0", "--speed", "40"])
        .arg("--dir")
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the feed server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("replay feed listening") => {
                let addr = line
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix("addr="))
                    .unwrap_or_else(|| panic!("no address in {line:?}"));
                break addr.parse().expect("a socket address");
            }
            Some(Ok(_)) => {}
            _ => panic!("the feed server ended before listening"),
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_server_killed_five_times_loses_and_repeats_nothing() {
    const SESSIONS: usize = 10;
    const LINES: u64 = 60;
    let dir = meeting_dir(SESSIONS, LINES);
    // Every line stays in memory, to be read back below.
    let config = EngineConfig {
        automatic_ops: Vec::new(),
        sessions: inflight::engine::SessionLimits {
            kept_transcripts: LINES as usize,
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = Engine::new(config, Arc::new(BuiltinBackend::new(LatencyRange::ZERO)));
    let mut events = engine.subscribe();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (mut server, first) = start_feed_binary(&dir);
    let backend = Arc::new(Mutex::new(first));
    let front = proxy(backend.clone()).await;
    client::spawn(
        engine.clone(),
        format!("ws://{front}/"),
        quick_reconnects(),
        shutdown.clone(),
    );

    let ingested = |engine: &Engine| engine.snapshot().totals.transcripts;
    for kill in 1..=5u64 {
        // Kill once the engine has taken in some more of the stream.
        let target = kill * 80;
        common::wait_until(
            &mut events,
            Duration::from_secs(30),
            "more transcripts",
            || ingested(&engine) >= target,
        )
        .await;
        server.kill().expect("kill -9");
        server.wait().expect("reaped");
        let (next, addr) = start_feed_binary(&dir);
        server = next;
        *backend.lock().unwrap() = addr;
    }
    let sessions: Vec<_> = (0..SESSIONS).map(|i| sid(&format!("m-{i}"))).collect();
    common::wait_until(
        &mut events,
        Duration::from_secs(60),
        "every transcript",
        || sessions.iter().all(|s| engine.generation(s) == LINES),
    )
    .await;
    server.kill().ok();
    server.wait().ok();

    for session in &sessions {
        let detail = engine.session_detail(session, LINES as usize).unwrap();
        let texts: Vec<String> = detail
            .content
            .recent
            .iter()
            .map(|t| t.text.clone())
            .collect();
        let expected: Vec<String> = (1..=LINES)
            .map(|seq| format!("line {seq} of {session}"))
            .collect();
        assert_eq!(texts, expected, "{session}: every line once, in order");
    }
    let feed = &engine.snapshot().feeds[0];
    assert!(
        feed.connects >= 6,
        "reconnected after each kill: {} connects",
        feed.connects
    );
    assert_eq!(
        feed.transcripts,
        SESSIONS as u64 * LINES,
        "no transcript taken twice"
    );
    assert_eq!(
        feed.duplicates, 0,
        "each reconnect resumed after the last line taken: nothing was sent twice"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A feed that sends garbage: 10 000 frames of every kind that can't be used,
/// then a frame of invalid UTF-8 and, on the next connection, one over 1 MiB.
/// Passes on the close code the client sends on each connection.
async fn garbage_server() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(usize, Option<u16>)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed, closes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut connection = 0;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            connection += 1;
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                continue;
            };
            let _hello = ws.next().await;
            match connection {
                1 => {
                    let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
                    let kinds: Vec<Message> = vec![
                        Message::text("{"),
                        Message::text(r#"{"type":"weather","session_id":"x"}"#),
                        Message::text(r#"{"type":"transcript","session_id":"bad id!","text":"x"}"#),
                        Message::text(r#"{"type":"transcript","session_id":"","text":"x"}"#),
                        Message::text(deep),
                        Message::binary(vec![0u8, 159, 146, 150]),
                        Message::text("\u{1b}[2J not json"),
                        Message::text(r#"{"type":"transcript","session_id":"ok-id"}"#),
                    ];
                    for i in 0..10_000 {
                        if ws.send(kinds[i % kinds.len()].clone()).await.is_err() {
                            return;
                        }
                    }
                    let header = FrameHeader {
                        opcode: OpCode::Data(Data::Text),
                        ..Default::default()
                    };
                    let bad_utf8 = Frame::from_payload(header, vec![0xff, 0xfe, 0xfd].into());
                    let _ = ws.send(Message::Frame(bad_utf8)).await;
                    let _ = ws.flush().await;
                }
                2 => {
                    let _ = ws.send(Message::text("x".repeat(2 << 20))).await;
                }
                _ => {}
            }
            // Hold the connection until the client leaves.
            let mut code = None;
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Close(frame) = message {
                    code = frame.map(|f| u16::from(f.code));
                }
            }
            let _ = closed.send((connection, code));
        }
    });
    (addr, closes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_garbage_frames_leave_the_other_feeds_sessions_untouched() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let meetings = numbered_meetings("good", 3, 30);
    let good = replay::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        meetings,
        replay::ReplayOptions {
            speed: 0.0,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let (garbage, mut closes) = garbage_server().await;
    let engine = engine(inflight::ops::BUILT_IN.to_vec());
    let mut events = engine.subscribe();
    client::spawn(
        engine.clone(),
        format!("ws://{garbage}/"),
        quick_reconnects(),
        shutdown.clone(),
    );
    client::spawn(
        engine.clone(),
        format!("ws://{good}/"),
        quick_reconnects(),
        shutdown.clone(),
    );

    // 10 000 frames, one of invalid UTF-8, one too big; then a third connection.
    let garbage_done = |engine: &Engine| {
        let feeds = engine.feeds().views();
        feeds[0].bad_frames >= 10_002 && feeds[0].connects >= 3
    };
    let good_sessions: Vec<_> = (0..3).map(|i| sid(&format!("good-{i}"))).collect();
    common::wait_until(
        &mut events,
        Duration::from_secs(60),
        "both feeds done",
        || {
            garbage_done(&engine)
                && engine.is_idle()
                && good_sessions.iter().all(|s| {
                    engine.generation(s) == 30
                        && inflight::ops::BUILT_IN.iter().all(|op| {
                            engine
                                .result(s, *op)
                                .is_some_and(|r| r.covered_generation == 30)
                        })
                })
        },
    )
    .await;

    let snapshot = engine.snapshot();
    assert_eq!(snapshot.sessions.len(), 3, "garbage made no sessions");
    assert!(
        snapshot
            .sessions
            .iter()
            .all(|s| s.transcripts == 30 && s.ops.values().all(|o| o.counts.failed == 0))
    );
    let status = engine.feeds();
    let views = status.views();
    assert_eq!(views[1].bad_frames, 0);
    assert_eq!(views[0].transcripts, 0);
    assert_eq!(views[0].bad_frames, 10_002);
    let garbage = &engine.feeds().statuses()[0];
    let counts: Vec<(&str, u64)> = BadFrame::ALL
        .iter()
        .map(|kind| (kind.as_str(), garbage.bad(*kind)))
        .collect();
    assert_eq!(
        counts,
        [
            // "{", 500-deep nesting, an escape sequence, a transcript without text.
            ("invalid_json", 5000),
            ("unknown_type", 1250),
            // "bad id!" and "".
            ("bad_session_id", 2500),
            ("oversized", 1),
            ("binary", 1250),
            ("invalid_utf8", 1),
            ("text_cut", 0),
            ("bad_seq", 0),
        ]
    );
    // The client refused the frame over 1 MiB with "message too big".
    let close = loop {
        let (connection, code) = tokio::time::timeout(Duration::from_secs(10), closes.recv())
            .await
            .expect("the second connection ends")
            .expect("the server runs");
        if connection == 2 {
            break code;
        }
    };
    assert_eq!(close, Some(1009));
}

#[tokio::test]
async fn statuses_and_results_go_back_up_the_feed() {
    let line =
        json!({"type": "transcript", "session_id": "up-1", "seq": 1, "text": "We ship Friday."});
    let (addr, mut texts) = one_client_feed(vec![Message::text(line.to_string())]).await;
    let (got, mut received) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Some(text) = texts.recv().await {
            if let Ok(value) = serde_json::from_str(&text) {
                let _ = got.send(value);
            }
        }
    });
    let engine = engine(vec![Operation::SUMMARY]);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let options = client::FeedOptions {
        upstream_results: true,
        ..quick_reconnects()
    };
    client::spawn(
        engine.clone(),
        format!("ws://{addr}/"),
        options,
        shutdown.clone(),
    );

    let mut kinds = Vec::new();
    let mut finished = false;
    while !(finished && kinds.contains(&"summary_update".to_string())) {
        let value = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value["sessionId"], "up-1");
        if value["type"] == "processing_status" && kinds.is_empty() {
            assert_eq!(
                value["data"]["summary_processing"], true,
                "the first status announces the start"
            );
        }
        if value["type"] == "processing_status" && value["data"]["any_processing"] == false {
            finished = true;
        }
        if value["type"] == "summary_update" {
            assert_eq!(value["data"]["covered_generation"], 1);
            assert!(
                value["data"]["summary"]
                    .as_str()
                    .unwrap()
                    .contains("Friday")
            );
        }
        kinds.push(value["type"].as_str().unwrap().to_string());
    }
    assert_eq!(kinds.first().map(String::as_str), Some("processing_status"));
    assert!(
        kinds.iter().filter(|k| *k == "processing_status").count() >= 2,
        "start and finish: {kinds:?}"
    );
}

/// A `wss://` feed with a self-signed certificate, trusted through
/// `--feed-ca`, that only streams to clients sending the right header.
#[tokio::test]
// The handshake callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn wss_feeds_with_a_private_ca_and_an_auth_header() {
    inflight::net::install_crypto();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "inflight-tls-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_auth, mut auth) = tokio::sync::mpsc::unbounded_channel();
    let (refused, mut refusals) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen_auth, refused) =
                (acceptor.clone(), seen_auth.clone(), refused.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = refused.send(e.to_string());
                        return;
                    }
                };
                let check =
                    |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                     response: tokio_tungstenite::tungstenite::handshake::server::Response| {
                        let header = request
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let _ = seen_auth.send(header);
                        Ok(response)
                    };
                let mut ws = tokio_tungstenite::accept_hdr_async(tls, check)
                    .await
                    .unwrap();
                let _hello = ws.next().await;
                let line = json!({"type": "transcript", "session_id": "secure-1", "seq": 1, "text": "Encrypted hello."});
                ws.send(Message::text(line.to_string())).await.unwrap();
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });

    let engine = engine(Vec::new());
    let mut events = engine.subscribe();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let url = format!("wss://localhost:{port}/live");

    // Without the private CA, the certificate is not trusted: no connection.
    let untrusting = CancellationToken::new();
    let options = client::FeedOptions {
        tls: Some(inflight::net::tls_client_config(None).unwrap()),
        headers: vec![client::parse_header("Authorization: Bearer feed-secret").unwrap()],
        ..quick_reconnects()
    };
    client::spawn(engine.clone(), url.clone(), options, untrusting.clone());
    let refusal = tokio::time::timeout(Duration::from_secs(10), refusals.recv())
        .await
        .expect("the client without the CA tries")
        .unwrap();
    common::next_matching(&mut events, Duration::from_secs(10), |e| {
        matches!(e, inflight::events::Event::FeedDisconnected { .. }).then_some(())
    })
    .await;
    untrusting.cancel();
    let untrusted = &engine.feeds().views()[0];
    assert_eq!(
        untrusted.connects, 0,
        "no TLS session without the CA: {refusal}"
    );
    assert!(auth.try_recv().is_err(), "no request reached the feed");
    assert_eq!(engine.generation(&sid("secure-1")), 0);

    let options = client::FeedOptions {
        tls: Some(inflight::net::tls_client_config(Some(&ca)).unwrap()),
        headers: vec![client::parse_header("Authorization: Bearer feed-secret").unwrap()],
        ..quick_reconnects()
    };
    client::spawn(engine.clone(), url, options, shutdown.clone());
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), auth.recv())
            .await
            .unwrap()
            .unwrap()
            .as_deref(),
        Some("Bearer feed-secret")
    );
    common::wait_until(
        &mut events,
        Duration::from_secs(10),
        "the transcript over TLS",
        || engine.generation(&sid("secure-1")) == 1,
    )
    .await;
    assert!(inflight::net::tls_client_config(Some(&dir.join("missing.pem"))).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_server_that_cuts_every_25_frames_is_resumed_without_loss() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let meetings = numbered_meetings("cut", 4, 50);
    let options = replay::ReplayOptions {
        speed: 0.0,
        drop_every: Some(25),
        ..Default::default()
    };
    let addr = replay::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        meetings,
        options,
        shutdown.clone(),
    )
    .await
    .unwrap();
    let engine = engine(Vec::new());
    let mut events = engine.subscribe();
    client::spawn(
        engine.clone(),
        format!("ws://{addr}/"),
        quick_reconnects(),
        shutdown.clone(),
    );
    let sessions: Vec<_> = (0..4).map(|i| sid(&format!("cut-{i}"))).collect();
    common::wait_until(
        &mut events,
        Duration::from_secs(30),
        "every line through the cuts",
        || {
            sessions.iter().all(|s| {
                engine.generation(s) == 50 && engine.snapshot().sessions.iter().all(|r| r.ended)
            })
        },
    )
    .await;
    let feed = &engine.feeds().views()[0];
    assert!(
        feed.connects >= 8,
        "200 lines in cuts of 25: {} connects",
        feed.connects
    );
    assert_eq!(feed.transcripts, 200, "each line taken once");
    assert_eq!(
        feed.duplicates, 0,
        "each reconnect resumed after the last line taken: nothing was sent twice"
    );
}

#[tokio::test]
async fn no_upstream_status_keeps_the_feed_socket_quiet() {
    let mut lines: Vec<Value> = (1..=3)
        .map(|seq| json!({"type": "transcript", "session_id": "quiet-1", "seq": seq, "text": "hello"}))
        .collect();
    lines.push(json!({"type": "session_end", "session_id": "quiet-1"}));
    let (addr, mut received) =
        one_client_feed(lines.iter().map(|l| Message::text(l.to_string())).collect()).await;
    let engine = engine(inflight::ops::BUILT_IN.to_vec());
    let mut events = engine.subscribe();
    let shutdown = CancellationToken::new();
    let options = client::FeedOptions {
        upstream_status: false,
        ..quick_reconnects()
    };
    client::spawn(
        engine.clone(),
        format!("ws://{addr}/"),
        options,
        shutdown.clone(),
    );
    common::wait_until(
        &mut events,
        Duration::from_secs(10),
        "the session's runs",
        || {
            engine
                .snapshot()
                .sessions
                .first()
                .is_some_and(|s| s.ended && s.ops.values().all(|o| o.counts.ok > 0))
                && engine.is_idle()
        },
    )
    .await;
    // Closing the client ends the server's read loop: everything it got is in.
    shutdown.cancel();
    let mut texts = Vec::new();
    while let Some(text) = tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await
        .unwrap()
    {
        if text == "closed" {
            break;
        }
        texts.push(text);
    }
    assert!(texts.is_empty(), "nothing was sent up: {texts:?}");
}

/// A proxy whose first connection goes dead once told to: it stops moving
/// bytes both ways but keeps both sockets open, like a NAT that dropped its
/// entry or a peer whose host froze. Later connections pass normally.
async fn freezing_proxy(backend: SocketAddr) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (freeze, frozen) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut outbound) = TcpStream::connect(backend).await else {
                continue;
            };
            if !std::mem::take(&mut first) {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                continue;
            }
            let mut frozen = frozen.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                    _ = frozen.wait_for(|f| *f) => {}
                }
                // Hold both sockets, move nothing, until the client leaves.
                let mut byte = [0u8; 1];
                let _ = tokio::io::AsyncReadExt::read(&mut inbound, &mut byte).await;
                std::future::pending::<()>().await;
            });
        }
    });
    (addr, freeze)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_connection_is_dropped_and_resumed() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    // One meeting, a line every 20 ms: it keeps streaming while frozen.
    let meetings = numbered_meetings("frozen", 1, 60);
    let mut meetings = meetings;
    for (i, line) in meetings[0].lines.iter_mut().enumerate() {
        line.start = Some(i as f64 * 0.02);
        line.end = Some(i as f64 * 0.02 + 0.01);
    }
    let replay = replay::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        meetings,
        replay::ReplayOptions {
            speed: 1.0,
            partials: false,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let (front, freeze) = freezing_proxy(replay).await;
    let engine = engine(Vec::new());
    let mut events = engine.subscribe();
    let idle = Duration::from_millis(600);
    client::spawn(
        engine.clone(),
        format!("ws://{front}/"),
        client::FeedOptions {
            idle_timeout: idle,
            ..quick_reconnects()
        },
        shutdown.clone(),
    );
    let session = sid("frozen-0");
    common::wait_until(&mut events, Duration::from_secs(10), "some lines", || {
        engine.generation(&session) >= 5
    })
    .await;
    freeze.send_replace(true);
    let reason = common::next_matching(&mut events, idle * 20, |e| match e {
        inflight::events::Event::FeedDisconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("no frame and no pong"), "{reason}");
    common::wait_until(
        &mut events,
        Duration::from_secs(20),
        "every line after the freeze",
        || engine.generation(&session) == 60,
    )
    .await;
    let feed = &engine.feeds().views()[0];
    assert_eq!(feed.connects, 2, "reconnected once");
    assert_eq!(feed.transcripts, 60);
    assert_eq!(feed.duplicates, 0, "resumed after the last line taken");
}

#[tokio::test]
async fn a_handshake_that_never_completes_times_out() {
    // Accepts TCP, then says nothing: no WebSocket handshake ever comes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let engine = engine(Vec::new());
    let mut events = engine.subscribe();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let timeout = Duration::from_millis(300);
    client::spawn(
        engine.clone(),
        format!("ws://{addr}/"),
        client::FeedOptions {
            connect_timeout: timeout,
            ..quick_reconnects()
        },
        shutdown,
    );
    let reason = common::next_matching(&mut events, timeout * 30, |e| match e {
        inflight::events::Event::FeedDisconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("connect timed out after 300ms"), "{reason}");
    assert_eq!(engine.feeds().views()[0].connects, 0);
}

#[tokio::test]
async fn statuses_go_only_up_the_feed_that_sent_the_session() {
    let (quiet, mut quiet_up) = one_client_feed(Vec::new()).await;
    let line = json!({"type": "transcript", "session_id": "mine", "seq": 1, "text": "Hello."});
    let (talking, mut talking_up) = one_client_feed(vec![Message::text(line.to_string())]).await;
    let engine = engine(vec![Operation::SUMMARY]);
    let mut events = engine.subscribe();
    let shutdown = CancellationToken::new();
    for addr in [quiet, talking] {
        client::spawn(
            engine.clone(),
            format!("ws://{addr}/"),
            quick_reconnects(),
            shutdown.clone(),
        );
    }
    common::wait_until(&mut events, Duration::from_secs(10), "the run", || {
        engine.snapshot().totals.counts.ok == 1 && engine.is_idle()
    })
    .await;
    // Stopping closes both sockets: everything each feed got is in.
    shutdown.cancel();
    let mut got = Vec::new();
    for up in [&mut quiet_up, &mut talking_up] {
        let mut texts = Vec::new();
        while let Some(text) = tokio::time::timeout(Duration::from_secs(5), up.recv())
            .await
            .expect("the feed's socket closes")
        {
            if text == "closed" {
                break;
            }
            texts.push(text);
        }
        got.push(texts);
    }
    assert!(
        got[0].is_empty(),
        "the quiet feed got statuses: {:?}",
        got[0]
    );
    assert!(
        got[1].iter().any(|t| t.contains("processing_status")),
        "{:?}",
        got[1]
    );
    assert_eq!(engine.feed_of(&sid("mine")), Some(1));
}
