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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Answer, Link, Source, Wake};
use crate::api::Role;
use crate::api::dashboard::{DashboardDelta, DetailAnswer};
use crate::api::logs::LogsAnswer;
use crate::engine::{SessionDetail, SessionRow, Snapshot, Totals, TriggerAnswer};
use crate::llm::BackendInfo;
use crate::logs::{LogBuffer, LogLine};
use crate::model::{Operation, SessionId};
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
        },
        permits_in_use: 0,
        permits_cap: 0,
        policy: [Policy::Coalesce; crate::model::OPERATION_COUNT],
        op_timeout: Duration::ZERO,
        feeds: Vec::new(),
        sessions: Vec::new(),
        totals: Totals::default(),
        lifetime: Default::default(),
        max_sessions: 0,
        refused_sessions: 0,
        db: None,
        cluster: None,
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
                Command::Trigger { session, ops } => api.trigger(session, ops).await,
                Command::Cancel { session } => api.cancel(session).await,
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

/// The sync loop's state.
struct Sync {
    api: Api,
    server: String,
    picture: Arc<Mutex<Picture>>,
    logs: LogBuffer,
    changed: Arc<Notify>,
    poke: Arc<Notify>,
}

impl Sync {
    async fn run(self) {
        let mut failures = 0u32;
        let mut lost_since: Option<Instant> = None;
        let mut next_log = 0u64;
        loop {
            let read_at = Instant::now();
            match self.read(&mut next_log).await {
                Ok(()) => {
                    failures = 0;
                    lost_since = None;
                    let mut picture = lock(&self.picture);
                    picture.link = Link::Connected {
                        server: self.server.clone(),
                    };
                    picture.seen_at = Instant::now();
                }
                Err(error) => {
                    failures += 1;
                    let since = *lost_since.get_or_insert(read_at);
                    lock(&self.picture).link = Link::Lost {
                        server: self.server.clone(),
                        since,
                        attempt: failures,
                        error,
                    };
                    self.changed.notify_one();
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            }
            self.changed.notify_one();
            tokio::select! {
                _ = self.poke.notified() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
            tokio::time::sleep_until(read_at + MIN_GAP).await;
        }
    }

    /// One round: the rows, the new log lines, the watched details.
    async fn read(&self, next_log: &mut u64) -> Result<(), String> {
        let (since, epoch) = {
            let picture = lock(&self.picture);
            if picture.reload {
                (None, None)
            } else {
                (Some(picture.version), picture.epoch)
            }
        };
        let mut path = "/api/dashboard".to_string();
        if let (Some(since), Some(epoch)) = (since, epoch) {
            path = format!("{path}?since={since}&epoch={epoch}");
        }
        let delta: DashboardDelta = self.api.get_timed(&path).await?;
        {
            let mut picture = lock(&self.picture);
            if picture.epoch != Some(delta.epoch) {
                // Another server process: its log numbers start again too.
                *next_log = 0;
            }
            merge(&mut picture, delta);
        }
        let logs: LogsAnswer = self.api.get(&format!("/api/logs?from={next_log}")).await?;
        if logs.missed {
            self.logs.push(
                SystemTime::now(),
                tracing::Level::WARN,
                None,
                "(log lines were missed while away)".into(),
            );
        }
        for line in logs.lines {
            self.logs.push_line(LogLine {
                number: 0,
                at: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(line.at.max(0.0)),
                level: line.level.parse().unwrap_or(tracing::Level::INFO),
                session: line.session,
                text: line.text,
            });
        }
        *next_log = logs.next;
        let watched = lock(&self.picture)
            .watched
            .clone()
            .filter(|(_, at)| at.elapsed() < WATCH_FOR)
            .map(|(id, _)| id);
        if let Some(session) = watched {
            let detail = self.api.detail(&session).await?;
            lock(&self.picture).detail = detail.map(|d| d.detail);
        }
        Ok(())
    }
}

/// Folds one answer of `/api/dashboard` into the picture.
fn merge(picture: &mut Picture, mut delta: DashboardDelta) {
    if delta.full {
        picture.rows.clear();
    }
    for id in &delta.removed {
        picture.rows.remove(id);
    }
    for row in std::mem::take(&mut delta.snapshot.sessions) {
        picture.rows.insert(row.id.clone(), row);
    }
    picture.header = delta.snapshot;
    picture.epoch = Some(delta.epoch);
    picture.version = delta.version;
    picture.role = Some(delta.role);
    picture.reload = false;
}

impl Api {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<(StatusCode, Value), String> {
        let response = self
            .request(method, path)
            .send()
            .await
            .map_err(|e| match e {
                e if e.is_timeout() => "no answer".to_string(),
                e if e.is_connect() => "cannot connect".to_string(),
                e => e.to_string(),
            })?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("unreadable answer ({status}): {e}"))?;
        Ok((status, body))
    }

    /// A GET whose answer must be 200.
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let (status, body) = self.send(reqwest::Method::GET, path).await?;
        if status != StatusCode::OK {
            return Err(refusal(status, &body));
        }
        serde_json::from_value(body).map_err(|e| format!("unreadable answer: {e}"))
    }

    /// [`Api::get`] for an answer whose instants are on the server's clock
    /// (its `now` says where).
    async fn get_timed<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let (status, body) = self.send(reqwest::Method::GET, path).await?;
        if status != StatusCode::OK {
            return Err(refusal(status, &body));
        }
        let now = body.get("now").and_then(Value::as_i64).unwrap_or(0);
        crate::monotime::decoding_with(now, || serde_json::from_value(body))
            .map_err(|e| format!("unreadable answer: {e}"))
    }

    /// One session's details; `None` when the server has no such session.
    async fn detail(&self, session: &SessionId) -> Result<Option<DetailAnswer>, String> {
        match self
            .get_timed(&format!("/api/dashboard/sessions/{session}"))
            .await
        {
            Ok(answer) => Ok(Some(answer)),
            Err(e) if e.starts_with("404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn trigger(&self, session: SessionId, ops: Vec<Operation>) -> Answer {
        let mut answers = Vec::new();
        for op in ops {
            let path = format!("/api/sessions/{session}/operations/{}", op.as_str());
            let (status, body) = match self.send(reqwest::Method::POST, &path).await {
                Ok(answer) => answer,
                Err(e) => return Answer::Refused(format!("{session} · {e}")),
            };
            let run = |key: &str| body.get(key).and_then(Value::as_u64).unwrap_or(0);
            let since = SystemTime::UNIX_EPOCH
                + Duration::from_secs_f64(
                    body.get("running_since")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0)
                        .max(0.0),
                );
            let answer = match body.get("outcome").and_then(Value::as_str) {
                Some("started") => TriggerAnswer::Started {
                    run_id: run("run_id"),
                },
                Some("pending") => TriggerAnswer::Pending {
                    running_run_id: run("running_run_id"),
                    since,
                },
                Some("skipped") => TriggerAnswer::Skipped {
                    running_run_id: run("running_run_id"),
                    since,
                },
                _ => {
                    return Answer::Refused(format!("{session} · {}", refusal(status, &body)));
                }
            };
            answers.push((op, answer));
        }
        Answer::Triggered { session, answers }
    }

    async fn cancel(&self, session: SessionId) -> Answer {
        let mut stopped = Vec::new();
        for op in Operation::ALL {
            let path = format!("/api/sessions/{session}/operations/{}", op.as_str());
            match self.send(reqwest::Method::DELETE, &path).await {
                Ok((StatusCode::OK, body)) => {
                    stopped.push((op, body.get("run_id").and_then(Value::as_u64)))
                }
                Ok((StatusCode::NOT_FOUND, _)) => stopped.push((op, None)),
                Ok((status, body)) => {
                    return Answer::Refused(format!("{session} · {}", refusal(status, &body)));
                }
                Err(e) => return Answer::Refused(format!("{session} · {e}")),
            }
        }
        Answer::Cancelled { session, stopped }
    }
}

/// A refused request in a few words: `403 a read-only token: …`.
fn refusal(status: StatusCode, body: &Value) -> String {
    let why = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused"));
    format!("{} {}", status.as_u16(), crate::text::strip_controls(why))
}

/// The event task's state.
struct Events {
    api: Api,
    picture: Arc<Mutex<Picture>>,
    poke: Arc<Notify>,
}

impl Events {
    async fn run(self) {
        let mut seen: u64 = 0;
        let mut failures = 0u32;
        loop {
            match self.listen(&mut seen).await {
                Ok(()) => failures = 0,
                Err(_) => failures += 1,
            }
            tokio::time::sleep(backoff(failures)).await;
        }
    }

    /// One connection to `/ws`, resumed after event `seen`, until it ends.
    async fn listen(&self, seen: &mut u64) -> Result<(), String> {
        let ws_base = self
            .api
            .base
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1);
        let mut request = format!("{ws_base}/ws?since={seen}")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        if let Some(token) = &self.api.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.headers_mut().insert("authorization", value);
        }
        let tls = crate::net::tls_client_config(None)?;
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            false,
            Some(tokio_tungstenite::Connector::Rustls(tls)),
        );
        let (mut socket, _) = tokio::time::timeout(REQUEST_TIMEOUT, connecting)
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|e| e.to_string())?;
        while let Some(message) = socket.next().await {
            let text = match message.map_err(|e| e.to_string())? {
                Message::Text(text) => text,
                Message::Close(_) => return Ok(()),
                _ => continue,
            };
            let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if frame.get("type").and_then(Value::as_str) == Some("resume") {
                let next = frame.get("next_id").and_then(Value::as_u64).unwrap_or(1);
                if frame.get("too_old").and_then(Value::as_bool) == Some(true) {
                    // What was missed is gone: read the whole picture again.
                    lock(&self.picture).reload = true;
                }
                *seen = next.saturating_sub(1);
            } else if let Some(id) = frame.get("id").and_then(Value::as_u64) {
                *seen = id;
            }
            self.poke.notify_one();
        }
        Ok(())
    }
}
