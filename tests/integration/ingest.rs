//! Transcripts pushed in over a real loopback socket: `POST
//! /api/transcripts` batches and the `/ingest` WebSocket, their counts,
//! resuming, what goes back up, and who may push.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use inflight::api::ApiConfig;
use inflight::api::ingest::BatchAnswer;
use inflight::engine::{Engine, EngineConfig, SessionLimits};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::SessionId;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::api_server::{Server, http, serving};

const PUSH: &str = "push-secret";
const OPERATOR: &str = "operator-secret";
const VIEWER: &str = "viewer-secret";

fn api() -> ApiConfig {
    ApiConfig {
        token: Some(OPERATOR.into()),
        read_token: Some(VIEWER.into()),
        ingest_token: Some(PUSH.into()),
        ..Default::default()
    }
}

/// An engine whose runs answer after `latency`, holding at most
/// `max_sessions`.
fn engine(latency: Duration, max_sessions: usize) -> Engine {
    Engine::new(
        EngineConfig {
            sessions: SessionLimits {
                max_sessions,
                ..Default::default()
            },
            ..Default::default()
        },
        Arc::new(BuiltinBackend::new(LatencyRange::fixed(latency))),
    )
}

fn line(session: &str, seq: u64) -> Value {
    json!({"type": "transcript", "session_id": session, "seq": seq, "text": format!("line {seq} of {session}")})
}

async fn post(s: &Server, token: Option<&str>, body: String) -> (u16, String) {
    let mut request = http()
        .post(format!("{}/api/transcripts", s.base))
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn push(s: &Server, body: String) -> BatchAnswer {
    let (code, text) = post(s, Some(PUSH), body).await;
    assert_eq!(code, 200, "{text}");
    serde_json::from_str(&text).expect("a batch answer")
}

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/ingest` with `token`; the handshake's refusal status otherwise.
async fn open(s: &Server, query: &str, token: &str) -> Result<Socket, u16> {
    let mut request = format!("ws://{}/ingest{query}", s.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("connect: {e}"),
    }
}

/// The next text message, as JSON.
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("JSON");
        }
    }
}

/// Opens `/ingest` and reads its hello: the last seq held per session.
async fn connect(s: &Server, query: &str) -> (Socket, BTreeMap<String, u64>) {
    let mut socket = open(s, query, PUSH)
        .await
        .expect("the ingest token opens /ingest");
    let hello = next_json(&mut socket).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    let resume = serde_json::from_value(hello["resume"].clone()).expect("resume points");
    (socket, resume)
}

fn feed(s: &Server) -> inflight::engine::FeedView {
    s.engine
        .feeds()
        .views()
        .into_iter()
        .find(|f| f.inbound)
        .expect("the inbound feed")
}

#[tokio::test]
async fn only_the_ingest_token_pushes_and_it_does_nothing_else() {
    let s = serving(engine(Duration::from_secs(30), 100), api()).await;
    let body = ndjson(&[line("auth", 1)]);
    assert_eq!(post(&s, None, body.clone()).await.0, 401);
    assert_eq!(post(&s, Some("wrong"), body.clone()).await.0, 401);
    let (code, text) = post(&s, Some(OPERATOR), body.clone()).await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("ingest token"), "{text}");
    assert_eq!(post(&s, Some(VIEWER), body.clone()).await.0, 403);
    assert_eq!(open(&s, "", OPERATOR).await.err(), Some(403));
    assert_eq!(open(&s, "", "wrong").await.err(), Some(401));
    // Pushing takes nothing else in.
    assert_eq!(s.engine.generation(&SessionId::parse("auth").unwrap()), 0);

    // The ingest token reads and triggers nothing.
    let response = http()
        .get(format!("{}/api/sessions", s.base))
        .bearer_auth(PUSH)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let response = http()
        .post(format!("{}/api/sessions/auth/operations/summary", s.base))
        .bearer_auth(PUSH)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);

    // Web pages are kept out of pushing too.
    let response = http()
        .post(format!("{}/api/transcripts", s.base))
        .bearer_auth(PUSH)
        .header("origin", "https://evil.example")
        .body(ndjson(&[line("web", 1)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(s.engine.generation(&SessionId::parse("web").unwrap()), 0);

    assert_eq!(push(&s, body).await.taken, 1);

    // Without an ingest token, pushing is off, whatever the token.
    let closed = serving(
        engine(Duration::from_secs(30), 100),
        ApiConfig {
            token: Some(OPERATOR.into()),
            ..Default::default()
        },
    )
    .await;
    let (code, text) = post(&closed, Some(OPERATOR), ndjson(&[line("x", 1)])).await;
    assert_eq!(code, 403);
    assert!(text.contains("pushing is off"), "{text}");
    assert!(closed.engine.feeds().views().is_empty(), "no inbound feed");
}

#[tokio::test]
async fn ten_thousand_lines_pushed_by_batch_and_socket_with_replays_and_reconnects_are_each_stored_once()
 {
    let s = serving(engine(Duration::from_secs(30), 100), api()).await;
    let sessions: Vec<String> = (0..20).map(|i| format!("push-{i}")).collect();
    const PER_SESSION: u64 = 500;
    let mut duplicates_sent = 0;

    // Batches: the first 150 lines of each session, as JSON arrays and as
    // NDJSON in turn, each batch sent twice (a pusher that retried).
    for (round, from) in (1..=150).step_by(25).enumerate() {
        let lines: Vec<Value> = sessions
            .iter()
            .flat_map(|session| (from..from + 25).map(move |seq| line(session, seq)))
            .collect();
        let body = if round % 2 == 0 {
            Value::Array(lines.clone()).to_string()
        } else {
            ndjson(&lines)
        };
        let first = push(&s, body.clone()).await;
        assert_eq!((first.lines, first.taken, first.duplicates), (500, 500, 0));
        assert_eq!(first.sessions["push-3"].taken, 25);
        let again = push(&s, body).await;
        assert_eq!((again.taken, again.duplicates), (0, 500));
        assert_eq!(again.sessions["push-3"].duplicates, 25);
        duplicates_sent += 500;
    }

    // The socket: resumes where the batches left off, sends part, drops
    // the connection, and resumes from what the next hello says was taken
    // (a dropped connection may lose what was still in flight).
    let held = |session: &str| s.engine.generation(&SessionId::parse(session).unwrap());
    for connection in 0..3u64 {
        let (mut socket, resume) = connect(&s, "").await;
        for session in &sessions {
            assert_eq!(
                resume.get(session).copied(),
                Some(held(session)),
                "connection {connection}: {session} resumes after what was taken"
            );
        }
        let last = if connection == 2 {
            PER_SESSION
        } else {
            150 + (connection + 1) * 100
        };
        for session in &sessions {
            let from = resume[session] + 1;
            // A replay of the last 5 lines already held, then new ones.
            for seq in from.saturating_sub(5).max(1)..from {
                socket
                    .send(Message::text(line(session, seq).to_string()))
                    .await
                    .unwrap();
                duplicates_sent += 1;
            }
            for seq in from..=last {
                socket
                    .send(Message::text(line(session, seq).to_string()))
                    .await
                    .unwrap();
            }
        }
        // A ping's pong comes back once inflight has read all sent before.
        socket
            .send(Message::Ping(Default::default()))
            .await
            .unwrap();
        loop {
            match socket.next().await {
                Some(Ok(Message::Pong(_))) => break,
                Some(Ok(_)) => continue,
                other => panic!("no pong: {other:?}"),
            }
        }
        if connection < 2 {
            // More lines, then dropped without a goodbye, the way a crashing
            // pusher leaves: what was in flight may be lost, and the next
            // hello says what was taken.
            for session in &sessions {
                for seq in last + 1..=last + 10 {
                    socket
                        .send(Message::text(line(session, seq).to_string()))
                        .await
                        .unwrap();
                }
            }
            drop(socket);
        } else {
            // A goodbye: once inflight's Close comes back, it has read all.
            socket.close(None).await.unwrap();
            while let Some(Ok(_)) = socket.next().await {}
        }
        // The old socket's reader is done once the feed listens again.
        tokio::time::timeout(Duration::from_secs(20), async {
            while feed(&s).state.word() != "listening" {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the dropped socket is noticed");
    }
    for session in &sessions {
        assert_eq!(held(session), PER_SESSION, "{session}: every line taken");
    }

    let feed = feed(&s);
    assert_eq!(feed.transcripts, 20 * PER_SESSION, "each line stored once");
    assert_eq!(feed.duplicates, duplicates_sent);
    assert_eq!(feed.connects, 3);
    for session in &sessions {
        let detail = s
            .engine
            .session_detail(&SessionId::parse(session).unwrap(), 0)
            .expect("held");
        assert_eq!(detail.row.transcripts, PER_SESSION);
    }
}

#[tokio::test]
async fn a_batch_answer_says_per_session_what_was_refused_and_why() {
    let s = serving(engine(Duration::from_secs(30), 2), api()).await;
    let body = [
        line("a", 1).to_string(),
        json!({"type": "transcript", "session_id": "a", "seq": 1u64 << 60, "text": "far"}).to_string(),
        json!({"type": "transcript", "session_id": "a", "seq": 2, "text": "x", "kind": "Not A Kind"}).to_string(),
        json!({"type": "transcript", "session_id": "a", "seq": 3, "text": "soon", "final": false}).to_string(),
        "{not json".to_string(),
        json!({"type": "weather", "session_id": "b"}).to_string(),
        line("b", 1).to_string(),
        // The store holds two sessions: a third is refused.
        line("c", 1).to_string(),
        json!({"type": "session_end", "session_id": "b"}).to_string(),
        String::new(),
    ]
    .join("\n");
    let answer = push(&s, body).await;
    assert_eq!(answer.lines, 9, "the empty line is no message");
    assert_eq!((answer.taken, answer.refused), (2, 5));
    let a = &answer.sessions["a"];
    assert_eq!((a.taken, a.partials, a.refused), (1, 1, 2));
    assert_eq!(a.why["bad_seq"], 1);
    assert_eq!(a.why["invalid_json"], 1, "a bad kind: {:?}", a.why);
    let b = &answer.sessions["b"];
    assert_eq!((b.taken, b.refused, b.ended), (1, 1, true));
    assert_eq!(b.why["unknown_type"], 1);
    assert_eq!(answer.sessions["c"].why["store_full"], 1);
    assert_eq!(answer.unreadable_count, 1);
    assert_eq!(answer.unreadable[0].line, 5);
    assert!(answer.unreadable[0].why.contains("invalid JSON"));

    // Counted on the inbound feed as any feed counts its bad frames.
    let feed = feed(&s);
    assert_eq!((feed.transcripts, feed.refused_sessions), (2, 1));
    assert_eq!(feed.bad_frames, 4);

    // Not a batch at all.
    let (code, text) = post(&s, Some(PUSH), "[{\"type\": ".into()).await;
    assert_eq!(code, 400, "{text}");
    let (code, _) = post(&s, Some(PUSH), "\n\n".into()).await;
    assert_eq!(code, 400);
    // Batches may be larger than the API's other bodies.
    let big: Vec<Value> = (1..=400).map(|seq| line("a", 100 + seq)).collect();
    let answer = push(&s, Value::Array(big).to_string()).await;
    assert_eq!(answer.taken, 400);
}

#[tokio::test]
async fn a_pusher_hears_its_sessions_statuses_and_results_and_counts_as_a_feed() {
    let s = serving(engine(Duration::from_millis(20), 100), api()).await;
    assert_eq!(feed(&s).state.word(), "listening");
    let ready = http()
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "no pusher is no reason to be unready"
    );

    let (mut socket, resume) = connect(&s, "?results=true").await;
    assert!(resume.is_empty());
    assert_eq!(feed(&s).state.word(), "connected");
    let feeds: Value = http()
        .get(format!("{}/api/feeds", s.base))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let inbound = feeds["feeds"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["direction"] == "in"))
        .unwrap_or_else(|| panic!("the inbound feed in {feeds}"));
    assert_eq!(inbound["state"], "connected");

    socket
        .send(Message::text(line("heard", 1).to_string()))
        .await
        .unwrap();
    let (mut status, mut result) = (false, false);
    while !(status && result) {
        let message = next_json(&mut socket).await;
        assert_eq!(message["sessionId"], "heard", "{message}");
        match message["type"].as_str() {
            Some("processing_status") => status = true,
            Some("summary_update") => result = true,
            _ => {}
        }
    }

    // A frame over the limit closes the socket with 1009 and is counted.
    socket
        .send(Message::text("x".repeat(2 << 20)))
        .await
        .unwrap();
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1009));
    let feed_now = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let now = feed(&s);
            if now.state.word() == "listening" {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("listening again once the pusher is gone");
    assert_eq!(feed_now.bad_frames, 1);
}

#[tokio::test]
async fn pushers_and_batches_past_their_limits_are_refused() {
    let s = serving(
        engine(Duration::from_secs(30), 100),
        ApiConfig {
            ingest: inflight::api::ingest::IngestLimits {
                max_sockets: 1,
                max_batch: 2048,
            },
            ..api()
        },
    )
    .await;
    let (first, _) = connect(&s, "").await;
    assert_eq!(open(&s, "", PUSH).await.err(), Some(503), "a second pusher");
    drop(first);

    let small: Vec<Value> = (1..=5).map(|seq| line("big", seq)).collect();
    assert_eq!(push(&s, ndjson(&small)).await.taken, 5);
    let large: Vec<Value> = (6..=60).map(|seq| line("big", seq)).collect();
    let body = ndjson(&large);
    assert!(body.len() > 2048);
    let (code, text) = post(&s, Some(PUSH), body).await;
    assert_eq!(code, 413, "{text}");
    assert_eq!(
        s.engine.generation(&SessionId::parse("big").unwrap()),
        5,
        "none of it taken"
    );
}
