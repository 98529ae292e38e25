//! The engine and its database: what it writes down as it goes, and what
//! it takes back at start.
//!
//! Writes go through [`crate::db::Db::write`], which never waits: final
//! transcripts and ends from [`Engine::ingest`]'s path, results from the
//! runner, admissions, ends and skips from the state manager (as its
//! [`crate::state::Journal`]).

use std::sync::Arc;
use std::time::SystemTime;

use super::store::OpResult;
use super::{Engine, Shared};
use crate::db::{Db, Restored, StoredSession, Write, Wrote};
use crate::model::{Operation, SessionId, Transcript};
use crate::ops::OpMap;
use crate::state::{OpStats, RunRecord};

impl Engine {
    /// Writes everything from now on to `db` (once; later calls do nothing).
    pub fn use_db(&self, db: Db) {
        if self.shared.db.set(db.clone()).is_ok() {
            // What the file holds may leave memory. Weak: the database is
            // the engine's, not the other way round.
            let shared = Arc::downgrade(&self.shared);
            db.on_committed(move |session, wrote| {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                match wrote {
                    Wrote::LinesThrough(generation) => {
                        shared.store.written_through(session, generation);
                    }
                    Wrote::Result(op, run_id) => shared.store.result_written(session, op, run_id),
                }
            });
            self.shared.state.set_journal(Arc::new(db));
        }
    }

    /// The database, when there is one.
    pub fn db(&self) -> Option<&Db> {
        self.shared.db.get()
    }

    /// Whether `feed` waits for the database's writer before it reads
    /// its next frame: the writer is too far behind (see [`Db::behind`]).
    /// A wait is counted on the feed (`database_waits`).
    pub fn feed_waits_for_writes(&self, feed: &super::FeedStatus) -> bool {
        let behind = self.db().is_some_and(Db::behind);
        if behind {
            feed.database_waits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        behind
    }

    /// Returns once the database's writer has caught up; at once without
    /// a database.
    pub async fn writes_caught_up(&self) {
        if let Some(db) = self.db() {
            db.caught_up().await;
        }
    }

    /// Takes back what the database held (call before any feed starts):
    /// sessions, transcripts, results, statistics, run ids. Then every
    /// automatic operation whose result misses the session's newest
    /// transcripts gets one run. Returns how many sessions came back.
    pub fn restore(&self, restored: Restored) -> usize {
        let shared = &self.shared;
        shared.state.continue_run_ids_from(restored.next_run_id);
        let mut back = 0;
        for stored in &restored.sessions {
            if !shared.store.restore(stored) {
                continue;
            }
            back += 1;
            shared.state.restore_stats(&stored.id, stats_of(stored));
        }
        for stored in restored.sessions.iter().take(back) {
            for op in &shared.config.automatic_ops {
                let covered = stored
                    .results
                    .get(*op)
                    .and_then(Option::as_ref)
                    .map_or(0, |r| r.covered_generation);
                if covered < stored.generation {
                    self.admit(&stored.id, *op, None);
                }
            }
        }
        super::deliveries::restore(shared, restored.outbox, restored.dead_letters);
        for (session, last_seq) in restored.forgotten {
            shared.store.remember_forgotten(session, last_seq);
        }
        if back > 0 {
            tracing::info!(sessions = back, "sessions restored from the database");
        }
        back
    }
}

/// A session as the database holds it, in the shape the views read:
/// for a session memory has forgotten.
pub fn detail_from_disk(stored: &StoredSession, recent: usize) -> super::SessionDetail {
    let stats = stats_of(stored);
    let row = super::SessionRow {
        id: stored.id.clone(),
        feed: stored.feed,
        transcripts: stored.generation,
        last_transcript_at: None,
        ended: stored.ended_at.is_some(),
        has_partial: false,
        lost: 0,
        ops: stats.map(|_, stats| super::OpRow::new(None, stats)),
        over_budget: None,
        budget_lifted: false,
    };
    let skip = stored.transcripts.len().saturating_sub(recent);
    let content = super::SessionContent {
        recent: stored
            .transcripts
            .iter()
            .skip(skip)
            .map(|t| from_disk(t.clone()))
            .collect(),
        partial: None,
        results: stored
            .results
            .map(|op, stored| OpResult::from_stored(op, stored.as_ref()?)),
        rejected: Default::default(),
    };
    super::SessionDetail {
        row,
        content,
        history: stats.map(|_, stats| stats.history.to_vec()),
    }
}

/// A line read from the file, in the shape views read (its place in the
/// order of arrival is this process's, so none).
fn from_disk(t: crate::db::StoredTranscript) -> super::StoredTranscript {
    super::StoredTranscript {
        generation: t.generation,
        speaker: t.speaker,
        text: t.text,
        start: t.start,
        received_at: t.received_at,
        arrival: 0,
    }
}

/// Puts before `content`'s lines the session's lines from the file that
/// fill it up to `recent`: the covered lines memory let go once the file
/// held them. `newest` is the session's newest generation. Blocking (a
/// short read by the primary key); a file that cannot be read leaves
/// `content` as it is (the database logs it).
pub(super) fn read_back_lines(
    shared: &Shared,
    session: &SessionId,
    newest: u64,
    content: &mut super::SessionContent,
    recent: usize,
) {
    let Some(db) = shared.db.get() else {
        return;
    };
    let missing = recent.saturating_sub(content.recent.len());
    if missing == 0 {
        return;
    }
    let before = content.recent.first().map_or(newest + 1, |t| t.generation);
    if let Ok(older) = db.lines_before(session, before, missing) {
        content
            .recent
            .splice(0..0, older.into_iter().map(from_disk));
    }
}

/// The session's lines the file holds from `generation` on (at most
/// [`super::store::READ_BACK_LINES`]): what a run needs that memory let go
/// before it was covered. Blocking, on the run's own thread: a short read
/// by the primary key. (On a blocking task it cost more memory than it
/// saved: each thread of that pool allocates from an arena of its own.)
pub(super) fn lines_from(
    shared: &Shared,
    session: &SessionId,
    generation: u64,
) -> Result<Vec<super::StoredTranscript>, String> {
    let Some(db) = shared.db.get() else {
        return Ok(Vec::new());
    };
    db.lines_from(session, generation, super::store::READ_BACK_LINES)
        .map(|lines| lines.into_iter().map(from_disk).collect())
        .map_err(|e| e.to_string())
}

/// The latest result of `op` as the file holds it: what a run or a view
/// reads once memory let its body go. Blocking, on the caller's thread: a
/// short read by the primary key. `Ok(None)` when the file has none this
/// build can read.
pub(super) fn result_from(
    shared: &Shared,
    session: &SessionId,
    op: Operation,
) -> Result<Option<OpResult>, String> {
    let Some(db) = shared.db.get() else {
        return Ok(None);
    };
    db.result(session, op)
        .map(|stored| stored.and_then(|stored| OpResult::from_stored(op, &stored)))
        .map_err(|e| e.to_string())
}

/// Fills in `content` the results of `filed`, whose bodies memory let go,
/// from the file. Blocking (a short read each); a file that cannot be
/// read leaves them out (the database logs it).
pub(super) fn read_back_results(
    shared: &Shared,
    session: &SessionId,
    filed: &[Operation],
    content: &mut super::SessionContent,
) {
    for &op in filed {
        if let Ok(result) = result_from(shared, session, op) {
            *content.results.entry(op) = result;
        }
    }
}

/// A copy of a final transcript for the database, when there is one: taken
/// before the store consumes the transcript.
pub(super) fn keep_for_db(shared: &Shared, transcript: &Transcript) -> Option<Transcript> {
    shared.db.get()?;
    transcript.is_final.then(|| transcript.clone())
}

/// Writes a kept transcript down as the store numbered it.
pub(super) fn write_transcript(
    shared: &Shared,
    kept: Option<Transcript>,
    feed: Option<usize>,
    generation: u64,
) {
    let (Some(db), Some(t)) = (shared.db.get(), kept) else {
        return;
    };
    db.write(Write::Transcript {
        session: t.session_id,
        feed,
        generation,
        seq: t.seq,
        speaker: t.speaker,
        start: t.start,
        end: t.end,
        text: t.text,
        at: SystemTime::now(),
    });
}

pub(super) fn write_ended(shared: &Shared, session: &SessionId) {
    if let Some(db) = shared.db.get() {
        db.write(Write::Ended {
            session: session.clone(),
            at: SystemTime::now(),
        });
    }
}

pub(super) fn write_result(
    shared: &Shared,
    session: &SessionId,
    op: Operation,
    result: &OpResult,
    usage: crate::llm::Usage,
    outbox: Vec<crate::db::OutboxRow>,
) {
    let Some(db) = shared.db.get() else {
        return;
    };
    let body = result.body.stored();
    db.write(Write::Result {
        session: session.clone(),
        op,
        run_id: result.run_id,
        covered_generation: result.covered_generation,
        body,
        model: result.model.clone(),
        processing: result.processing_time,
        finished_at: result.finished_at,
        usage,
        truncated: result.truncated,
        outbox,
    });
}

/// A stored session's statistics: its history replayed, then the totals
/// over every stored run (the history holds only the newest).
fn stats_of(stored: &StoredSession) -> OpMap<OpStats> {
    OpMap::filled_with(|op| {
        let mut stats = OpStats::default();
        for run in stored.history.get(op).into_iter().flatten() {
            let interrupted = run.outcome.is_none();
            stats.record(
                RunRecord {
                    run_id: run.run_id,
                    started_at: run.admitted_at,
                    duration: run.duration,
                    outcome: run.outcome.unwrap_or(crate::events::Outcome::Cancelled),
                    covered_generation: run.covered_generation,
                    follow_up: run.follow_up,
                    waited: run.waited,
                    usage: run.usage,
                },
                match (&run.error, interrupted) {
                    (Some(error), _) => Some(error.clone()),
                    (None, true) => Some("interrupted: the process stopped during the run".into()),
                    (None, false) => None,
                },
            );
        }
        if let Some(counts) = stored.counts.get(op) {
            stats.counts = counts.counts;
            stats.total_duration = counts.total_duration;
        }
        if let Some(Some(result)) = stored.results.get(op) {
            stats.covered_generation = Some(result.covered_generation);
        }
        stats
    })
}
