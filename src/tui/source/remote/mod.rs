//! An engine in another process, read over its API (`inflight attach`).
//!
//! Two tasks keep a local picture of it:
//! - the **sync loop** asks `/api/dashboard` for the rows changed since the
//!   version it holds (so an idle server costs its header alone), then the
//!   new log lines (`/api/logs`) and, while the details are open, the
//!   session's details. It asks once a second, or sooner when an event says
//!   something happened; when the server stops answering it keeps the last
//!   picture, marks the link lost and retries with backoff.
//! - the **event task** holds `/ws?since=ID` open, resumed after the last
//!   event it saw, and wakes the sync loop on each event. A `too_old` answer
//!   (missed events the server no longer keeps, or another server process)
//!   makes the next read a full one.
//!
//! Triggers and cancels are API calls of their own; their answers come back
//! to the main loop as [`Answer`]s.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the picture, and the dashboard's source over it |
//! | `sync.rs` | the sync loop |
//! | `events.rs` | the event task |
//! | `api.rs` | the API calls and refusals in a few words |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

mod api;
mod events;
mod sync;

use events::Events;
use sync::Sync;

use super::{Answer, Link, Source, Wake};
use crate::api::Role;
use crate::engine::{SessionDetail, SessionRow, Snapshot, Totals};
use crate::llm::BackendInfo;
use crate::logs::LogBuffer;
use crate::model::SessionId;
use crate::state::Policy;
use crate::tui::app::Command;

/// How often the picture is read when nothing happens.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// Shortest time between two reads, however many events arrive.
const MIN_GAP: Duration = Duration::from_millis(150);
/// The longest wait between two attempts to reach a lost server.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Details are kept fresh this long after the view last asked for them.
const WATCH_FOR: Duration = Duration::from_secs(3);
/// Longest wait for one API answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Its base URL: `http://127.0.0.1:8787`.
    pub url: String,
    pub token: Option<String>,
}

/// The API, as this client calls it.
#[derive(Clone)]
struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// What the tasks learnt, read by the views.
struct Picture {
    link: Link,
    /// The last snapshot's header (its `sessions` left empty).
    header: Snapshot,
    rows: BTreeMap<SessionId, SessionRow>,
    /// When the server last answered.
    seen_at: Instant,
    epoch: Option<u64>,
    version: u64,
    /// The next read must be a full one.
    reload: bool,
    role: Option<Role>,
    watched: Option<(SessionId, Instant)>,
    detail: Option<SessionDetail>,
}

pub struct Remote {
    picture: Arc<Mutex<Picture>>,
    logs: LogBuffer,
    /// The tasks say "something changed" here.
    changed: Arc<Notify>,
    /// Asks the sync loop to read now.
    poke: Arc<Notify>,
    answers: mpsc::UnboundedReceiver<Answer>,
    answer_tx: mpsc::UnboundedSender<Answer>,
    api: Api,
    _stop: DropGuard,
}

impl Remote {
    /// Starts reading the server at `options.url`; returns at once (the
    /// link says when the server answers).
    pub fn start(options: RemoteOptions) -> Result<Self, String> {
        let base = options.url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base).map_err(|e| format!("bad URL {base:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!(
                "bad URL {base:?}: expected http://HOST:PORT or https://HOST:PORT"
            ));
        }
        let server = match parsed.port_or_known_default() {
            Some(port) => format!("{}:{port}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_string(),
        };
        let http = crate::net::http_client(
            reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(Duration::from_secs(3)),
        )?;
        let api = Api {
            base,
            token: options.token.filter(|t| !t.is_empty()),
            http,
        };
        let picture = Arc::new(Mutex::new(Picture {
            link: Link::Lost {
                server: server.clone(),
                since: Instant::now(),
                attempt: 0,
                error: "connecting".into(),
            },
            header: empty_snapshot(),
            rows: BTreeMap::new(),
            seen_at: Instant::now(),
            epoch: None,
            version: 0,
            reload: true,
            role: None,
            watched: None,
            detail: None,
        }));
        let (answer_tx, answers) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let remote = Self {
            picture: picture.clone(),
            logs: LogBuffer::new(),
            changed: Arc::new(Notify::new()),
            poke: Arc::new(Notify::new()),
            answers,
            answer_tx,
            api: api.clone(),
            _stop: stop.clone().drop_guard(),
        };
        let sync = Sync {
            api: api.clone(),
            server,
            picture,
            logs: remote.logs.clone(),
            changed: remote.changed.clone(),
            poke: remote.poke.clone(),
        };
        let events = Events {
            api,
            picture: remote.picture.clone(),
            poke: remote.poke.clone(),
        };
        let stopped = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped.cancelled() => {}
                _ = sync.run() => {}
            }
        });
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = events.run() => {}
            }
        });
        Ok(remote)
    }
}

/// The wait before the next attempt after `failures` in a row: 250 ms,
/// doubling, at most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250)
        .saturating_mul(1 << failures.min(5))
        .min(MAX_BACKOFF)
}

fn lock(picture: &Mutex<Picture>) -> MutexGuard<'_, Picture> {
    picture.lock().unwrap_or_else(|e| e.into_inner())
}

/// A snapshot of nothing, until the server answers.
fn empty_snapshot() -> Snapshot {
    Snapshot {
        taken_at: Instant::now(),
        uptime: Duration::ZERO,
        backend: BackendInfo {
            kind: "?".into(),
            model: "?".into(),
            simulated: false,
            reachable: true,
            structured_output: None,
            context: None,
            slots: None,
        },
        permits_in_use: 0,
        permits_cap: 0,
        permits_limit: 0,
        policy: crate::ops::OpMap::filled_with(|_| Policy::Coalesce),
        operations: Vec::new(),
        op_timeout: Duration::ZERO,
        feeds: Vec::new(),
        sessions: Vec::new(),
        totals: Totals::default(),
        lifetime: Default::default(),
        max_sessions: 0,
        refused_sessions: 0,
        db: None,
        cluster: None,
        webhooks: Vec::new(),
        currency: String::new(),
    }
}

impl Source for Remote {
    fn snapshot(&mut self) -> Snapshot {
        let picture = lock(&self.picture);
        let mut snapshot = picture.header.clone();
        snapshot.sessions = picture.rows.values().cloned().collect();
        // Live, times run on; lost, the picture stays as it was last seen.
        snapshot.taken_at = match picture.link {
            Link::Lost { .. } => picture.seen_at,
            _ => Instant::now(),
        };
        snapshot
    }

    fn detail(&mut self, session: &SessionId) -> Option<SessionDetail> {
        let mut picture = lock(&self.picture);
        let fresh = picture.watched.as_ref().is_none_or(|(id, _)| id != session);
        picture.watched = Some((session.clone(), Instant::now()));
        if fresh {
            picture.detail = None;
            self.poke.notify_one();
        }
        picture
            .detail
            .clone()
            .filter(|detail| &detail.row.id == session)
    }

    fn logs(&self) -> &LogBuffer {
        &self.logs
    }

    fn link(&self) -> Link {
        lock(&self.picture).link.clone()
    }

    fn read_only(&self) -> Option<String> {
        (lock(&self.picture).role == Some(Role::Viewer))
            .then(|| "read-only: attached with a viewer's token".to_string())
    }

    fn carry_out(&mut self, command: Command) {
        let api = self.api.clone();
        let answers = self.answer_tx.clone();
        let poke = self.poke.clone();
        tokio::spawn(async move {
            let answer = match command {
                Command::Quit => return,
                Command::Replay(_) => Answer::Refused("not a replay".into()),
                Command::Trigger { session, ops } => api.trigger(session, ops).await,
                Command::Cancel { session, ops } => api.cancel(session, ops).await,
                Command::LiftBudget { session } => api.lift_budget(session).await,
                Command::RaiseBudget { session } => api.raise_budget(session).await,
                Command::OpenStored { session } => match api.detail(&session).await {
                    Ok(detail) => Answer::Stored {
                        session,
                        detail: detail.map(|d| Box::new(d.detail)),
                    },
                    Err(e) => Answer::Refused(format!("{session} · {e}")),
                },
            };
            let _ = answers.send(answer);
            // Show what the command changed without waiting for the poll.
            poke.notify_one();
        });
    }

    async fn wake(&mut self) -> Wake {
        tokio::select! {
            answer = self.answers.recv() => match answer {
                Some(answer) => Wake::Answer(answer),
                None => Wake::Changed,
            },
            _ = self.changed.notified() => Wake::Changed,
        }
    }
}
