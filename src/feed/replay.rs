//! The replay server: plays recorded meetings over WebSocket as live sessions.
//!
//! Every client gets every meeting at once, as concurrent sessions on one
//! socket, paced by the lines' `start` times divided by `speed` (speed 0:
//! as fast as the socket takes them). Paced replays also send a partial line
//! before each final one, as live speech recognition does. A client's `hello`
//! with `resume` skips what it already has. With `looping`, a finished
//! meeting starts again under a new session id (`name.2`, `name.3`, …).
//! With `drop_every`, each connection is cut without a close frame after
//! that many frames, so clients' reconnect and resume can be tested.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::meetings::Meeting;
use super::protocol::{self, FeedMessage};
use crate::model::{SessionId, Transcript};

/// How meetings are played.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// 1.0 is real time, 2.0 twice as fast, 0.0 unpaced.
    pub speed: f64,
    pub looping: bool,
    /// Send a partial line before each final one (paced replays only).
    pub partials: bool,
    /// How long a client has to send its `hello` before streaming starts.
    pub hello_wait: Duration,
    /// Cut each connection (no close frame) after this many frames, to
    /// exercise reconnects; `None`: never.
    pub drop_every: Option<u64>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            speed: 1.0,
            looping: false,
            partials: true,
            hello_wait: Duration::from_millis(300),
            drop_every: None,
        }
    }
}

/// Serves `meetings` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    meetings: Vec<Meeting>,
    options: ReplayOptions,
    shutdown: CancellationToken,
) {
    let meetings = Arc::new(meetings);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("replay server: accept failed: {e}");
                    continue;
                }
            },
        };
        let meetings = meetings.clone();
        let options = options.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_client(stream, peer, meetings, options, shutdown).await {
                tracing::debug!(%peer, "replay client ended: {e}");
            }
        });
    }
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn start(
    addr: SocketAddr,
    meetings: Vec<Meeting>,
    options: ReplayOptions,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, meetings, options, shutdown));
    Ok(bound)
}

async fn serve_client(
    stream: TcpStream,
    peer: SocketAddr,
    meetings: Arc<Vec<Meeting>>,
    options: ReplayOptions,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let socket = tokio_tungstenite::accept_async(stream)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sink, mut source) = socket.split();
    let resume = match tokio::time::timeout(options.hello_wait, source.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => match protocol::parse(text.as_str()) {
            Ok(FeedMessage::Hello { resume }) => resume,
            _ => BTreeMap::new(),
        },
        Ok(None) | Ok(Some(Err(_))) => return Ok(()),
        _ => BTreeMap::new(),
    };
    tracing::info!(%peer, resumed = resume.len(), "replay client connected");
    let (frames, mut outbox) = mpsc::channel::<String>(1024);
    let client_gone = CancellationToken::new();
    let resume = Arc::new(resume);
    for meeting in meetings.iter().cloned() {
        tokio::spawn(play(
            meeting,
            options.clone(),
            resume.clone(),
            frames.clone(),
            client_gone.clone(),
        ));
    }
    drop(frames);
    let _stop_players = client_gone.clone().drop_guard();
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                drain_until_closed(&mut source).await;
                return Ok(());
            }
            frame = outbox.recv() => match frame {
                Some(frame) => {
                    sink.send(Message::text(frame)).await.map_err(|e| e.to_string())?;
                    sent += 1;
                    if options.drop_every.is_some_and(|n| sent >= n) {
                        tracing::info!(%peer, sent, "cutting the connection (--drop-every)");
                        return Ok(());
                    }
                }
                None => {
                    let _ = sink.send(Message::Close(None)).await;
                    drain_until_closed(&mut source).await;
                    return Ok(());
                }
            },
            incoming = source.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// After our close frame, reads what the client still sends until it closes
/// too (or a short while passes). Dropping a socket with unread data makes
/// the kernel reset the connection, and a reset can destroy frames the
/// client has not read yet.
async fn drain_until_closed<S>(source: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(message)) = source.next().await {
            if message.is_close() {
                break;
            }
        }
    })
    .await;
}

/// Plays one meeting (and its loops) into `frames`.
async fn play(
    meeting: Meeting,
    options: ReplayOptions,
    resume: Arc<BTreeMap<String, u64>>,
    frames: mpsc::Sender<String>,
    stop: CancellationToken,
) {
    let paced = options.speed > 0.0;
    let mut round = 1u32;
    loop {
        let session = if round == 1 {
            meeting.session.clone()
        } else {
            match SessionId::parse(&format!("{}.{round}", meeting.session)) {
                Ok(id) => id,
                Err(_) => return,
            }
        };
        let skip_upto = resume.get(session.as_str()).copied().unwrap_or(0);
        // A resumed meeting continues at once from its first line not yet sent.
        let offset = meeting
            .lines
            .iter()
            .find(|l| l.seq.is_none_or(|seq| seq > skip_upto))
            .and_then(|l| l.start)
            .unwrap_or(0.0);
        let t0 = Instant::now();
        let at = |seconds: f64| {
            t0 + Duration::from_secs_f64(((seconds - offset) / options.speed).max(0.0))
        };
        for line in &meeting.lines {
            if line.seq.is_some_and(|seq| seq <= skip_upto) {
                continue;
            }
            let mut line = line.clone();
            line.session_id = session.clone();
            if paced {
                let start = line.start.unwrap_or(0.0);
                if options.partials {
                    let end = line.end.unwrap_or(start);
                    let middle = start + (end - start) / 2.0;
                    if wait_until(at(middle.max(start)), &stop).await.is_err() {
                        return;
                    }
                    let partial = partial_of(&line);
                    if frames
                        .send(protocol::transcript_frame(&partial))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if wait_until(at(line.end.unwrap_or(start)), &stop)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if frames
                .send(protocol::transcript_frame(&line))
                .await
                .is_err()
            {
                return;
            }
        }
        if frames
            .send(protocol::session_end_frame(&session))
            .await
            .is_err()
        {
            return;
        }
        if !options.looping {
            return;
        }
        round += 1;
        let pause = if paced {
            Duration::from_secs_f64(3.0 / options.speed)
        } else {
            Duration::ZERO
        };
        if wait_until(Instant::now() + pause, &stop).await.is_err() {
            return;
        }
    }
}

async fn wait_until(deadline: Instant, stop: &CancellationToken) -> Result<(), ()> {
    tokio::select! {
        _ = stop.cancelled() => Err(()),
        _ = tokio::time::sleep_until(deadline) => Ok(()),
    }
}

/// The first half of a line's words, as a partial (not final, no seq).
fn partial_of(line: &Transcript) -> Transcript {
    let words: Vec<&str> = line.text.split_whitespace().collect();
    let half = words.len().div_ceil(2);
    Transcript {
        seq: None,
        text: words[..half].join(" "),
        is_final: false,
        ..line.clone()
    }
}
