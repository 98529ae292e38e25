//! `/ws`: the engine's events as the original envelopes, optionally for one
//! session (`?session=ID`).
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
use crate::events::Event;
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
    limits: WsLimits,
    seats: Arc<Semaphore>,
}

impl Subscribers {
    pub fn new(limits: WsLimits) -> Self {
        Self {
            limits,
            seats: Arc::new(Semaphore::new(limits.max_clients)),
        }
    }
}

#[derive(Deserialize)]
pub struct WsQuery {
    session: Option<String>,
}

pub async fn upgrade(
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
    let events = state.engine.subscribe();
    upgrade
        .max_message_size(limits.max_incoming)
        .max_frame_size(limits.max_incoming)
        .on_upgrade(move |socket| stream(socket, state, filter, events, seat))
}

async fn stream(
    socket: WebSocket,
    state: ApiState,
    filter: Option<SessionId>,
    mut events: broadcast::Receiver<Event>,
    _seat: OwnedSemaphorePermit,
) {
    let timeout = state.ws.limits.timeout;
    let (mut sink, mut incoming) = socket.split();
    let mut ping = tokio::time::interval_at(Instant::now() + timeout / 3, timeout / 3);
    let mut heard_at = Instant::now();
    let close = loop {
        let outgoing = tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let Some((session, wanted)) = wire::wanted(&event) else { continue };
                    if filter.as_ref().is_some_and(|f| f != &session) {
                        continue;
                    }
                    let Some(message) = wire::message_for(&state.engine, &session, wanted) else { continue };
                    Message::Text(message.into())
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
