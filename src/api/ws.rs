//! `/ws`: the engine's events as the seed's envelopes, optionally for one
//! session (`?session=ID`). A subscriber that falls behind the event stream
//! is closed with a reason instead of slowing anything down.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiState, error};
use crate::events::Event;
use crate::model::SessionId;
use crate::wire;

/// Close code for a subscriber that could not keep up (RFC 6455: try again later).
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

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
    // Subscribe before the 101 goes out: a client that acts as soon as its
    // handshake completes must see the events of what it did.
    let events = state.engine.subscribe();
    upgrade.on_upgrade(move |socket| stream(socket, state, filter, events))
}

async fn stream(
    socket: WebSocket,
    state: ApiState,
    filter: Option<SessionId>,
    mut events: broadcast::Receiver<Event>,
) {
    let (mut sink, mut incoming) = socket.split();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let Some((session, wanted)) = wire::wanted(&event) else { continue };
                    if filter.as_ref().is_some_and(|f| f != &session) {
                        continue;
                    }
                    let Some(message) = wire::message_for(&state.engine, &session, wanted) else { continue };
                    if sink.send(Message::Text(message.into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let reason = format!("fell behind: {missed} events dropped; reconnect");
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame { code: CLOSE_TRY_AGAIN_LATER, reason: reason.into() })))
                        .await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = incoming.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
