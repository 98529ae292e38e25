//! The feed client: one task per `--feed` URL that keeps a WebSocket open,
//! turns its frames into engine calls, sends processing statuses back up,
//! and reconnects when the connection drops.
//!
//! On every connect it sends a `hello` carrying the last `seq` it saw per
//! session, so a feed that supports resuming continues where it left off;
//! replays from feeds that don't are dropped by the store's `seq` check.
//! Bad frames are counted per kind on the feed's [`FeedStatus`] and logged at
//! a bounded rate; they never end the task. What goes up the socket is
//! `upstream.rs`'s, on a task of its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::adapters::{Decoder, FeedFormat};
use super::protocol::{FeedMessage, Hello, MAX_FRAME_BYTES};
use super::upstream::{Closing, Upstream, Writer};
use crate::engine::Engine;
use crate::engine::feeds::{BadFrame, FeedState, FeedStatus};
use crate::events::Event;

/// How a feed connects, reconnects and talks back.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Give up after this many failed attempts in a row; `None`: never.
    pub retries: Option<u32>,
    pub format: FeedFormat,
    /// Extra request headers (`Authorization`, …), checked when read.
    pub headers: Vec<FeedHeader>,
    /// TLS for `wss://`; `None` builds one from the system roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Send `processing_status` up the feed's socket.
    pub upstream_status: bool,
    /// Send `summary_update` / `mind_map_update` up the feed's socket.
    pub upstream_results: bool,
    /// Longest wait for TCP, TLS and the WebSocket handshake together.
    pub connect_timeout: Duration,
    /// A connection that brings no frame (not even a pong to the client's
    /// pings, sent every third of this) for this long is dead.
    pub idle_timeout: Duration,
}

impl Default for FeedOptions {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            retries: None,
            format: FeedFormat::Auto,
            headers: Vec::new(),
            tls: None,
            upstream_status: true,
            upstream_results: false,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// One extra request header of a feed's connection, checked once when the
/// flags are read and kept in the form the request takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedHeader {
    pub name: HeaderName,
    pub value: HeaderValue,
}

/// Parses `Name: value` into a header.
pub fn parse_header(raw: &str) -> Result<FeedHeader, String> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| format!("{raw:?} is not a header; write 'Name: value'"))?;
    let (name, value) = (name.trim(), value.trim());
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a header name"))?;
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| format!("the value of {name} is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(FeedHeader { name, value })
}

/// Registers the feed with the engine and starts its task.
pub fn spawn(
    engine: Engine,
    url: String,
    options: FeedOptions,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // Views and logs get the URL without its secrets; only the connection
    // itself uses the real one.
    let status = engine.feeds().register(crate::net::redact_url(&url));
    tokio::spawn(run(engine, status, url, options, shutdown))
}

/// How often a feed's decoder drops what it keeps for sessions the engine
/// no longer holds (forgotten, or refused when full).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

async fn run(
    engine: Engine,
    status: Arc<FeedStatus>,
    url: String,
    options: FeedOptions,
    shutdown: CancellationToken,
) {
    // The one thing a feed keeps across connections. Where to resume and
    // which sessions are this feed's are asked of the engine, so they die
    // with the sessions.
    let mut decoder = Decoder::new(options.format, format!("feed-{}", status.index));
    let mut failures: u32 = 0;
    let mut rng = fastrand::Rng::new();
    loop {
        status.set_state(FeedState::Connecting);
        let connected_at = Instant::now();
        let reason =
            connect_and_read(&engine, &status, &url, &options, &mut decoder, &shutdown).await;
        if shutdown.is_cancelled() {
            // The connection, if any, was closed politely on the way out.
            status.set_state(FeedState::Closed {
                reason: "shut down".into(),
            });
            return;
        }
        // A connection that lived a while resets the backoff.
        if connected_at.elapsed() > options.backoff_max {
            failures = 0;
        }
        failures += 1;
        let give_up = options.retries.is_some_and(|n| failures > n);
        let delay = backoff(&options, failures, &mut rng);
        // The state changes before the event goes out, so a view woken by
        // the event sees where the feed is now.
        status.set_state(if give_up {
            FeedState::Closed {
                reason: reason.clone(),
            }
        } else {
            FeedState::BackingOff {
                until: Instant::now() + delay,
                attempt: failures,
            }
        });
        engine.events().emit(Event::FeedDisconnected {
            feed: status.index,
            url: status.url.clone(),
            reason,
        });
        if give_up {
            return;
        }
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
    url: &str,
    options: &FeedOptions,
    decoder: &mut Decoder,
    shutdown: &CancellationToken,
) -> String {
    let mut request = match url.into_client_request() {
        Ok(request) => request,
        Err(e) => return format!("bad feed URL {}: {e}", status.url),
    };
    for header in &options.headers {
        request
            .headers_mut()
            .insert(header.name.clone(), header.value.clone());
    }
    let tls = match &options.tls {
        Some(tls) => tls.clone(),
        None => match crate::net::tls_client_config(None) {
            Ok(tls) => tls,
            Err(e) => return e,
        },
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        true,
        Some(connector),
    );
    let connecting = tokio::time::timeout(options.connect_timeout, connecting);
    let connected = tokio::select! {
        _ = shutdown.cancelled() => return "shut down".into(),
        connected = connecting => connected,
    };
    let socket = match connected {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(e)) => return format!("connect failed: {e}"),
        Err(_) => {
            return format!(
                "connect timed out after {}",
                humantime::format_duration(options.connect_timeout)
            );
        }
    };
    status.connects.fetch_add(1, Ordering::Relaxed);
    status.set_state(FeedState::Connected);
    engine.events().emit(Event::FeedConnected {
        feed: status.index,
        url: status.url.clone(),
    });
    let (mut sink, mut source) = socket.split();
    // Resume after the last seq of this feed's live sessions: bounded by the
    // sessions held, not by every session the feed ever sent.
    let resume = engine.resume_points(status.index);
    let hello = match serde_json::to_string(&Hello::new(&resume)) {
        Ok(hello) => hello,
        Err(e) => return format!("could not encode hello: {e}"),
    };
    match tokio::time::timeout(options.idle_timeout, sink.send(Message::text(hello))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return format!("could not send hello: {e}"),
        Err(_) => return "the feed took no hello: the connection is dead".into(),
    }
    // Writing up never holds up reading: the writer has its own task, and a
    // peer that does not read its statuses only makes the writer fall behind
    // (statuses are current state; missed ones are superseded).
    let writer = Writer::spawn(
        sink,
        engine.clone(),
        Upstream {
            feed: status.index,
            statuses: options.upstream_status,
            results: options.upstream_results,
            ping_every: options.idle_timeout / 3,
        },
    );
    let mut prune = tokio::time::interval_at(Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
    // Any frame, pongs included, proves the connection alive.
    let silence = tokio::time::sleep(options.idle_timeout);
    tokio::pin!(silence);
    loop {
        // The database's writer is behind: read nothing until it catches
        // up, so the burst waits in the socket, not in memory.
        let paced = engine.feed_waits_for_writes(status);
        let next = tokio::select! {
            next = source.next(), if !paced => next,
            _ = engine.writes_caught_up(), if paced => {
                // The wait was ours: the feed's silence counts from now.
                silence.as_mut().reset(Instant::now() + options.idle_timeout);
                continue;
            }
            _ = shutdown.cancelled() => {
                // Stopping: the writer sends a Close frame (bounded) and
                // ends; wait for it, so the feed hears goodbye.
                writer.finish(Closing::Normal).await;
                return "shut down".into();
            }
            _ = prune.tick() => {
                decoder.retain(|session| engine.holds(session));
                continue;
            }
            _ = &mut silence, if !paced => {
                return format!(
                    "no frame and no pong for {}: the connection is dead",
                    humantime::format_duration(options.idle_timeout)
                );
            }
        };
        silence
            .as_mut()
            .reset(Instant::now() + options.idle_timeout);
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(WsError::Capacity(e))) => {
                note_bad(status, BadFrame::Oversized, &e.to_string());
                writer.close(Closing::TooBig);
                return format!("frame refused (close 1009): {e}");
            }
            Some(Err(WsError::Utf8(e))) => {
                note_bad(status, BadFrame::InvalidUtf8, &e);
                return "text frame with invalid UTF-8".into();
            }
            Some(Err(e)) => return format!("read failed: {e}"),
            None => return "connection ended".into(),
        };
        match message {
            Message::Text(text) => {
                status.saw_message();
                handle_text(engine, status, decoder, text.as_str());
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
}

/// Decodes one text frame and takes what it says in, counting it on the
/// feed's status (also for `/ingest`, the feed that dialled inflight).
pub(crate) fn handle_text(engine: &Engine, status: &FeedStatus, decoder: &mut Decoder, text: &str) {
    let messages = match decoder.decode(text) {
        Ok(messages) => messages,
        Err(e) => return note_bad(status, e.kind(), &e.to_string()),
    };
    for message in messages {
        take_message(engine, status, message);
    }
}

/// What one message became.
pub(crate) enum Took {
    /// A transcript of this session, and what the store made of it.
    Transcript(crate::model::SessionId, crate::engine::Appended),
    /// This session ended.
    Ended(crate::model::SessionId),
    /// A `hello`: nothing to take.
    Hello,
}

/// Takes one understood message in, counted on the feed's status: the one
/// way a feed's messages reach the engine, dialled or pushed.
pub(crate) fn take_message(engine: &Engine, status: &FeedStatus, message: FeedMessage) -> Took {
    match message {
        FeedMessage::Transcript { transcript, cut } => {
            if cut {
                note_bad(status, BadFrame::TextCut, "transcript text cut to 32 KiB");
            }
            let session = transcript.session_id.clone();
            // Counted on the feed's status, refusals logged by the engine.
            Took::Transcript(session, engine.ingest_from(transcript, status))
        }
        FeedMessage::SessionEnd(session) => {
            engine.end_session(&session, Some(status.index));
            Took::Ended(session)
        }
        FeedMessage::Hello { .. } => Took::Hello,
    }
}

/// Counts a bad frame; logs the first few of each kind, then every power of ten.
pub(crate) fn note_bad(status: &FeedStatus, kind: BadFrame, detail: &str) {
    let n = status.count_bad(kind);
    if n <= 3 || crate::text::is_power_of_ten(n) {
        let detail: String = crate::text::strip_controls(detail)
            .chars()
            .take(200)
            .collect();
        tracing::warn!(
            feed = status.index,
            kind = kind.as_str(),
            count = n,
            "bad frame: {detail}"
        );
    }
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
    }

    #[test]
    fn headers_are_checked() {
        let header = parse_header("Authorization:  Bearer abc ").unwrap();
        assert_eq!(header.name, "authorization");
        assert_eq!(header.value, "Bearer abc");
        // Kept out of debug output, as a secret.
        assert!(header.value.is_sensitive());
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }
}
