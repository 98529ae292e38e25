//! The local API under hostile clients over real sockets: web pages (a
//! foreign `Origin`, a rebound `Host`), and `/ws` subscribers that never
//! answer, crowd in, or send too much.

use crate::common;

use crate::common::api_server;

use std::time::Duration;

use api_server::{http, server_with};
use futures_util::{SinkExt, StreamExt};
use inflight::api::{ApiConfig, WsLimits};
use inflight::model::Operation;
use inflight::state::Policy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};

/// One HTTP/1.1 request written by hand, so `Host` is exactly what a
/// browser after DNS rebinding would send; returns the status code.
async fn raw_request(addr: std::net::SocketAddr, request_line: &str, host: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{request_line}\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

fn ws_status(result: Result<impl Sized, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => 101,
    }
}

#[tokio::test]
async fn web_pages_of_other_origins_are_refused_on_every_route() {
    let s = server_with(
        Policy::Coalesce,
        ApiConfig {
            allowed_origins: vec!["https://ops.example.com".into()],
            ..Default::default()
        },
    )
    .await;
    common::open_session(&s.engine, "evil-session");
    let trigger = format!("{}/api/sessions/evil-session/operations/summary", s.base);
    let evil = "https://evil.example";

    let response = http()
        .post(&trigger)
        .header("Origin", evil)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--api-allow-origin"),
        "{body}"
    );
    assert!(
        !s.engine.status(&common::sid("evil-session")).any_processing,
        "a refused trigger calls no LLM"
    );
    for path in [
        "/api/sessions",
        "/api/sessions/evil-session",
        "/api/feeds",
        "/api/llm/processing-status/evil-session",
        "/metrics",
        "/healthz",
    ] {
        let response = http()
            .get(format!("{}{path}", s.base))
            .header("Origin", evil)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403, "{path}");
    }
    let mut upgrade =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{}/ws", s.addr))
            .unwrap();
    upgrade
        .headers_mut()
        .insert("origin", evil.parse().unwrap());
    assert_eq!(
        ws_status(tokio_tungstenite::connect_async(upgrade).await),
        403
    );

    // The allowed origin, and tools that send none, get through.
    let response = http()
        .post(&trigger)
        .header("Origin", "https://ops.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let response = http().get(format!("{}/api/sessions", s.base)).send().await;
    assert_eq!(response.unwrap().status().as_u16(), 200);
}

#[tokio::test]
async fn a_rebound_host_is_refused_on_loopback() {
    let s = server_with(
        Policy::Coalesce,
        ApiConfig {
            allowed_hosts: vec!["inflight.internal".into()],
            ..Default::default()
        },
    )
    .await;
    common::open_session(&s.engine, "secret-meeting");
    let port = s.addr.port();
    for host in ["evil.example".to_string(), format!("evil.example:{port}")] {
        assert_eq!(
            raw_request(s.addr, "GET /api/sessions HTTP/1.1", &host).await,
            403,
            "{host}"
        );
        assert_eq!(
            raw_request(s.addr, "GET /ws HTTP/1.1", &host).await,
            403,
            "{host}"
        );
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "inflight.internal".to_string(),
    ] {
        assert_eq!(
            raw_request(s.addr, "GET /api/sessions HTTP/1.1", &host).await,
            200,
            "{host}"
        );
    }
}

#[tokio::test]
async fn a_subscriber_that_never_answers_is_dropped() {
    let s = server_with(
        Policy::Coalesce,
        ApiConfig {
            ws: WsLimits {
                max_clients: 1,
                timeout: Duration::from_millis(300),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.addr))
        .await
        .unwrap();
    // The only seat is taken.
    assert_eq!(
        ws_status(tokio_tungstenite::connect_async(format!("ws://{}/ws", s.addr)).await),
        503
    );
    // From here on nobody speaks WebSocket on this side: the server's pings
    // go unanswered. Read the raw bytes until the server hangs up.
    let mut raw = match ws.into_inner() {
        tokio_tungstenite::MaybeTlsStream::Plain(stream) => stream,
        _ => unreachable!("plain ws://"),
    };
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut seen))
        .await
        .expect("the server hangs up on a subscriber that never answers")
        .ok();
    // A close frame with 1008 (0x03F0) and the reason.
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("no answer to pings"), "{text:?}");
    assert!(
        seen.windows(2).any(|w| w == [0x03, 0xF0]),
        "close code 1008"
    );
    // Its seat is free again.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws?session=s", s.addr))
        .await
        .expect("the seat was given back");
    common::open_session(&s.engine, "s");
    s.engine.request(&common::sid("s"), Operation::SUMMARY);
    let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    assert!(message.is_text());
}

/// How a subscriber's connection ended after it sent one frame of `size`
/// bytes: `Ok(close code)` for a close frame (`None` without one), or
/// `Err` if it is still open. A ping follows the frame: the server reads
/// frames in order, so its pong says it read the frame and kept going.
async fn after_a_frame_of(size: usize) -> Result<Option<u16>, Message> {
    let s = server_with(Policy::Coalesce, ApiConfig::default()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.addr))
        .await
        .unwrap();
    ws.send(Message::text("x".repeat(size))).await.unwrap();
    // The send can fail once the server has dropped the connection.
    let _ = ws.send(Message::Ping(b"after".to_vec().into())).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return Ok(None),
                Some(Ok(Message::Close(frame))) => return Ok(frame.map(|f| u16::from(f.code))),
                Some(Ok(pong @ Message::Pong(_))) => return Err(pong),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("a pong or the end of the connection")
}

#[tokio::test]
async fn a_subscriber_that_sends_one_byte_past_the_frame_limit_is_dropped() {
    let limit = inflight::api::WsLimits::default().max_incoming;
    assert_eq!(limit, 4096, "the documented default");
    let at_limit = after_a_frame_of(limit).await;
    assert!(
        at_limit.is_err(),
        "a frame of the limit is taken: {at_limit:?}"
    );
    let past = after_a_frame_of(limit + 1).await;
    assert!(
        matches!(past, Ok(None | Some(1009))),
        "one byte more ends the connection (1009 when a code is sent): {past:?}"
    );
}

/// `/api/recording` shares `/ws`'s seats: a client beyond them is refused,
/// one that leaves gives its seat back, and while none listens the engine
/// records nothing.
#[tokio::test]
async fn recording_clients_take_the_websocket_seats_and_hear_what_arrives() {
    let s = server_with(
        Policy::Coalesce,
        ApiConfig {
            ws: WsLimits {
                max_clients: 1,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let url = format!("ws://{}/api/recording", s.addr);
    let (mut client, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let first = |message: Option<Result<Message, tungstenite::Error>>| -> serde_json::Value {
        let Some(Ok(Message::Text(text))) = message else {
            panic!("expected a record, got {message:?}");
        };
        serde_json::from_str(&text).unwrap()
    };
    let header = first(client.next().await);
    assert_eq!(header["k"], "recording");
    assert_eq!(header["version"], inflight::record::FORMAT_VERSION);
    assert!(s.engine.events().recording().is_some());
    // Beyond the seats, for either WebSocket.
    assert_eq!(ws_status(tokio_tungstenite::connect_async(&url).await), 503);
    assert_eq!(
        ws_status(tokio_tungstenite::connect_async(format!("ws://{}/ws", s.addr)).await),
        503
    );
    s.engine
        .ingest(common::final_line("s1", 1, "we ship"), None);
    let transcript = loop {
        let record = first(client.next().await);
        if record["k"] == "transcript" {
            break record;
        }
    };
    assert_eq!(transcript["line"]["text"], "we ship");
    client.close(None).await.unwrap();
    drop(client);
    // Once the server sees it gone, nothing records, and its seat is free.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.engine.events().recording().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client's subscription outlived it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (again, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("the seat was given back");
    drop(again);
}
