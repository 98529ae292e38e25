//! Reading the file back at start: the sessions memory should hold again,
//! with their transcripts, latest results, run history and counts.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use rusqlite::Connection;

use super::{RestoreLimits, from_unix, unix};
use crate::engine::store::MAX_KEPT_TRANSCRIPTS;
use crate::events::{Outcome, RunId};
use crate::llm::Usage;
use crate::model::{Operation, SessionId};
use crate::ops::OpMap;
use crate::state::stats::HISTORY_LEN;

/// A final transcript as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTranscript {
    pub generation: u64,
    pub seq: Option<u64>,
    pub speaker: Option<String>,
    pub text: String,
    pub start: Option<f64>,
    pub received_at: SystemTime,
}

/// The latest result of one operation.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    pub run_id: RunId,
    pub covered_generation: u64,
    /// A summary's text, or a mind map as JSON.
    pub body: String,
    pub model: String,
    pub processing: Duration,
    pub finished_at: SystemTime,
    /// The server cut the answer at the token limit.
    pub truncated: bool,
}

/// One finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    pub run_id: RunId,
    pub admitted_at: SystemTime,
    pub follow_up: bool,
    /// `None` for a run the last process died during (`interrupted`).
    pub outcome: Option<Outcome>,
    pub duration: Duration,
    pub waited: Duration,
    pub error: Option<String>,
    pub covered_generation: Option<u64>,
    pub usage: Usage,
}

/// Counts of one operation of one session, over every stored run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredCounts {
    /// Cancelled and interrupted runs count as cancelled.
    pub counts: crate::state::OpCounters,
    pub total_duration: Duration,
}

/// One session as the file holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    pub id: SessionId,
    pub feed: Option<usize>,
    pub last_seq: Option<u64>,
    pub generation: u64,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    pub ended_at: Option<SystemTime>,
    /// Oldest first: the newest `MAX_KEPT_TRANSCRIPTS`.
    pub transcripts: Vec<StoredTranscript>,
    pub results: OpMap<Option<StoredResult>>,
    /// Oldest first: the newest `HISTORY_LEN` runs.
    pub history: OpMap<Vec<StoredRun>>,
    pub counts: OpMap<StoredCounts>,
}

/// What the file held, for the engine to take back.
#[derive(Debug, Default)]
pub struct Restored {
    /// Newest first.
    pub sessions: Vec<StoredSession>,
    /// One past the highest run id ever stored: run ids keep growing
    /// across restarts, so the fencing of results holds.
    pub next_run_id: RunId,
    /// Sessions left on disk only, with their last `seq`: memory
    /// remembers them as forgotten. Oldest first.
    pub forgotten: Vec<(SessionId, Option<u64>)>,
    /// Webhook deliveries still waiting.
    pub outbox: Vec<super::OutboxRow>,
    /// The newest given-up deliveries, oldest first, with their endpoint's
    /// URL.
    pub dead_letters: Vec<(String, crate::webhooks::DeadLetter)>,
}

fn outcome(word: &str) -> Option<Outcome> {
    match word {
        "ok" => Some(Outcome::Ok),
        "failed" => Some(Outcome::Failed),
        "timed_out" => Some(Outcome::TimedOut),
        "cancelled" => Some(Outcome::Cancelled),
        _ => None,
    }
}

/// The defined operation a row names; rows of one no longer defined stay
/// on disk and are not loaded.
fn op_named(word: &str) -> Option<Operation> {
    crate::ops::registry().parse(word)
}

/// Where a row whose first columns are `session, op` belongs: the loaded
/// session's index and the operation's; `None` for a session not loaded
/// or an operation this build does not know.
fn locate(
    row: &rusqlite::Row<'_>,
    index: &HashMap<String, usize>,
) -> Result<Option<(usize, Operation)>, rusqlite::Error> {
    let session = index.get(row.get_ref(0)?.as_str()?).copied();
    let op = op_named(row.get_ref(1)?.as_str()?);
    Ok(session.zip(op))
}

fn millis(value: Option<i64>) -> Duration {
    Duration::from_millis(value.unwrap_or(0).max(0) as u64)
}

/// Reads the sessions memory should hold: live ones and those ended less
/// than `forget_after` ago, the newest `max_sessions` of them.
pub fn read(conn: &Connection, limits: RestoreLimits) -> Result<Restored, rusqlite::Error> {
    // Results count too: a result is written before its run's end, and a
    // process killed in between must not hand its id out again (webhook
    // revisions and the results' own fence grow with it).
    let next_run_id = conn.query_row(
        "SELECT max(coalesce((SELECT max(run_id) FROM runs), 0),
                    coalesce((SELECT max(run_id) FROM results), 0)) + 1",
        [],
        |r| r.get::<_, i64>(0),
    )? as RunId;
    let cutoff = unix(SystemTime::now()) - limits.forget_after.as_secs_f64();
    let mut sessions = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT id, feed, last_seq, generation, first_seen, last_seen, ended_at FROM sessions
             WHERE ended_at IS NULL OR ended_at >= ?1
             ORDER BY last_seen DESC LIMIT ?2",
        )?;
        let mut rows = stmt.query(rusqlite::params![cutoff, limits.max_sessions as i64])?;
        while let Some(row) = rows.next()? {
            let raw: String = row.get(0)?;
            // A row this build cannot read is left on disk, not fatal.
            let Ok(id) = SessionId::parse(&raw) else {
                continue;
            };
            index.insert(raw, sessions.len());
            sessions.push(session_of(row, id)?);
        }
    }
    fill(conn, &mut sessions, &index, None)?;
    let forgotten = forgotten(conn, &index, limits)?;
    Ok(Restored {
        sessions,
        next_run_id,
        forgotten,
        outbox: outbox(conn)?,
        dead_letters: dead_letters(conn)?,
    })
}

/// The newest `remember_forgotten` sessions not read back (ended over
/// `forget_after` ago, or past `max_sessions`), oldest first.
fn forgotten(
    conn: &Connection,
    loaded: &HashMap<String, usize>,
    limits: RestoreLimits,
) -> Result<Vec<(SessionId, Option<u64>)>, rusqlite::Error> {
    let mut stmt =
        conn.prepare("SELECT id, last_seq FROM sessions ORDER BY last_seen DESC, id LIMIT ?1")?;
    let most = loaded.len().saturating_add(limits.remember_forgotten);
    let mut rows = stmt.query([most as i64])?;
    let mut forgotten = Vec::new();
    while let Some(row) = rows.next()? {
        let raw = row.get_ref(0)?.as_str()?;
        if loaded.contains_key(raw) {
            continue;
        }
        let Ok(id) = SessionId::parse(raw) else {
            continue;
        };
        forgotten.push((id, row.get::<_, Option<i64>>(1)?.map(|s| s as u64)));
    }
    forgotten.truncate(limits.remember_forgotten);
    forgotten.reverse();
    Ok(forgotten)
}

/// One session, whatever its age (for the API's look into the past).
pub fn one(conn: &Connection, id: &SessionId) -> Result<Option<StoredSession>, rusqlite::Error> {
    let mut stmt = conn.prepare(
        "SELECT id, feed, last_seq, generation, first_seen, last_seen, ended_at FROM sessions
         WHERE id = ?1",
    )?;
    let mut rows = stmt.query([id.as_str()])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let mut sessions = vec![session_of(row, id.clone())?];
    let index = HashMap::from([(id.as_str().to_string(), 0)]);
    fill(conn, &mut sessions, &index, Some(id.as_str()))?;
    Ok(sessions.pop())
}

/// The session's lines before `generation`, the newest `limit` of them,
/// oldest first: a walk back along the primary key.
pub fn lines_before(
    conn: &Connection,
    id: &SessionId,
    generation: u64,
    limit: usize,
) -> Result<Vec<StoredTranscript>, rusqlite::Error> {
    let mut lines = lines_where(
        conn,
        "generation < ?2 ORDER BY generation DESC",
        id,
        generation,
        limit,
    )?;
    lines.reverse();
    Ok(lines)
}

/// The session's lines from `generation` on, the oldest `limit` of them:
/// a walk forward along the primary key.
pub fn lines_from(
    conn: &Connection,
    id: &SessionId,
    generation: u64,
    limit: usize,
) -> Result<Vec<StoredTranscript>, rusqlite::Error> {
    lines_where(
        conn,
        "generation >= ?2 ORDER BY generation",
        id,
        generation,
        limit,
    )
}

/// The session's latest result of `op`, by the primary key.
pub fn result_of(
    conn: &Connection,
    id: &SessionId,
    op: Operation,
) -> Result<Option<StoredResult>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT run_id, covered_generation, body, model, processing_ms, finished_at, truncated
         FROM results WHERE session = ?1 AND op = ?2",
    )?;
    let mut rows = stmt.query(rusqlite::params![id.as_str(), op.as_str()])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some(result_at(row, 0)?))
}

/// A result from the row's columns `run_id, covered_generation, body,
/// model, processing_ms, finished_at, truncated`, the first at `first`.
fn result_at(row: &rusqlite::Row<'_>, first: usize) -> Result<StoredResult, rusqlite::Error> {
    Ok(StoredResult {
        run_id: row.get::<_, i64>(first)? as RunId,
        covered_generation: row.get::<_, i64>(first + 1)? as u64,
        body: row.get(first + 2)?,
        model: row.get(first + 3)?,
        processing: millis(row.get(first + 4)?),
        finished_at: from_unix(row.get(first + 5)?),
        truncated: row.get(first + 6)?,
    })
}

/// At most `limit` of the session's lines, chosen and ordered by `walk`
/// (a condition on the generation `?2`, then an order).
fn lines_where(
    conn: &Connection,
    walk: &str,
    id: &SessionId,
    generation: u64,
    limit: usize,
) -> Result<Vec<StoredTranscript>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT generation, seq, speaker, text, start, received_at FROM transcripts
         WHERE session = ?1 AND {walk} LIMIT ?3"
    ))?;
    stmt.query_map(
        rusqlite::params![
            id.as_str(),
            i64::try_from(generation).unwrap_or(i64::MAX),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        |row| transcript_at(row, 0),
    )?
    .collect()
}

/// A transcript from the row's columns `generation, seq, speaker, text,
/// start, received_at`, the first of them at `first`.
fn transcript_at(
    row: &rusqlite::Row<'_>,
    first: usize,
) -> Result<StoredTranscript, rusqlite::Error> {
    Ok(StoredTranscript {
        generation: row.get::<_, i64>(first)? as u64,
        seq: row.get::<_, Option<i64>>(first + 1)?.map(|s| s as u64),
        speaker: row.get(first + 2)?,
        text: row.get(first + 3)?,
        start: row.get(first + 4)?,
        received_at: from_unix(row.get(first + 5)?),
    })
}

/// A session row (`id, feed, last_seq, generation, first_seen, last_seen,
/// ended_at`), with nothing else read yet.
fn session_of(row: &rusqlite::Row<'_>, id: SessionId) -> Result<StoredSession, rusqlite::Error> {
    Ok(StoredSession {
        id,
        feed: row.get::<_, Option<i64>>(1)?.map(|f| f as usize),
        last_seq: row.get::<_, Option<i64>>(2)?.map(|s| s as u64),
        generation: row.get::<_, i64>(3)? as u64,
        first_seen: from_unix(row.get(4)?),
        last_seen: from_unix(row.get(5)?),
        ended_at: row.get::<_, Option<f64>>(6)?.map(from_unix),
        transcripts: Vec::new(),
        results: Default::default(),
        history: Default::default(),
        counts: Default::default(),
    })
}

/// One past session, for a list of them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct PastSession {
    pub session_id: String,
    pub first_seen: f64,
    pub last_seen: f64,
    pub ended_at: Option<f64>,
    pub transcripts: u64,
    pub summary_covered_generation: Option<u64>,
    pub mind_map_covered_generation: Option<u64>,
    /// What every run of the session cost, as the runs were priced.
    #[serde(with = "crate::spend::units")]
    #[schema(value_type = f64)]
    pub cost: crate::spend::Cost,
}

/// A page of past sessions, and where the next page starts.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub sessions: Vec<PastSession>,
    /// `(last_seen, id)` of the last row, when there may be more.
    pub next: Option<(f64, String)>,
}

/// Past sessions by their last word, newest first.
pub fn history(
    conn: &Connection,
    since: Option<f64>,
    before: Option<(f64, String)>,
    limit: usize,
) -> Result<HistoryPage, rusqlite::Error> {
    let (before_at, before_id) = match before {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.first_seen, s.last_seen, s.ended_at, s.generation,
                (SELECT covered_generation FROM results WHERE session = s.id AND op = 'summary'),
                (SELECT covered_generation FROM results WHERE session = s.id AND op = 'mind_map'),
                (SELECT coalesce(sum(cost_nanos), 0) FROM runs WHERE session = s.id)
         FROM sessions s
         WHERE (?1 IS NULL OR s.last_seen >= ?1)
           AND (?2 IS NULL OR s.last_seen < ?2 OR (s.last_seen = ?2 AND s.id < ?3))
         ORDER BY s.last_seen DESC, s.id DESC
         LIMIT ?4",
    )?;
    let sessions: Vec<PastSession> = stmt
        .query_map(
            rusqlite::params![since, before_at, before_id, limit as i64],
            |row| {
                Ok(PastSession {
                    session_id: row.get(0)?,
                    first_seen: row.get(1)?,
                    last_seen: row.get(2)?,
                    ended_at: row.get(3)?,
                    transcripts: row.get::<_, i64>(4)? as u64,
                    summary_covered_generation: row.get::<_, Option<i64>>(5)?.map(|g| g as u64),
                    mind_map_covered_generation: row.get::<_, Option<i64>>(6)?.map(|g| g as u64),
                    cost: crate::spend::Cost(row.get::<_, i64>(7)?.max(0) as u64),
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    let next = (sessions.len() == limit && limit > 0)
        .then(|| sessions.last().map(|s| (s.last_seen, s.session_id.clone())))
        .flatten();
    Ok(HistoryPage { sessions, next })
}

/// Reads the transcripts, results, counts, history and skips of
/// `sessions` (found by `index`); `only` narrows every query to one id.
fn fill(
    conn: &Connection,
    sessions: &mut [StoredSession],
    index: &HashMap<String, usize>,
    only: Option<&str>,
) -> Result<(), rusqlite::Error> {
    if sessions.is_empty() {
        return Ok(());
    }
    {
        // The newest lines of each session, by its generation: a join on
        // the primary keys, no sort.
        let mut stmt = conn.prepare(
            "SELECT t.session, t.generation, t.seq, t.speaker, t.text, t.start, t.received_at
             FROM transcripts t JOIN sessions s ON s.id = t.session
             WHERE t.generation > s.generation - ?1 AND (?2 IS NULL OR t.session = ?2)
             ORDER BY t.session, t.generation",
        )?;
        let mut rows = stmt.query(rusqlite::params![MAX_KEPT_TRANSCRIPTS as i64, only])?;
        while let Some(row) = rows.next()? {
            let Some(&at) = index.get(row.get_ref(0)?.as_str()?) else {
                continue;
            };
            sessions[at].transcripts.push(transcript_at(row, 1)?);
        }
    }
    {
        let mut stmt = conn.prepare(
            "SELECT session, op, run_id, covered_generation, body, model, processing_ms, finished_at,
                    truncated
             FROM results WHERE ?1 IS NULL OR session = ?1",
        )?;
        let mut rows = stmt.query([only])?;
        while let Some(row) = rows.next()? {
            let Some((at, op)) = locate(row, index)? else {
                continue;
            };
            *sessions[at].results.entry(op) = Some(result_at(row, 2)?);
        }
    }
    {
        // Every run once, in order: the counts over all of them and the
        // newest HISTORY_LEN as history, in one pass along the index.
        let mut stmt = conn.prepare(
            "SELECT session, op, run_id, admitted_at, follow_up, outcome, duration_ms, waited_ms,
                    error, covered_generation, prompt_tokens, completion_tokens,
                    cached_tokens, cost_nanos
             FROM runs WHERE ?1 IS NULL OR session = ?1 ORDER BY session, op, run_id",
        )?;
        let mut rows = stmt.query([only])?;
        while let Some(row) = rows.next()? {
            let Some((at, op)) = locate(row, index)? else {
                continue;
            };
            let run = StoredRun {
                run_id: row.get::<_, i64>(2)? as RunId,
                admitted_at: from_unix(row.get(3)?),
                follow_up: row.get(4)?,
                outcome: row.get_ref(5)?.as_str_or_null()?.and_then(outcome),
                duration: millis(row.get(6)?),
                waited: millis(row.get(7)?),
                error: row.get(8)?,
                covered_generation: row.get::<_, Option<i64>>(9)?.map(|g| g as u64),
                usage: Usage {
                    prompt_tokens: row.get::<_, Option<i64>>(10)?.unwrap_or(0) as u64,
                    completion_tokens: row.get::<_, Option<i64>>(11)?.unwrap_or(0) as u64,
                    cached_tokens: row.get::<_, i64>(12)?.max(0) as u64,
                    cost: crate::spend::Cost(row.get::<_, i64>(13)?.max(0) as u64),
                },
            };
            let session = &mut sessions[at];
            let stored = session.counts.entry(op);
            let counts = &mut stored.counts;
            counts.runs += 1;
            match run.outcome {
                Some(Outcome::Ok) => counts.ok += 1,
                Some(Outcome::Failed) => counts.failed += 1,
                Some(Outcome::TimedOut) => counts.timed_out += 1,
                Some(Outcome::Cancelled) | None => counts.cancelled += 1,
            }
            counts.follow_ups += u64::from(run.follow_up);
            counts.waited += run.waited;
            counts.prompt_tokens += run.usage.prompt_tokens;
            counts.completion_tokens += run.usage.completion_tokens;
            counts.cached_tokens += run.usage.cached_tokens;
            counts.cost = counts.cost.plus(run.usage.cost);
            stored.total_duration += run.duration;
            let history = session.history.entry(op);
            if history.len() == HISTORY_LEN {
                history.remove(0);
            }
            history.push(run);
        }
    }
    {
        let mut stmt = conn
            .prepare("SELECT session, op, skipped FROM skips WHERE ?1 IS NULL OR session = ?1")?;
        let mut rows = stmt.query([only])?;
        while let Some(row) = rows.next()? {
            let Some((at, op)) = locate(row, index)? else {
                continue;
            };
            sessions[at].counts.entry(op).counts.skipped = row.get::<_, i64>(2)? as u64;
        }
    }
    Ok(())
}

/// The webhook deliveries still waiting; rows this build cannot read stay
/// on disk.
fn outbox(conn: &Connection) -> Result<Vec<super::OutboxRow>, rusqlite::Error> {
    let mut stmt = conn.prepare(
        "SELECT endpoint, session, op, event, revision, id, body, created_at FROM outbox
         ORDER BY created_at",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let Ok(session) = SessionId::parse(row.get_ref(1)?.as_str()?) else {
            continue;
        };
        let op = match row.get_ref(2)?.as_str()? {
            "" => None,
            name => match op_named(name) {
                Some(op) => Some(op),
                None => continue,
            },
        };
        let Some(event) = crate::webhooks::EventKind::parse(row.get_ref(3)?.as_str()?) else {
            continue;
        };
        out.push(super::OutboxRow {
            endpoint: row.get(0)?,
            session,
            op,
            event,
            revision: row.get::<_, i64>(4)?.max(0) as u64,
            id: row.get(5)?,
            body: row.get::<_, String>(6)?.into(),
            created_at: from_unix(row.get(7)?),
        });
    }
    Ok(out)
}

/// The newest dead letters, oldest first.
fn dead_letters(
    conn: &Connection,
) -> Result<Vec<(String, crate::webhooks::DeadLetter)>, rusqlite::Error> {
    let mut stmt = conn.prepare(
        "SELECT endpoint, id, event, session, op, revision, attempts, error, created_at, died_at
         FROM dead_letters ORDER BY died_at DESC LIMIT ?1",
    )?;
    let mut rows = stmt.query([crate::webhooks::outbox::DEAD_KEPT as i64])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let Some(event) = crate::webhooks::EventKind::parse(row.get_ref(2)?.as_str()?) else {
            continue;
        };
        let op: String = row.get(4)?;
        out.push((
            row.get(0)?,
            crate::webhooks::DeadLetter {
                endpoint: 0,
                id: row.get(1)?,
                event,
                session_id: row.get(3)?,
                operation: (!op.is_empty()).then_some(op),
                revision: row.get::<_, i64>(5)?.max(0) as u64,
                attempts: row.get::<_, i64>(6)?.max(0) as u32,
                error: row.get(7)?,
                created_at: row.get(8)?,
                died_at: row.get(9)?,
            },
        ));
    }
    out.reverse();
    Ok(out)
}
