//! The feed client: one task per `--feed` URL that keeps a WebSocket open,
//! turns its frames into engine calls and reconnects when it drops.
//!
//! On every connect it sends a `hello` carrying the last `seq` it saw per
//! session, so a feed that supports resuming continues where it left off;
//! replays from feeds that don't are dropped by the store's `seq` check.
//! Bad frames are counted per kind on the feed's [`FeedStatus`] and logged at
//! a bounded rate; they never end the task.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::protocol::{self, FeedMessage, Hello, MAX_FRAME_BYTES};
use crate::engine::feeds::{BadFrame, FeedState, FeedStatus};
use crate::engine::{Appended, Engine};
use crate::events::Event;

/// How a feed reconnects.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Give up after this many failed attempts in a row; `None`: never.
    pub retries: Option<u32>,
}

impl Default for FeedOptions {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            retries: None,
        }
    }
}

/// Registers the feed with the engine and starts its task.
pub fn spawn(
    engine: Engine,
    url: String,
    options: FeedOptions,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let status = engine.feeds().register(url);
    tokio::spawn(run(engine, status, options, shutdown))
}

async fn run(
    engine: Engine,
    status: Arc<FeedStatus>,
    options: FeedOptions,
    shutdown: CancellationToken,
) {
    let mut resume: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures: u32 = 0;
    let mut rng = fastrand::Rng::new();
    loop {
        status.set_state(FeedState::Connecting);
        let connected_at = Instant::now();
        let reason = tokio::select! {
            _ = shutdown.cancelled() => {
                status.set_state(FeedState::Closed { reason: "shut down".into() });
                return;
            }
            reason = connect_and_read(&engine, &status, &mut resume) => reason,
        };
        engine.events().emit(Event::FeedDisconnected {
            feed: status.index,
            url: status.url.clone(),
            reason: reason.clone(),
        });
        // A connection that lived a while resets the backoff.
        if connected_at.elapsed() > options.backoff_max {
            failures = 0;
        }
        failures += 1;
        if options.retries.is_some_and(|n| failures > n) {
            status.set_state(FeedState::Closed { reason });
            return;
        }
        let delay = backoff(&options, failures, &mut rng);
        status.set_state(FeedState::BackingOff {
            until: Instant::now() + delay,
            attempt: failures,
        });
        tokio::select! {
            _ = shutdown.cancelled() => {
                status.set_state(FeedState::Closed { reason: "shut down".into() });
                return;
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Exponential backoff with jitter: half to all of `min · 2^(attempt-1)`, capped.
fn backoff(options: &FeedOptions, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    let exp = options
        .backoff_min
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(options.backoff_max);
    exp.mul_f64(0.5 + rng.f64() * 0.5)
}

/// One connection, read to its end; returns why it ended.
async fn connect_and_read(
    engine: &Engine,
    status: &FeedStatus,
    resume: &mut BTreeMap<String, u64>,
) -> String {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let (mut socket, _) =
        match tokio_tungstenite::connect_async_with_config(status.url.as_str(), Some(config), true)
            .await
        {
            Ok(connected) => connected,
            Err(e) => return format!("connect failed: {e}"),
        };
    status.connects.fetch_add(1, Ordering::Relaxed);
    status.set_state(FeedState::Connected);
    engine.events().emit(Event::FeedConnected {
        feed: status.index,
        url: status.url.clone(),
    });
    let hello = match serde_json::to_string(&Hello::new(resume)) {
        Ok(hello) => hello,
        Err(e) => return format!("could not encode hello: {e}"),
    };
    if let Err(e) = socket.send(Message::text(hello)).await {
        return format!("could not send hello: {e}");
    }
    while let Some(message) = socket.next().await {
        let message = match message {
            Ok(message) => message,
            Err(tokio_tungstenite::tungstenite::Error::Capacity(e)) => {
                note_bad(status, BadFrame::Oversized, &e.to_string());
                return format!("frame refused: {e}");
            }
            Err(e) => return format!("read failed: {e}"),
        };
        match message {
            Message::Text(text) => {
                status.saw_message();
                handle_text(engine, status, resume, text.as_str());
            }
            Message::Binary(_) => {
                status.saw_message();
                note_bad(status, BadFrame::Binary, "binary frame");
            }
            Message::Close(frame) => {
                return match frame {
                    Some(frame) => format!("closed by the feed ({}: {})", frame.code, frame.reason),
                    None => "closed by the feed".into(),
                };
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    "connection ended".into()
}

fn handle_text(
    engine: &Engine,
    status: &FeedStatus,
    resume: &mut BTreeMap<String, u64>,
    text: &str,
) {
    match protocol::parse(text) {
        Ok(FeedMessage::Transcript { transcript, cut }) => {
            if cut {
                note_bad(status, BadFrame::TextCut, "transcript text cut to 32 KiB");
            }
            let seq = transcript.seq;
            let session = transcript.session_id.clone();
            match engine.ingest(transcript, Some(status.index)) {
                Appended::Duplicate => {
                    status.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Appended::Final { .. } | Appended::Partial { .. } => {
                    status.transcripts.fetch_add(1, Ordering::Relaxed);
                    if let Some(seq) = seq {
                        resume.insert(session.as_str().to_string(), seq);
                    }
                }
            }
        }
        Ok(FeedMessage::SessionEnd(session)) => engine.end_session(&session, Some(status.index)),
        Ok(FeedMessage::Hello { .. }) => {}
        Err(e) => note_bad(status, e.kind(), &e.to_string()),
    }
}

/// Counts a bad frame; logs the first few of each kind, then every power of ten.
fn note_bad(status: &FeedStatus, kind: BadFrame, detail: &str) {
    let n = status.count_bad(kind);
    if n <= 3 || is_power_of_ten(n) {
        tracing::warn!(
            feed = status.index,
            kind = kind.as_str(),
            count = n,
            "bad frame: {detail}"
        );
    }
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let options = FeedOptions::default();
        let mut rng = fastrand::Rng::with_seed(1);
        for attempt in 1..40 {
            let d = backoff(&options, attempt, &mut rng);
            let full = options
                .backoff_min
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(options.backoff_max);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
        assert!(is_power_of_ten(1000));
        assert!(!is_power_of_ten(20));
    }
}
