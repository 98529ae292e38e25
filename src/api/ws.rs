//! `/ws`: the engine's events as the original envelopes, optionally for one
//! session (`?session=ID`).
//!
//! With `?since=ID` the stream is resumable: it opens with a `resume` frame
//! (`next_id`, and `too_old` when events after `ID` are no longer kept, so
//! the client must read the state afresh), sends what the ring kept after
//! `ID`, then the live stream, each message with its `id`.
//!
//! Subscribers are bounded: at most [`WsLimits::max_clients`] at once (503
//! beyond), incoming frames of at most [`WsLimits::max_incoming`] bytes, and a
//! subscriber must keep up. One that falls behind the event stream is closed
//! with 1013; one that does not answer the server's pings, or whose socket
//! takes no more data, within [`WsLimits::timeout`] is dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio::time::Instant;

use super::{ApiState, error};
use crate::events::{Event, EventId, Resumed};
use crate::model::SessionId;
use crate::wire;

/// Close code for a subscriber that could not keep up (RFC 6455: try again later).
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Close code for a subscriber that stopped answering (RFC 6455: policy violation).
pub const CLOSE_POLICY: u16 = 1008;

/// Bounds on `/ws` subscribers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WsLimits {
    /// Subscribers at once; more are refused with 503.
    pub max_clients: usize,
    /// Largest frame a subscriber may send (it has nothing to say but pongs).
    pub max_incoming: usize,
    /// A subscriber silent this long (no pong), or whose socket takes no
    /// data this long, is dropped. Pings go out every third of it.
    pub timeout: Duration,
}

impl Default for WsLimits {
    fn default() -> Self {
        Self {
            max_clients: 64,
            max_incoming: 4096,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The subscribers' seats.
pub struct Subscribers {
    pub(super) limits: WsLimits,
    pub(super) seats: Arc<Semaphore>,
}

impl Subscribers {
    pub fn new(limits: WsLimits) -> Self {
        Self {
            limits,
            seats: Arc::new(Semaphore::new(limits.max_clients)),
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// Only this session's messages.
    #[param(value_type = Option<SessionId>)]
    session: Option<String>,
    /// Resume after this event id: every message then carries its `id`.
    #[param(value_type = Option<u64>)]
    since: Option<EventId>,
}

/// Where a subscriber's stream starts.
enum Start {
    /// Plain: the original envelopes, from now on.
    Now(broadcast::Receiver<Event>),
    /// Resumed: a `resume` frame, what the ring kept, then the live stream,
    /// every message with its id.
    After(Resumed),
}

/// A WebSocket of the original messages: `processing_status` and each
/// operation's `{op}_update` ([`super::openapi::WsMessage`]). With
/// `since`, a `resume` message first, what was missed, then the live
/// stream, each message with its `id`.
#[utoipa::path(get, path = "/ws", tag = "streams",
    params(WsQuery, super::openapi::Handshake),
    responses(
        (status = 101, description = "Switching to a WebSocket; its text messages are `WsMessage`s", body = super::openapi::WsMessage),
        (status = 400, description = "Not a WebSocket handshake, or not a session id", body = super::errors::ErrorJson),
        (status = 503, description = "Too many subscribers (`--api-max-ws-clients`)", body = super::errors::ErrorJson),
    ),
    security(("operator" = []), ("viewer" = [])))]
pub(super) async fn upgrade(
    State(state): State<ApiState>,
    Query(query): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let filter = match query.session.as_deref().map(SessionId::parse) {
        None => None,
        Some(Ok(session)) => Some(session),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let limits = state.ws.limits;
    let Ok(seat) = state.ws.seats.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many /ws subscribers ({}); raise --api-max-ws-clients",
                limits.max_clients
            ),
        );
    };
    // Subscribe before the 101 goes out: a client that acts as soon as its
    // handshake completes must see the events of what it did.
    let start = match query.since {
        None => Start::Now(state.engine.subscribe()),
        Some(seen) => Start::After(state.engine.events().resume(seen)),
    };
    upgrade
        .max_message_size(limits.max_incoming)
        .max_frame_size(limits.max_incoming)
        .on_upgrade(move |socket| stream(socket, state, filter, start, seat))
}

/// The message for one event, if this subscriber gets one; with its id
/// when the stream was resumed.
fn message(
    state: &ApiState,
    filter: Option<&SessionId>,
    event: &Event,
    id: Option<EventId>,
) -> Option<String> {
    let (session, wanted) = wire::wanted(event)?;
    if filter.is_some_and(|f| f != &session) {
        return None;
    }
    let message = wire::message_for(&state.engine, &session, wanted)?;
    Some(match id {
        // The envelope is a JSON object: its id goes in as the last field.
        Some(id) => format!("{},\"id\":{id}}}", message.strip_suffix('}')?),
        None => message,
    })
}

async fn stream(
    socket: WebSocket,
    state: ApiState,
    filter: Option<SessionId>,
    start: Start,
    _seat: OwnedSemaphorePermit,
) {
    let timeout = state.ws.limits.timeout;
    let (mut sink, mut incoming) = socket.split();
    let (mut events, mut next_id) = match start {
        Start::Now(events) => (events, None),
        Start::After(resumed) => {
            let hello = ResumeJson {
                kind: "resume".into(),
                next_id: resumed.next_id,
                too_old: resumed.too_old,
                replayed: resumed.replay.len(),
            };
            let mut first = vec![serde_json::to_string(&hello).unwrap_or_default()];
            first.extend(
                resumed
                    .replay
                    .iter()
                    .filter_map(|(id, e)| message(&state, filter.as_ref(), e, Some(*id))),
            );
            for text in first {
                match tokio::time::timeout(timeout, sink.send(Message::Text(text.into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return,
                }
            }
            (resumed.receiver, Some(resumed.next_id))
        }
    };
    let mut ping = tokio::time::interval_at(Instant::now() + timeout / 3, timeout / 3);
    let mut heard_at = Instant::now();
    let close = loop {
        let outgoing = tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    // Every event for subscribers takes an id, as the
                    // journal numbers them, sent to this one or not.
                    if !event.for_subscribers() {
                        continue;
                    }
                    let id = next_id;
                    next_id = next_id.map(|n| n + 1);
                    let Some(text) = message(&state, filter.as_ref(), &event, id) else { continue };
                    Message::Text(text.into())
                }
                Err(RecvError::Lagged(missed)) => {
                    break Some((CLOSE_TRY_AGAIN_LATER, format!("fell behind: {missed} events dropped; reconnect")));
                }
                Err(RecvError::Closed) => break None,
            },
            _ = ping.tick() => {
                if heard_at.elapsed() >= timeout {
                    break Some((CLOSE_POLICY, format!("no answer to pings for {}s", timeout.as_secs())));
                }
                Message::Ping(Default::default())
            }
            incoming = incoming.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {
                    heard_at = Instant::now();
                    continue;
                }
            },
        };
        match tokio::time::timeout(timeout, sink.send(outgoing)).await {
            Ok(Ok(())) => {}
            // The peer is gone, or its socket took nothing for `timeout`.
            Ok(Err(_)) | Err(_) => return,
        }
    };
    if let Some((code, reason)) = close {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(timeout, sink.send(frame)).await;
    }
}

/// The first message of a resumed `/ws`: where the stream goes on from,
/// and whether what was missed could be replayed. `inflight attach` reads
/// it with this same type.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = WsResume)]
pub struct ResumeJson {
    /// `resume`.
    #[serde(rename = "type")]
    #[schema(pattern = "^resume$")]
    pub kind: std::borrow::Cow<'static, str>,
    /// The id the next message will carry.
    #[schema(value_type = u64)]
    pub next_id: crate::events::EventId,
    /// Events after `since` are no longer kept: read the state afresh.
    pub too_old: bool,
    /// How many kept messages follow before the live stream.
    #[schema(value_type = u64)]
    pub replayed: usize,
}
