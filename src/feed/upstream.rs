//! What a feed client sends up its socket, on a task of its own: pings that
//! keep the reader's idle check fed with pongs, the processing statuses
//! (and, when asked, results) of the feed's sessions, and a polite Close
//! frame at the end.
//!
//! Writing up never holds up reading: a peer that does not read its
//! statuses only makes the writer fall behind (statuses are current state;
//! missed ones are superseded).

use std::time::Duration;

use futures_util::SinkExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::engine::Engine;
use crate::wire;

pub(super) type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// What goes up a feed's socket.
pub(super) struct Upstream {
    pub feed: usize,
    pub statuses: bool,
    pub results: bool,
    /// Pings that keep the reader's idle check fed with pongs.
    pub ping_every: Duration,
}

/// Why the socket closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closing {
    /// Goodbye (1000).
    Normal,
    /// The feed sent a frame over the limit (1009).
    TooBig,
}

/// The writer's task, and the one way the reader tells it to close. When
/// the handle is dropped the writer closes normally, on its own.
pub(super) struct Writer {
    closing: watch::Sender<Option<Closing>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub fn spawn(sink: Sink, engine: Engine, upstream: Upstream) -> Self {
        let (closing, told) = watch::channel(None);
        let task = tokio::spawn(write(sink, engine, upstream, told));
        Self { closing, task }
    }

    /// Closes the socket with `why`; the writer ends on its own.
    pub fn close(&self, why: Closing) {
        self.closing.send_replace(Some(why));
    }

    /// Closes the socket normally and waits until the Close frame is sent
    /// (at most about a second).
    pub async fn finish(self) {
        self.closing.send_replace(Some(Closing::Normal));
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
async fn write(
    mut sink: Sink,
    engine: Engine,
    upstream: Upstream,
    mut told: watch::Receiver<Option<Closing>>,
) {
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
                    sent = sink.send(Message::Ping(Default::default())) => if sent.is_err() { return },
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
            sent = sink.send(Message::text(message)) => if sent.is_err() { return },
        }
    };
    let close = match why {
        Closing::TooBig => CloseFrame {
            code: CloseCode::Size,
            reason: "frame over 1 MiB".into(),
        },
        Closing::Normal => CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        },
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        sink.send(Message::Close(Some(close))),
    )
    .await;
}
