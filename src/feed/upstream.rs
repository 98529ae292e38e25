//! What goes back up a feed's socket, on a task of its own: pings that keep
//! the reader's idle check fed with pongs, the processing statuses (and,
//! when asked, results) of the feed's sessions, and a polite Close frame at
//! the end. The same writer serves a feed inflight dialled (`client.rs`)
//! and one that dialled inflight (`/ingest`); [`UpFrame`] makes each
//! socket's own message type.
//!
//! Writing up never holds up reading: a peer that does not read its
//! statuses only makes the writer fall behind (statuses are current state;
//! missed ones are superseded).

use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

use crate::engine::Engine;
use crate::wire;

/// The messages the writer sends, in a socket's own type.
pub trait UpFrame: Send + 'static {
    fn ping() -> Self;
    fn text(text: String) -> Self;
    fn close(code: u16, reason: &'static str) -> Self;
}

impl UpFrame for tungstenite::Message {
    fn ping() -> Self {
        tungstenite::Message::Ping(Default::default())
    }
    fn text(text: String) -> Self {
        tungstenite::Message::text(text)
    }
    fn close(code: u16, reason: &'static str) -> Self {
        tungstenite::Message::Close(Some(tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }))
    }
}

impl UpFrame for axum::extract::ws::Message {
    fn ping() -> Self {
        axum::extract::ws::Message::Ping(Default::default())
    }
    fn text(text: String) -> Self {
        axum::extract::ws::Message::text(text)
    }
    fn close(code: u16, reason: &'static str) -> Self {
        axum::extract::ws::Message::Close(Some(axum::extract::ws::CloseFrame {
            code,
            reason: reason.into(),
        }))
    }
}

/// What goes up a feed's socket.
pub struct Upstream {
    pub feed: usize,
    pub statuses: bool,
    pub results: bool,
    /// Pings that keep the reader's idle check fed with pongs.
    pub ping_every: Duration,
}

/// Why the socket closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Goodbye (1000).
    Normal,
    /// The feed sent a frame over the limit (1009).
    TooBig,
}

/// The writer's task, and the one way the reader tells it to close. When
/// the handle is dropped the writer closes normally, on its own.
pub struct Writer {
    closing: watch::Sender<Option<Closing>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub fn spawn<S, M>(sink: S, engine: Engine, upstream: Upstream) -> Self
    where
        S: Sink<M> + Unpin + Send + 'static,
        M: UpFrame,
    {
        let (closing, told) = watch::channel(None);
        let task = tokio::spawn(write(sink, engine, upstream, told));
        Self { closing, task }
    }

    /// Closes the socket with `why`; the writer ends on its own.
    pub fn close(&self, why: Closing) {
        self.closing.send_replace(Some(why));
    }

    /// Closes the socket with `why` and waits until the Close frame is
    /// sent (at most about a second).
    pub async fn finish(self, why: Closing) {
        self.closing.send_replace(Some(why));
        let _ = self.task.await;
    }
}

/// Resolves when the reader says to close (or dropped its handle).
async fn told_to_close(told: &mut watch::Receiver<Option<Closing>>) -> Closing {
    loop {
        if let Some(why) = *told.borrow_and_update() {
            return why;
        }
        if told.changed().await.is_err() {
            return Closing::Normal;
        }
    }
}

/// Sends pings, and statuses (and results) of this feed's sessions, up its
/// socket until told to close; then closes it politely.
async fn write<S, M>(
    mut sink: S,
    engine: Engine,
    upstream: Upstream,
    mut told: watch::Receiver<Option<Closing>>,
) where
    S: Sink<M> + Unpin + Send + 'static,
    M: UpFrame,
{
    let Upstream {
        feed,
        statuses,
        results,
        ping_every,
    } = upstream;
    let mut events = engine.subscribe();
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let why = loop {
        let event = tokio::select! {
            why = told_to_close(&mut told) => break why,
            _ = ping.tick() => {
                tokio::select! {
                    why = told_to_close(&mut told) => break why,
                    sent = sink.send(M::ping()) => if sent.is_err() { return },
                }
                continue;
            }
            event = events.recv(), if statuses || results => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => break Closing::Normal,
        };
        let Some((session, wanted)) = wire::wanted(&event) else {
            continue;
        };
        let send = match wanted {
            wire::Wanted::Status => statuses,
            wire::Wanted::Result(_) => results,
        };
        if !send || engine.feed_of(&session) != Some(feed) {
            continue;
        }
        let Some(message) = wire::message_for(&engine, &session, wanted) else {
            continue;
        };
        tokio::select! {
            why = told_to_close(&mut told) => break why,
            sent = sink.send(M::text(message)) => if sent.is_err() { return },
        }
    };
    let close = match why {
        Closing::TooBig => M::close(1009, "frame over 1 MiB"),
        Closing::Normal => M::close(1000, ""),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
}
