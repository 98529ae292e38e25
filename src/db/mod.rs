//! Durable state: sessions, final transcripts, results and run history in
//! one SQLite file, so a restart loses nothing.
//!
//! One writer thread owns the write connection (WAL, `synchronous=NORMAL`)
//! and commits in batches (at most about [`BATCH_WINDOW`] or
//! [`BATCH_ROWS`] rows a transaction). The engine hands it [`Write`]s over
//! a bounded queue (`queue.rs`: its memory is what waits, not its bound)
//! without waiting: no tokio worker ever blocks on the disk. A feed that
//! outruns the writer waits between frames instead (`pace.rs`), so a burst
//! stays in its socket rather than in memory. When the disk fails (full,
//! I/O error) the writer keeps the batch and retries, the handle says
//! `degraded`, and the engine goes on in memory; a queue that fills
//! meanwhile drops writes and counts them.
//!
//! A session whose transcript was dropped has no more of its transcripts
//! written by this process (they are dropped and counted too, and the
//! session is named in the log once). So the file holds each session's
//! lines up to its stored `last_seq` and none after a gap: a restart
//! resumes the feed from the first line that is missing, and the feed
//! sends the rest again, instead of resuming past lines never written.
//!
//! After each commit the writer tells the engine the newest line of each
//! session it wrote, and the results it wrote ([`Db::on_committed`]):
//! memory lets lines and result bodies go once the file holds them, and
//! views and runs read them back ([`Db::lines_before`], [`Db::lines_from`],
//! [`Db::result`]).
//!
//! At start, [`open`] checks the file (not a database, a newer schema, held
//! by another inflight: each a clear error naming the file, the file left
//! as it was), brings the schema up to date (`schema.rs`), marks the runs
//! that were in flight at a crash as `interrupted`, and reads back what the
//! engine needs (`restore.rs`). The fencing rule for results lives in the
//! SQL (`writer.rs`): a result from an older run never replaces a newer one.

mod pace;
mod queue;
mod restore;
pub mod schema;
mod writer;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

pub use pace::PACE_WRITES;
pub use restore::{
    HistoryPage, PastSession, Restored, StoredCounts, StoredResult, StoredRun, StoredSession,
    StoredTranscript,
};

use crate::events::{Outcome, RunId};
use crate::llm::Usage;
use crate::model::{Operation, SessionId};

/// Writes waiting for the writer, at most; more are dropped and counted.
pub const CHANNEL_CAPACITY: usize = 65_536;

/// The reading connection's page cache, in KiB (SQLite's default is
/// 2 000). Its reads are short walks by the primary key, and the writer's
/// commits make SQLite drop what it cached before each read anyway; the
/// file's pages stay in the system's cache.
const READER_CACHE_KIB: i64 = 256;
/// Longest a write waits for its batch to commit.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Most writes in one transaction.
pub const BATCH_ROWS: usize = 1_000;
/// How often what is past `--retain` is deleted while running (besides at
/// start): the engine's housekeeping asks the writer, on the engine's clock.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{path} is not an inflight database (or is damaged): {source}")]
    Unreadable {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{path} was written by a newer inflight (schema {found}; this one knows up to {known}); \
         it is left as it is"
    )]
    Newer {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "{path} is in use by another inflight (one writer per file: give each instance its own --db)"
    )]
    Locked { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl DbError {
    fn unreadable(path: &str, source: rusqlite::Error) -> Self {
        DbError::Unreadable {
            path: path.into(),
            source,
        }
    }

    fn io(path: &str, source: rusqlite::Error) -> Self {
        DbError::Io {
            path: path.into(),
            source,
        }
    }
}

/// One thing to write down.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Transcript {
        session: SessionId,
        feed: Option<usize>,
        generation: u64,
        seq: Option<u64>,
        speaker: Option<String>,
        start: Option<f64>,
        end: Option<f64>,
        text: String,
        at: SystemTime,
    },
    Ended {
        session: SessionId,
        at: SystemTime,
    },
    Result {
        session: SessionId,
        op: Operation,
        run_id: RunId,
        covered_generation: u64,
        /// A summary's text, or a mind map as JSON.
        body: String,
        model: String,
        processing: Duration,
        finished_at: SystemTime,
        /// What the call that made it cost.
        usage: Usage,
        /// The server cut the answer at the token limit.
        truncated: bool,
        /// The webhook deliveries it makes, kept in the same transaction.
        outbox: Vec<OutboxRow>,
    },
    /// Webhook deliveries of an event with no result (a session's end).
    Outbox(Vec<OutboxRow>),
    /// A delivery the receiver took: its row goes, unless a newer one
    /// replaced it meanwhile.
    Delivered {
        endpoint: String,
        session: SessionId,
        op: Option<Operation>,
        event: crate::webhooks::EventKind,
        revision: u64,
    },
    /// A delivery given up: its row becomes a dead letter.
    Dead {
        row: OutboxRow,
        attempts: u32,
        error: String,
        died_at: SystemTime,
    },
    RunAdmitted {
        run_id: RunId,
        session: SessionId,
        op: Operation,
        at: SystemTime,
        follow_up: bool,
    },
    RunEnded {
        run_id: RunId,
        session: SessionId,
        op: Operation,
        admitted_at: SystemTime,
        follow_up: bool,
        outcome: Outcome,
        duration: Duration,
        waited: Duration,
        error: Option<String>,
        covered_generation: Option<u64>,
        usage: Usage,
    },
    /// The skip count of one operation of a session so far.
    Skipped {
        session: SessionId,
        op: Operation,
        total: u64,
    },
}

/// One webhook delivery waiting, as the database keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// The endpoint's URL: what names it across restarts.
    pub endpoint: String,
    pub session: SessionId,
    pub op: Option<Operation>,
    pub event: crate::webhooks::EventKind,
    pub revision: u64,
    pub id: String,
    pub body: std::sync::Arc<str>,
    pub created_at: SystemTime,
}

/// How the database is doing, for the header, the API and `/healthz`.
#[derive(Debug, Default)]
pub struct DbHealth {
    degraded: AtomicBool,
    /// Writes dropped because the writer fell too far behind.
    dropped: AtomicU64,
    /// Batches that failed to commit (each retried).
    failures: AtomicU64,
    /// Writes committed.
    written: AtomicU64,
    /// Reads of lines back for a view that failed.
    read_failures: AtomicU64,
}

impl DbHealth {
    /// True while the last commit failed or writes are being dropped.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// The handle the engine writes through; clone it freely.
#[derive(Debug, Clone)]
pub struct Db {
    path: Arc<PathBuf>,
    sender: queue::Sender<writer::Message>,
    health: Arc<DbHealth>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Its own connection for the API's reads of history (WAL lets it read
    /// while the writer writes). Blocking: call from a blocking task.
    reader: Arc<std::sync::Mutex<rusqlite::Connection>>,
    /// Sessions with a transcript dropped: none of their later ones is
    /// written either (see the module docs).
    gapped: Arc<Gapped>,
    /// Who is told what each commit wrote.
    committed: Arc<Committed>,
    /// Wakes the feeds that wait for the writer (`pace.rs`).
    pace: Arc<pace::Pace>,
}

/// What a commit wrote of one session, as [`Db::on_committed`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wrote {
    /// Its lines up to this generation: a session's lines are written in
    /// order and none after a gap, so the file holds every one up to it.
    LinesThrough(u64),
    /// The result of this run of the operation.
    Result(Operation, RunId),
}

/// Told after each commit what it wrote: for each session the newest of
/// its lines once, and each result. Memory may then let those go and read
/// them back when a view or a run asks.
#[derive(Default)]
pub(crate) struct Committed(std::sync::OnceLock<Tell>);

/// What [`Committed`] calls.
type Tell = Box<dyn Fn(&SessionId, Wrote) + Send + Sync>;

impl Committed {
    /// Tells the listener, if there is one, what `batch` wrote.
    pub(crate) fn tell(&self, batch: &[Write]) {
        let Some(tell) = self.0.get() else {
            return;
        };
        let mut newest: HashMap<&SessionId, u64> = HashMap::new();
        for write in batch {
            match write {
                Write::Transcript {
                    session,
                    generation,
                    ..
                } => {
                    let at = newest.entry(session).or_default();
                    *at = (*at).max(*generation);
                }
                Write::Result {
                    session,
                    op,
                    run_id,
                    ..
                } => tell(session, Wrote::Result(*op, *run_id)),
                _ => {}
            }
        }
        for (session, generation) in newest {
            tell(session, Wrote::LinesThrough(generation));
        }
    }
}

impl std::fmt::Debug for Committed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committed")
            .field("listening", &self.0.get().is_some())
            .finish()
    }
}

/// The sessions whose transcripts are no longer written, with a flag
/// read first so that the common case (none) takes no lock.
#[derive(Debug, Default)]
struct Gapped {
    any: AtomicBool,
    sessions: std::sync::Mutex<HashSet<SessionId>>,
}

impl Gapped {
    fn contains(&self, session: &SessionId) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(session)
    }

    /// True the first time for `session`.
    fn insert(&self, session: &SessionId) -> bool {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        self.any.store(true, Ordering::Release);
        sessions.insert(session.clone())
    }

    fn remove(&self, session: &SessionId) {
        if self.any.load(Ordering::Acquire) {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.remove(session);
            self.any.store(!sessions.is_empty(), Ordering::Release);
        }
    }
}

/// What [`open`] gives back: the handle, and what the file held.
pub struct Opened {
    pub db: Db,
    pub restored: Restored,
}

/// How much of the file to read back at start.
#[derive(Debug, Clone, Copy)]
pub struct RestoreLimits {
    /// Ended sessions older than this stay on disk only.
    pub forget_after: Duration,
    /// Most sessions brought back into memory (the newest).
    pub max_sessions: usize,
    /// Sessions whose last word is older than this are deleted from disk.
    pub retain: Duration,
    /// Of the sessions left on disk only, the newest this many are
    /// remembered as forgotten (id and last `seq`), so a feed that replays
    /// one after the restart cannot bring it back.
    pub remember_forgotten: usize,
}

/// The default file: `$XDG_STATE_HOME/inflight/inflight.db`, else
/// `~/.local/state/inflight/inflight.db`.
pub fn default_path(name: &str) -> Option<PathBuf> {
    default_path_in(
        std::env::var_os("XDG_STATE_HOME"),
        std::env::var_os("HOME"),
        name,
    )
}

/// [`default_path`] for the given `XDG_STATE_HOME` and `HOME` (an empty
/// one counts as unset, as the XDG rules say).
fn default_path_in(
    xdg_state_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
    name: &str,
) -> Option<PathBuf> {
    let base = xdg_state_home
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            home.filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".local/state"))
        })?;
    Some(base.join("inflight").join(name))
}

/// Opens (or creates) the database at `path`; see the module docs.
pub fn open(path: &Path, limits: RestoreLimits) -> Result<Opened, DbError> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| DbError::File {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let lock = writer::lock(path)?;
    let mut conn = rusqlite::Connection::open(path).map_err(|e| DbError::unreadable(&shown, e))?;
    // Read before anything writes: a file that is not a database, or is
    // from a newer inflight, stays exactly as it was.
    schema::version(&conn).map_err(|e| DbError::unreadable(&shown, e))?;
    schema::migrate(&mut conn, &shown)?;
    writer::configure(&conn).map_err(|e| DbError::io(&shown, e))?;
    writer::mark_interrupted(&conn).map_err(|e| DbError::io(&shown, e))?;
    writer::prune(&conn, limits.retain).map_err(|e| DbError::io(&shown, e))?;
    let restored = restore::read(&conn, limits).map_err(|e| DbError::io(&shown, e))?;
    let reader = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| DbError::io(&shown, e))?;
    reader
        .busy_timeout(Duration::from_secs(5))
        .map_err(|e| DbError::io(&shown, e))?;
    reader
        .pragma_update(None, "cache_size", -READER_CACHE_KIB)
        .map_err(|e| DbError::io(&shown, e))?;
    let health = Arc::new(DbHealth::default());
    let (sender, receiver) = queue::bounded(CHANNEL_CAPACITY);
    let committed = Arc::new(Committed::default());
    let pace = Arc::new(pace::Pace::default());
    let thread = {
        let health = health.clone();
        let retain = limits.retain;
        let told = committed.clone();
        let pace = pace.clone();
        std::thread::Builder::new()
            .name("inflight-db".into())
            .spawn(move || {
                let _tell = pace::TellOnExit(pace.clone());
                writer::run(conn, receiver, health, retain, told, &pace, lock)
            })
            .map_err(|source| DbError::File {
                path: shown.clone(),
                source,
            })?
    };
    Ok(Opened {
        db: Db {
            path: Arc::new(path.to_path_buf()),
            sender,
            health,
            writer: Arc::new(std::sync::Mutex::new(Some(thread))),
            reader: Arc::new(std::sync::Mutex::new(reader)),
            gapped: Arc::default(),
            committed,
            pace,
        },
        restored,
    })
}

impl Db {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn health(&self) -> &DbHealth {
        &self.health
    }

    /// Writes waiting for the writer now.
    pub fn writes_waiting(&self) -> usize {
        self.sender.waiting()
    }

    /// Whether a feed waits before its next frame: the writer is healthy
    /// and more than [`PACE_WRITES`] writes wait for it (`pace.rs`).
    pub fn behind(&self) -> bool {
        !self.health.degraded() && !self.pace.stopped() && self.sender.waiting() > PACE_WRITES
    }

    /// Returns once the writer is no longer [`behind`](Self::behind).
    pub async fn caught_up(&self) {
        self.pace.until(|| self.behind()).await;
    }

    /// Hands a write to the writer without waiting; when it is too far
    /// behind, the write is dropped and counted (and the database is
    /// degraded until it catches up).
    pub fn write(&self, write: Write) {
        if let Write::Transcript { session, .. } = &write
            && self.gapped.contains(session)
        {
            self.count_dropped();
            return;
        }
        match self.sender.try_send(writer::Message::Write(write)) {
            Ok(()) => {}
            Err(queue::Refused::Full(message)) => {
                self.count_dropped();
                if let writer::Message::Write(Write::Transcript { session, seq, .. }) = message
                    && self.gapped.insert(&session)
                {
                    tracing::warn!(
                        session_id = %session,
                        from_seq = seq,
                        "the database writer is behind: this session's lines from here on are \
                         not written; a restart resumes its feed from the first one missing"
                    );
                }
            }
            // The writer is gone (the process is stopping): nothing to do.
            Err(queue::Refused::Gone(_)) => {}
        }
    }

    fn count_dropped(&self) {
        let n = self.health.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        self.health.degraded.store(true, Ordering::Relaxed);
        if n == 1 || crate::text::is_power_of_ten(n) {
            tracing::warn!(dropped = n, "the database writer is behind; writes dropped");
        }
    }

    /// Asks the writer to delete what is past `--retain` now; skipped
    /// (until the next ask) when it is too far behind to take the ask.
    pub fn prune(&self) {
        let _ = self.sender.try_send(writer::Message::Prune);
    }

    /// The engine forgot `session`: its gap, if it had one, is forgotten too.
    pub fn forgot(&self, session: &SessionId) {
        self.gapped.remove(session);
    }

    /// Calls `tell(session, wrote)` on the writer's thread after each
    /// commit: once for each session whose lines it wrote, with the newest
    /// of them, and once for each result (the first call sets the
    /// listener; a later one does nothing). Keep it short: the writer
    /// waits for it.
    pub fn on_committed(&self, tell: impl Fn(&SessionId, Wrote) + Send + Sync + 'static) {
        let _ = self.committed.0.set(Box::new(tell));
    }

    /// The session's lines the file holds before `generation`, the newest
    /// `limit` of them, oldest first: what a view reads back once memory
    /// let them go. Blocking: call from a blocking task.
    pub fn lines_before(
        &self,
        id: &SessionId,
        generation: u64,
        limit: usize,
    ) -> Result<Vec<StoredTranscript>, DbError> {
        self.read_back(id, |conn| {
            restore::lines_before(conn, id, generation, limit)
        })
    }

    /// The session's lines the file holds from `generation` on, the oldest
    /// `limit` of them: what a run reads back once memory let them go.
    /// Blocking: one short read by the primary key.
    pub fn lines_from(
        &self,
        id: &SessionId,
        generation: u64,
        limit: usize,
    ) -> Result<Vec<StoredTranscript>, DbError> {
        self.read_back(id, |conn| restore::lines_from(conn, id, generation, limit))
    }

    /// The latest result of `op` the file holds for the session: what a
    /// view or a run reads once memory let its body go. Blocking: one
    /// short read by the primary key.
    pub fn result(&self, id: &SessionId, op: Operation) -> Result<Option<StoredResult>, DbError> {
        self.read_back(id, |conn| restore::result_of(conn, id, op))
    }

    /// Runs a read of what memory let go of `id` on the reading
    /// connection; a failure is counted, and logged at a bounded rate
    /// (views and runs ask again).
    fn read_back<T>(
        &self,
        id: &SessionId,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, DbError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        read(&conn).map_err(|e| {
            let n = self.health.read_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || crate::text::is_power_of_ten(n) {
                tracing::warn!(failures = n, session_id = %id, "cannot read back from the database: {e}");
            }
            DbError::io(&self.path.display().to_string(), e)
        })
    }

    /// Waits (at most `within`) until every write handed over before this
    /// call is committed; false if that did not happen in time. Blocking.
    pub fn flush(&self, within: Duration) -> bool {
        let (done, committed) = std::sync::mpsc::sync_channel(1);
        if self
            .sender
            .send_past_bound(writer::Message::Flush(done))
            .is_err()
        {
            return false;
        }
        committed.recv_timeout(within).is_ok()
    }

    /// Past sessions, newest first: those whose last word came before
    /// `before` and after `since` (unix seconds), at most `limit`.
    /// Blocking: call from a blocking task.
    pub fn history(
        &self,
        since: Option<f64>,
        before: Option<(f64, String)>,
        limit: usize,
    ) -> Result<HistoryPage, DbError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        restore::history(&conn, since, before, limit)
            .map_err(|e| DbError::io(&self.path.display().to_string(), e))
    }

    /// One session as the file holds it, whatever memory did with it.
    /// Blocking: call from a blocking task.
    pub fn session(&self, id: &SessionId) -> Result<Option<StoredSession>, DbError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        restore::one(&conn, id).map_err(|e| DbError::io(&self.path.display().to_string(), e))
    }

    /// Lets the writer commit every write handed to it so far, then stops
    /// it and waits (at most `within`). Later writes are ignored.
    pub fn close(&self, within: Duration) {
        // Blocking is fine here: the process is stopping.
        let _ = self.sender.send_past_bound(writer::Message::Close);
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let deadline = std::time::Instant::now() + within;
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                tracing::warn!("the database writer did not finish in time");
            }
        }
    }
}

/// Seconds since the Unix epoch, as stored.
pub(crate) fn unix(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A stored time back as a `SystemTime`.
pub(crate) fn from_unix(seconds: f64) -> SystemTime {
    if seconds.is_finite() && seconds > 0.0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

impl crate::state::Journal for Db {
    fn admitted(&self, session: &SessionId, op: Operation, run: &crate::state::InFlight) {
        self.write(Write::RunAdmitted {
            run_id: run.run_id,
            session: session.clone(),
            op,
            at: run.since,
            follow_up: run.follow_up,
        });
    }

    fn ended(
        &self,
        session: &SessionId,
        op: Operation,
        record: &crate::state::RunRecord,
        error: Option<&str>,
        skipped: u64,
    ) {
        if skipped > 0 {
            self.write(Write::Skipped {
                session: session.clone(),
                op,
                total: skipped,
            });
        }
        self.write(Write::RunEnded {
            run_id: record.run_id,
            session: session.clone(),
            op,
            admitted_at: record.started_at,
            follow_up: record.follow_up,
            outcome: record.outcome,
            duration: record.duration,
            waited: record.waited,
            error: error.map(str::to_string),
            covered_generation: record.covered_generation,
            usage: record.usage,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_tells_the_newest_line_of_each_session_and_each_result_it_wrote() {
        let line = |session: &str, generation| Write::Transcript {
            session: SessionId::parse(session).unwrap(),
            feed: None,
            generation,
            seq: None,
            speaker: None,
            start: None,
            end: None,
            text: "hi".into(),
            at: SystemTime::UNIX_EPOCH,
        };
        let batch = [
            line("a", 3),
            line("b", 7),
            Write::Ended {
                session: SessionId::parse("c").unwrap(),
                at: SystemTime::UNIX_EPOCH,
            },
            line("a", 5),
            Write::Result {
                session: SessionId::parse("a").unwrap(),
                op: Operation::MIND_MAP,
                run_id: 12,
                covered_generation: 5,
                body: "{}".into(),
                model: "m".into(),
                processing: Duration::ZERO,
                finished_at: SystemTime::UNIX_EPOCH,
                usage: Usage::default(),
                truncated: false,
                outbox: Vec::new(),
            },
            line("a", 4),
        ];
        let listener = Committed::default();
        listener.tell(&batch);
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let heard = told.clone();
        let _ = listener.0.set(Box::new(move |session: &SessionId, wrote| {
            heard.lock().unwrap().push((session.to_string(), wrote));
        }));
        listener.tell(&batch);
        let mut told = told.lock().unwrap().clone();
        told.sort();
        assert_eq!(
            told,
            [
                ("a".to_string(), Wrote::LinesThrough(5)),
                ("a".to_string(), Wrote::Result(Operation::MIND_MAP, 12)),
                ("b".to_string(), Wrote::LinesThrough(7))
            ]
        );
    }

    #[test]
    fn the_default_file_follows_the_xdg_rules() {
        let some = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            default_path_in(some("/state"), some("/home/ana"), "inflight.db"),
            Some(PathBuf::from("/state/inflight/inflight.db"))
        );
        assert_eq!(
            default_path_in(some(""), some("/home/ana"), "inflight.db"),
            Some(PathBuf::from("/home/ana/.local/state/inflight/inflight.db")),
            "an empty XDG_STATE_HOME counts as unset"
        );
        assert_eq!(
            default_path_in(None, some("/home/ana"), "x.db"),
            Some(PathBuf::from("/home/ana/.local/state/inflight/x.db"))
        );
        assert_eq!(default_path_in(None, some(""), "x.db"), None);
        assert_eq!(default_path_in(None, None, "x.db"), None);
    }
}
