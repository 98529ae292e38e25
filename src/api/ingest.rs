//! Transcripts pushed in, for a transcription service that is the client:
//!
//! - `POST /api/transcripts`: a batch of native protocol messages, as a
//!   JSON array or as NDJSON (one message a line). The answer counts, per
//!   session, the lines taken, the duplicates (a `seq` already held) and
//!   the refusals with why; lines that name no session are listed apart.
//! - `GET /ingest`: a WebSocket that speaks the native protocol, as a feed
//!   inflight dials does, the other way round. On connect inflight sends a
//!   `hello` with the last `seq` it holds of each session pushed in, so the
//!   pusher can resume; then `processing_status` (and, with
//!   `?results=true`, `{op}_update`) for those sessions, on the same socket.
//!
//! Both go through the engine as any feed does (the `seq` dedupe,
//! `--max-sessions`, the frame limits, the bad-frame counters) and both
//! count on one inbound feed status, shown with the dialled feeds. Both
//! need the ingest token, which may do nothing else (`auth.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::ApiState;
use super::errors::error;
use crate::engine::feeds::{BadFrame, FeedState, FeedStatus};
use crate::engine::{Appended, Engine};
use crate::feed::adapters::{Decoder, FeedFormat};
use crate::feed::client::{Took, take_message};
use crate::feed::protocol::{self, FeedMessage, FrameError, MAX_FRAME_BYTES};
use crate::feed::upstream::{Closing, Upstream, Writer};

/// How many pushers, and how large a batch (`--api-max-ingest-sockets`,
/// `--api-max-batch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// `/ingest` sockets open at once; more are refused with 503.
    pub max_sockets: usize,
    /// Bytes of a `POST /api/transcripts` body; more are refused with 413.
    pub max_batch: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_sockets: 64,
            max_batch: 8 << 20,
        }
    }
}
/// An `/ingest` socket that brings no frame (not even a pong to inflight's
/// pings, sent every third of this) for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines a batch answer lists that name no session (the rest are counted).
const UNREADABLE_LISTED: usize = 20;

/// Pushing, when the ingest token is configured: the inbound feed status
/// and the sockets open on it.
pub struct Inbound {
    status: Arc<FeedStatus>,
    sockets: AtomicUsize,
    limits: IngestLimits,
}

impl Inbound {
    pub fn new(engine: &Engine, limits: IngestLimits) -> Self {
        Self {
            status: engine
                .feeds()
                .register_inbound("pushed in: POST /api/transcripts, GET /ingest"),
            sockets: AtomicUsize::new(0),
            limits,
        }
    }
}

/// What a batch did, per session and in all.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BatchAnswer {
    /// Messages read from the body (empty lines of NDJSON not counted).
    pub lines: u64,
    pub taken: u64,
    pub duplicates: u64,
    pub refused: u64,
    pub sessions: BTreeMap<String, SessionCounts>,
    /// Lines that name no session, with why: the first few of them.
    pub unreadable: Vec<Unreadable>,
    /// How many lines named no session (listed or not).
    pub unreadable_count: u64,
}

/// What a batch did to one session.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SessionCounts {
    /// Final transcripts stored.
    pub taken: u64,
    /// Transcripts whose `seq` the session already held: dropped.
    pub duplicates: u64,
    /// Partial transcripts: the live line moved, nothing stored.
    pub partials: u64,
    /// Messages refused, with why (`store_full`, `bad_seq`, …) and how many.
    pub refused: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub why: BTreeMap<String, u64>,
    /// A `session_end` was among them.
    #[serde(default)]
    pub ended: bool,
}

/// A line that names no session, and why it was refused.
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Unreadable {
    /// Its place in the batch, from 1.
    pub line: u64,
    pub why: String,
}

/// `POST /api/transcripts`: a batch of feed messages, as a JSON array or
/// as NDJSON (one message a line).
#[utoipa::path(post, path = "/api/transcripts", tag = "ingest",
    request_body(description = "Feed messages (see the feed protocol): a JSON array of them, or one a line",
        content((super::openapi::FeedBatch = "application/json"), (super::openapi::FeedLines = "application/x-ndjson"))),
    responses(
        (status = 200, description = "What the batch did, per session and in all", body = BatchAnswer),
        (status = 400, description = "Not UTF-8, JSON that is not (typed `application/json`, or starting as an array), or no message", body = super::errors::ErrorJson),
        (status = 403, description = "Pushing is off, or not the ingest token", body = super::errors::ErrorJson),
        (status = 413, description = "A batch past `--api-max-batch`", body = super::errors::ErrorJson),
    ),
    security(("ingest" = [])))]
pub(super) async fn push_batch(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let Some(inbound) = state.inbound.clone() else {
        return off();
    };
    let engine = &state.engine;
    let status = &inbound.status;
    // A batch waits, whole, while the database's writer is behind, as a
    // feed waits between frames (`db/pace.rs`).
    if engine.feed_waits_for_writes(status) {
        engine.writes_caught_up().await;
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        status.count_bad(BadFrame::InvalidUtf8);
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    let mut answer = BatchAnswer::default();
    // Typed JSON is one JSON value: an array of messages, or one message.
    // Anything else is NDJSON, but a body that starts as an array.
    let typed_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if typed_json || text.trim_start().starts_with('[') {
        let items = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Array(items)) => items,
            Ok(one) => vec![one],
            Err(e) => {
                status.count_bad(BadFrame::InvalidJson);
                let what = if typed_json {
                    "the body is typed application/json but is not JSON"
                } else {
                    "the body starts as a JSON array but is not one"
                };
                return error(StatusCode::BAD_REQUEST, format!("{what}: {e}"));
            }
        };
        for (i, item) in items.into_iter().enumerate() {
            let session = item
                .get("session_id")
                .and_then(|s| s.as_str())
                .map(str::to_string);
            let parsed = protocol::parse_value(item);
            take(engine, status, &mut answer, i as u64 + 1, session, parsed);
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed = protocol::parse(line);
            let session = match &parsed {
                Ok(_) => None,
                Err(_) => serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("session_id")?.as_str().map(str::to_string)),
            };
            take(engine, status, &mut answer, i as u64 + 1, session, parsed);
        }
    }
    if answer.lines == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "no messages: send a JSON array of native messages, or one a line (NDJSON)",
        );
    }
    status.saw_message();
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// Takes one message of a batch in and counts what became of it.
fn take(
    engine: &Engine,
    status: &FeedStatus,
    answer: &mut BatchAnswer,
    line: u64,
    named: Option<String>,
    parsed: Result<FeedMessage, FrameError>,
) {
    answer.lines += 1;
    let refuse = |answer: &mut BatchAnswer, session: Option<String>, why: &str, detail: String| {
        answer.refused += 1;
        match session {
            Some(session) => {
                let counts = answer.sessions.entry(session).or_default();
                counts.refused += 1;
                *counts.why.entry(why.to_string()).or_default() += 1;
            }
            None => {
                answer.unreadable_count += 1;
                if answer.unreadable.len() < UNREADABLE_LISTED {
                    answer.unreadable.push(Unreadable { line, why: detail });
                }
            }
        }
    };
    let took = match parsed {
        Ok(message) => take_message(engine, status, message),
        Err(e) => {
            let kind = e.kind();
            status.count_bad(kind);
            // A session id that is itself the trouble names no session.
            let named = named.filter(|_| kind != BadFrame::BadSessionId);
            return refuse(answer, named, kind.as_str(), e.to_string());
        }
    };
    match took {
        Took::Transcript(session, appended) => {
            let session = session.to_string();
            match appended {
                Appended::Final { .. } => {
                    answer.taken += 1;
                    answer.sessions.entry(session).or_default().taken += 1;
                }
                Appended::Duplicate => {
                    answer.duplicates += 1;
                    answer.sessions.entry(session).or_default().duplicates += 1;
                }
                Appended::Partial { .. } => {
                    answer.sessions.entry(session).or_default().partials += 1
                }
                Appended::Refused => refuse(
                    answer,
                    Some(session),
                    "store_full",
                    "the store is full (--max-sessions)".into(),
                ),
            }
        }
        Took::Ended(session) => {
            answer
                .sessions
                .entry(session.to_string())
                .or_default()
                .ended = true;
        }
        Took::Hello => {
            status.count_bad(BadFrame::UnknownType);
            refuse(
                answer,
                named,
                "unknown_type",
                "a hello belongs on a socket".into(),
            );
        }
    }
}

/// Pushing is off: no ingest token is configured.
fn off() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "pushing is off: no ingest token is configured (--api-ingest-token)",
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct IngestQuery {
    /// Send `processing_status` of the pushed sessions (default: yes).
    statuses: Option<bool>,
    /// Send each fresh result as `{op}_update` (default: no).
    results: Option<bool>,
}

/// `GET /ingest`: a WebSocket that takes feed messages, one a text
/// message, and says back what became of the sessions pushed.
#[utoipa::path(get, path = "/ingest", tag = "ingest",
    params(IngestQuery, super::openapi::Handshake),
    responses(
        (status = 101, description = "Switching to a WebSocket: a `welcome` message first, then `processing_status` (and with `results=true` each `{op}_update`) of the sessions pushed"),
        (status = 400, description = "Not a WebSocket handshake", body = super::errors::ErrorJson),
        (status = 403, description = "Pushing is off, or not the ingest token", body = super::errors::ErrorJson),
        (status = 503, description = "Too many sockets (`--api-max-ingest-sockets`)", body = super::errors::ErrorJson),
    ),
    security(("ingest" = [])))]
pub(super) async fn upgrade(
    State(state): State<ApiState>,
    Query(query): Query<IngestQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(inbound) = state.inbound.clone() else {
        return off();
    };
    let most = inbound.limits.max_sockets;
    if inbound.sockets.fetch_add(1, Ordering::AcqRel) >= most {
        inbound.sockets.fetch_sub(1, Ordering::AcqRel);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many /ingest sockets ({most}); raise --api-max-ingest-sockets"),
        );
    }
    let open = Open(inbound.clone());
    let upstream = Upstream {
        feed: inbound.status.index,
        statuses: query.statuses.unwrap_or(true),
        results: query.results.unwrap_or(false),
        ping_every: IDLE_TIMEOUT / 3,
    };
    let engine = state.engine.clone();
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| read(socket, engine, open, upstream))
}

/// One open `/ingest` socket: the inbound status shows connected while
/// any is open.
struct Open(Arc<Inbound>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.sockets.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.status.set_state(FeedState::Listening);
        }
    }
}

/// What inbound says to a pusher on connect.
#[derive(Serialize)]
struct Welcome<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    server: &'static str,
    resume: &'a BTreeMap<String, u64>,
}

/// Reads one pusher's socket to its end.
async fn read(socket: WebSocket, engine: Engine, open: Open, upstream: Upstream) {
    let status = open.0.status.clone();
    status.connects.fetch_add(1, Ordering::Relaxed);
    status.set_state(FeedState::Connected);
    let (mut sink, mut source) = socket.split();
    let resume = engine.resume_points(status.index);
    let welcome = Welcome {
        kind: "hello",
        server: concat!("inflight/", env!("CARGO_PKG_VERSION")),
        resume: &resume,
    };
    let Ok(welcome) = serde_json::to_string(&welcome) else {
        return;
    };
    use futures_util::SinkExt;
    if sink.send(Message::text(welcome)).await.is_err() {
        return;
    }
    let writer = Writer::spawn(sink, engine.clone(), upstream);
    let mut decoder = Decoder::new(FeedFormat::Native, "ingest");
    let silence = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(silence);
    loop {
        // As a dialled feed does: nothing is read while the database's
        // writer is behind (`db/pace.rs`).
        let paced = engine.feed_waits_for_writes(&status);
        let next = tokio::select! {
            next = source.next(), if !paced => next,
            _ = engine.writes_caught_up(), if paced => {
                silence.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
                continue;
            }
            _ = &mut silence, if !paced => break,
        };
        silence.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
        match next {
            Some(Ok(Message::Text(text))) => {
                status.saw_message();
                crate::feed::client::handle_text(&engine, &status, &mut decoder, text.as_str());
            }
            Some(Ok(Message::Binary(_))) => {
                status.saw_message();
                crate::feed::client::note_bad(&status, BadFrame::Binary, "binary frame");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(e)) => {
                let detail = e.to_string();
                let oversized = e
                    .into_inner()
                    .downcast::<tokio_tungstenite::tungstenite::Error>()
                    .is_ok_and(|e| {
                        matches!(*e, tokio_tungstenite::tungstenite::Error::Capacity(_))
                    });
                if oversized {
                    crate::feed::client::note_bad(&status, BadFrame::Oversized, &detail);
                    writer.finish(Closing::TooBig).await;
                    return;
                }
                break;
            }
        }
    }
    writer.finish(Closing::Normal).await;
    drop(open);
}
