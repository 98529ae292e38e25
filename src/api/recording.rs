//! `GET /api/recording`: the engine's records, live, over a WebSocket, for
//! `inflight record --from`: the header first (the format's version, when
//! the engine's clock started, its settings), then each record as one text
//! message, in the recording format (`docs/recording.md`).
//!
//! `/ws` carries statuses and results; a recording needs the transcripts
//! and the model's answers too, to be replayed. A client that falls more
//! than `record::LIVE_BUFFER` records behind is told how many it lost (a
//! `gap` record) and goes on. Clients share `/ws`'s seats and timeouts.

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::{ApiState, error};
use crate::record::Record;

/// A WebSocket of the engine's records, in the recording format: its
/// header first, then one record per text message.
#[utoipa::path(get, path = "/api/recording", tag = "streams",
    params(super::openapi::Handshake),
    responses(
        (status = 101, description = "Switching to a WebSocket; its text messages are records (see the recording format)"),
        (status = 400, description = "Not a WebSocket handshake", body = super::errors::ErrorJson),
        (status = 503, description = "Too many WebSocket clients (`--api-max-ws-clients`)", body = super::errors::ErrorJson),
    ),
    security(("operator" = []), ("viewer" = [])))]
pub async fn upgrade(State(state): State<ApiState>, upgrade: WebSocketUpgrade) -> Response {
    let limits = state.ws.limits;
    let Ok(seat) = state.ws.seats.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many WebSocket clients ({}); raise --api-max-ws-clients",
                limits.max_clients
            ),
        );
    };
    // Counted before the 101 goes out: nothing after the handshake is
    // missed.
    let live = state.engine.events().tap().subscribe();
    upgrade
        .max_message_size(limits.max_incoming)
        .max_frame_size(limits.max_incoming)
        .on_upgrade(move |socket| stream(socket, state, live, seat))
}

async fn stream(
    socket: WebSocket,
    state: ApiState,
    mut live: crate::record::Live,
    _seat: OwnedSemaphorePermit,
) {
    let timeout = state.ws.limits.timeout;
    let tap = state.engine.events().tap().clone();
    let (mut sink, mut incoming) = socket.split();
    let header = serde_json::to_string(&tap.header()).unwrap_or_default();
    match tokio::time::timeout(timeout, sink.send(Message::Text(header.into()))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => return,
    }
    let mut ping = tokio::time::interval_at(Instant::now() + timeout / 3, timeout / 3);
    let mut heard_at = Instant::now();
    loop {
        let outgoing = tokio::select! {
            record = live.records.recv() => match record {
                Ok(record) => Message::Text(serde_json::to_string(&*record).unwrap_or_default().into()),
                Err(RecvError::Lagged(lost)) => {
                    let gap = Record::Gap { at: tap.now(), lost };
                    Message::Text(serde_json::to_string(&gap).unwrap_or_default().into())
                }
                Err(RecvError::Closed) => return,
            },
            _ = ping.tick() => {
                if heard_at.elapsed() >= timeout {
                    return;
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
            Ok(Err(_)) | Err(_) => return,
        }
    }
}
