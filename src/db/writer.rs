//! The writer thread: owns the write connection, commits in batches,
//! retries what the disk refused, says which lines each commit wrote, and
//! prunes what is past `--retain` when asked.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use rusqlite::{Connection, Transaction, params};

use super::{BATCH_ROWS, BATCH_WINDOW, DbError, DbHealth, Write, unix};
use crate::model::SessionId;

/// What the engine sends the writer.
#[derive(Debug)]
pub enum Message {
    Write(Write),
    /// Commit what came before, then say so.
    Flush(std::sync::mpsc::SyncSender<()>),
    /// Commit what came before, then stop.
    Close,
    /// Delete what is past `--retain` (the engine's housekeeping asks
    /// every [`super::PRUNE_EVERY`], on its clock).
    Prune,
}

/// How long the writer waits before trying a failed batch again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Holds `<file>.lock` for as long as the writer runs: one writer per file.
pub fn lock(path: &Path) -> Result<File, DbError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| DbError::File {
            path: lock_path.display().to_string(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(DbError::Locked {
            path: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(DbError::File {
            path: lock_path.display().to_string(),
            source,
        }),
    }
}

/// WAL, normal syncs, a busy timeout for the readers.
pub fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(())
}

/// Runs that were in flight when the last process died never ended: say so.
pub fn mark_interrupted(conn: &Connection) -> Result<usize, rusqlite::Error> {
    let n = conn.execute(
        "UPDATE runs SET outcome = 'interrupted', error = 'interrupted: the process stopped during the run'
         WHERE outcome IS NULL",
        [],
    )?;
    if n > 0 {
        tracing::info!(
            runs = n,
            "runs in flight when inflight last stopped recorded as interrupted"
        );
    }
    Ok(n)
}

/// Deletes sessions whose last word is older than `retain`, with all they
/// had (webhook deliveries still waiting among it), and dead letters given
/// up longer ago than that: neither grows without end.
pub fn prune(conn: &Connection, retain: Duration) -> Result<usize, rusqlite::Error> {
    let cutoff = unix(std::time::SystemTime::now()) - retain.as_secs_f64();
    let tx = conn.unchecked_transaction()?;
    let old: Vec<String> = {
        let mut stmt = tx.prepare("SELECT id FROM sessions WHERE last_seen < ?1")?;
        stmt.query_map([cutoff], |row| row.get(0))?
            .collect::<Result<_, _>>()?
    };
    for table in [
        "transcripts",
        "results",
        "runs",
        "skips",
        "outbox",
        "dead_letters",
    ] {
        let mut stmt = tx.prepare(&format!("DELETE FROM {table} WHERE session = ?1"))?;
        for id in &old {
            stmt.execute([id])?;
        }
    }
    tx.execute("DELETE FROM sessions WHERE last_seen < ?1", [cutoff])?;
    tx.execute("DELETE FROM dead_letters WHERE died_at < ?1", [cutoff])?;
    tx.commit()?;
    if !old.is_empty() {
        tracing::info!(
            sessions = old.len(),
            "deleted sessions past --retain from the database"
        );
    }
    Ok(old.len())
}

/// The writer's loop: batch, commit, retry, prune; ends on `Close` or when
/// every sender is gone. `_lock` is held until then.
pub fn run(
    mut conn: Connection,
    receiver: super::queue::Receiver<Message>,
    health: Arc<DbHealth>,
    retain: Duration,
    committed: Arc<super::Committed>,
    pace: &super::pace::Pace,
    _lock: File,
) {
    let mut batch: Vec<Write> = Vec::with_capacity(BATCH_ROWS);
    let mut closing = false;
    // Asked to say when everything before them is committed.
    let mut flushes: Vec<std::sync::mpsc::SyncSender<()>> = Vec::new();
    let mut prune_due = false;
    while !closing || !batch.is_empty() {
        if batch.is_empty() && !prune_due {
            match receiver.recv() {
                Some(Message::Write(write)) => batch.push(write),
                Some(Message::Flush(done)) => flushes.push(done),
                Some(Message::Prune) => prune_due = true,
                Some(Message::Close) | None => closing = true,
            }
        }
        let window_ends = Instant::now() + BATCH_WINDOW;
        while !closing && flushes.is_empty() && !prune_due && batch.len() < BATCH_ROWS {
            let left = window_ends.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(Message::Write(write)) => batch.push(write),
                Ok(Message::Flush(done)) => flushes.push(done),
                Ok(Message::Prune) => prune_due = true,
                Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => closing = true,
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        // The batch is out of the queue: a feed waiting for room reads on
        // while it commits.
        pace.tell();
        if !batch.is_empty() {
            match commit(&mut conn, &batch) {
                Ok(()) => {
                    health
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    committed.tell(&batch);
                    batch.clear();
                    if health.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!("the database is writing again");
                    }
                    for done in flushes.drain(..) {
                        let _ = done.send(());
                    }
                }
                Err(e) => {
                    let n = health.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    health.degraded.store(true, Ordering::Relaxed);
                    // Degraded: the feeds no longer wait for it.
                    pace.tell();
                    if n <= 3 || crate::text::is_power_of_ten(n) {
                        tracing::error!(
                            failures = n,
                            "cannot write to the database: {e}; running in memory, retrying"
                        );
                    }
                    if closing {
                        tracing::error!(lost = batch.len(), "stopping with writes not saved");
                        return;
                    }
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        }
        // What came before the ask is committed (or kept for a retry).
        if prune_due {
            prune_due = false;
            if let Err(e) = prune(&conn, retain) {
                tracing::warn!("cannot prune the database: {e}");
            }
        }
        if batch.is_empty() {
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }
}

/// What a batch's transcripts say about their session, merged: one upsert
/// per session and batch instead of one per transcript.
struct Seen {
    feed: Option<usize>,
    first_at: f64,
    last_at: f64,
    last_seq: Option<u64>,
    generation: u64,
    /// A life began in this batch: the row's generation is this batch's,
    /// not the higher one of the life before.
    new_life: bool,
}

fn commit(conn: &mut Connection, batch: &[Write]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut seen: HashMap<&SessionId, Seen> = HashMap::new();
    for write in batch {
        match write {
            Write::Transcript {
                session,
                feed,
                generation,
                seq,
                at,
                ..
            } => {
                // A session's first line, or the first of a new life: a
                // session forgotten and speaking again numbers its lines
                // from 1 again, as memory does. What the file holds of the
                // life before goes, so a restart cannot mix the two lives'
                // lines, nor take a result of the old life for one of the
                // new (its runs stay in `runs`); the row takes this life's
                // generation.
                let new_life = *generation == 1;
                if new_life {
                    tx.prepare_cached("DELETE FROM transcripts WHERE session = ?1")?
                        .execute([session.as_str()])?;
                    tx.prepare_cached("DELETE FROM results WHERE session = ?1")?
                        .execute([session.as_str()])?;
                }
                apply(&tx, write)?;
                let at = unix(*at);
                let entry = seen.entry(session).or_insert(Seen {
                    feed: None,
                    first_at: at,
                    last_at: at,
                    last_seq: None,
                    generation: 0,
                    new_life: false,
                });
                if new_life {
                    entry.new_life = true;
                    entry.generation = 0;
                }
                entry.feed = feed.or(entry.feed);
                entry.last_at = at;
                entry.last_seq = seq.or(entry.last_seq);
                entry.generation = entry.generation.max(*generation);
            }
            // An end comes after the transcripts before it.
            Write::Ended { session, .. } => {
                if let Some(pending) = seen.remove(session) {
                    upsert_session(&tx, session, &pending)?;
                }
                apply(&tx, write)?;
            }
            other => apply(&tx, other)?,
        }
    }
    for (session, pending) in &seen {
        upsert_session(&tx, session, pending)?;
    }
    tx.commit()
}

fn upsert_session(
    tx: &Transaction<'_>,
    session: &SessionId,
    seen: &Seen,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO sessions (id, feed, first_seen, last_seen, ended_at, last_seq, generation)
         VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET
             feed = coalesce(excluded.feed, feed),
             last_seen = excluded.last_seen,
             ended_at = NULL,
             last_seq = coalesce(excluded.last_seq, last_seq),
             generation = CASE WHEN ?7 THEN excluded.generation
                               ELSE max(generation, excluded.generation) END",
    )?
    .execute(params![
        session.as_str(),
        seen.feed.map(|f| f as i64),
        seen.first_at,
        seen.last_at,
        seen.last_seq.map(|s| s as i64),
        seen.generation as i64,
        seen.new_life
    ])?;
    Ok(())
}

/// One write as SQL. Results are fenced here: an older run never
/// replaces a newer one's result, and within a run a step covering less
/// never replaces one covering more.
fn apply(tx: &Transaction<'_>, write: &Write) -> Result<(), rusqlite::Error> {
    match write {
        // The session's own row is written by `commit`, once per batch.
        Write::Transcript {
            session,
            generation,
            seq,
            speaker,
            start,
            end,
            text,
            at,
            ..
        } => {
            let at = unix(*at);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO transcripts
                     (session, generation, seq, speaker, start, end, text, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                session.as_str(),
                *generation as i64,
                seq.map(|s| s as i64),
                speaker,
                start,
                end,
                text,
                at
            ])?;
        }
        Write::Ended { session, at } => {
            tx.prepare_cached("UPDATE sessions SET ended_at = ?2 WHERE id = ?1")?
                .execute(params![session.as_str(), unix(*at)])?;
        }
        Write::Result {
            session,
            op,
            run_id,
            covered_generation,
            body,
            model,
            processing,
            finished_at,
            usage,
            truncated,
            outbox,
        } => {
            for row in outbox {
                put_outbox(tx, row)?;
            }
            tx.prepare_cached(
                "INSERT INTO results
                     (session, op, run_id, covered_generation, body, model, processing_ms, finished_at,
                      prompt_tokens, completion_tokens, truncated, cached_tokens, cost_nanos)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (session, op) DO UPDATE SET
                     run_id = excluded.run_id,
                     covered_generation = excluded.covered_generation,
                     body = excluded.body,
                     model = excluded.model,
                     processing_ms = excluded.processing_ms,
                     finished_at = excluded.finished_at,
                     prompt_tokens = excluded.prompt_tokens,
                     completion_tokens = excluded.completion_tokens,
                     truncated = excluded.truncated,
                     cached_tokens = excluded.cached_tokens,
                     cost_nanos = excluded.cost_nanos
                 WHERE excluded.run_id > results.run_id
                    OR (excluded.run_id = results.run_id
                        AND excluded.covered_generation > results.covered_generation)",
            )?
            .execute(params![
                session.as_str(),
                op.as_str(),
                *run_id as i64,
                *covered_generation as i64,
                body,
                model,
                processing.as_millis() as i64,
                unix(*finished_at),
                usage.prompt_tokens as i64,
                usage.completion_tokens as i64,
                *truncated,
                usage.cached_tokens as i64,
                cost_nanos(usage.cost)
            ])?;
        }
        Write::Outbox(rows) => {
            for row in rows {
                put_outbox(tx, row)?;
            }
        }
        Write::Delivered {
            endpoint,
            session,
            op,
            event,
            revision,
        } => {
            tx.prepare_cached(
                "DELETE FROM outbox
                 WHERE endpoint = ?1 AND session = ?2 AND op = ?3 AND event = ?4 AND revision = ?5",
            )?
            .execute(params![
                endpoint,
                session.as_str(),
                op.map_or("", |op| op.as_str()),
                event.as_str(),
                *revision as i64
            ])?;
        }
        Write::Dead {
            row,
            attempts,
            error,
            died_at,
        } => {
            tx.prepare_cached(
                "DELETE FROM outbox
                 WHERE endpoint = ?1 AND session = ?2 AND op = ?3 AND event = ?4 AND revision = ?5",
            )?
            .execute(params![
                row.endpoint,
                row.session.as_str(),
                row.op.map_or("", |op| op.as_str()),
                row.event.as_str(),
                row.revision as i64
            ])?;
            tx.prepare_cached(
                "INSERT INTO dead_letters
                     (endpoint, id, event, session, op, revision, attempts, error, created_at, died_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                row.endpoint,
                row.id,
                row.event.as_str(),
                row.session.as_str(),
                row.op.map_or("", |op| op.as_str()),
                row.revision as i64,
                *attempts as i64,
                error,
                unix(row.created_at),
                unix(*died_at),
                &*row.body
            ])?;
        }
        Write::RunAdmitted {
            run_id,
            session,
            op,
            at,
            follow_up,
        } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO runs (run_id, session, op, admitted_at, follow_up)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                *run_id as i64,
                session.as_str(),
                op.as_str(),
                unix(*at),
                *follow_up
            ])?;
        }
        Write::RunEnded {
            run_id,
            session,
            op,
            admitted_at,
            follow_up,
            outcome,
            duration,
            waited,
            error,
            covered_generation,
            usage,
        } => {
            tx.prepare_cached(
                "INSERT INTO runs (run_id, session, op, admitted_at, follow_up, outcome, duration_ms,
                                   waited_ms, error, covered_generation, prompt_tokens, completion_tokens,
                                   cached_tokens, cost_nanos)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (run_id) DO UPDATE SET
                     outcome = excluded.outcome,
                     duration_ms = excluded.duration_ms,
                     waited_ms = excluded.waited_ms,
                     error = excluded.error,
                     covered_generation = excluded.covered_generation,
                     prompt_tokens = excluded.prompt_tokens,
                     completion_tokens = excluded.completion_tokens,
                     cached_tokens = excluded.cached_tokens,
                     cost_nanos = excluded.cost_nanos",
            )?
            .execute(params![
                *run_id as i64,
                session.as_str(),
                op.as_str(),
                unix(*admitted_at),
                *follow_up,
                outcome.as_str(),
                duration.as_millis() as i64,
                waited.as_millis() as i64,
                error,
                covered_generation.map(|g| g as i64),
                usage.prompt_tokens as i64,
                usage.completion_tokens as i64,
                usage.cached_tokens as i64,
                cost_nanos(usage.cost)
            ])?;
        }
        Write::Skipped { session, op, total } => {
            tx.prepare_cached(
                "INSERT INTO skips (session, op, skipped) VALUES (?1, ?2, ?3)
                 ON CONFLICT (session, op) DO UPDATE SET skipped = max(skipped, excluded.skipped)",
            )?
            .execute(params![session.as_str(), op.as_str(), *total as i64])?;
        }
    }
    Ok(())
}

/// Keeps a delivery waiting: the newest of its slot wins, an older one
/// changes nothing.
fn put_outbox(tx: &Transaction<'_>, row: &super::OutboxRow) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO outbox (endpoint, session, op, event, revision, id, body, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (endpoint, session, op, event) DO UPDATE SET
             revision = excluded.revision,
             id = excluded.id,
             body = excluded.body,
             created_at = excluded.created_at
         WHERE excluded.revision > outbox.revision",
    )?
    .execute(params![
        row.endpoint,
        row.session.as_str(),
        row.op.map_or("", |op| op.as_str()),
        row.event.as_str(),
        row.revision as i64,
        row.id,
        &*row.body,
        unix(row.created_at)
    ])?;
    Ok(())
}

/// A cost as SQLite's integers hold it (saturating past nine billion units).
fn cost_nanos(cost: crate::spend::Cost) -> i64 {
    i64::try_from(cost.0).unwrap_or(i64::MAX)
}
