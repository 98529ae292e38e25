//! The session store: what each session has said and what was made of it.
//!
//! Per session: the final transcripts with their generation numbers, the
//! live partial line, the last `seq` seen (to drop replays), and the latest
//! result of each operation with the generation it covers.
//!
//! Transcripts are kept while a tracked operation has not covered them yet
//! (up to [`SessionLimits::max_held_transcripts`]). So after an LLM outage
//! the runs catch up on the whole backlog, oldest first, one prompt window
//! at a time ([`SessionStore::run_input`]). Only a backlog past the hard
//! cap loses lines, and those are counted as never summarised. Once
//! covered, a line is released, except the newest
//! [`SessionLimits::kept_transcripts`] (what the views show) and, when runs
//! re-read the whole transcript, the newest prompt window's worth. With a
//! database, a line leaves memory once the file holds it
//! ([`SessionStore::written_through`]), covered or not (an uncovered one
//! after [`SessionLimits::spill_after`]): views read it back from the
//! file, and so do the runs that have not covered it yet ([`InFile`]).
//! A result's body leaves memory the same way once the file holds it
//! (`results.rs`).
//!
//! The store is bounded: it holds at most [`SessionLimits::max_sessions`]
//! sessions (a new one beyond is refused), and a forgotten session's id and
//! last `seq` are remembered (`forgotten.rs`) so a replay cannot revive it.
//! A session that speaks after it ended is live again.
//!
//! Sessions are spread over [`SHARDS`] maps, each behind its own short
//! lock, so a snapshot that walks every session holds up an ingest for at
//! most one shard's worth of copying, not the whole store's.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the records, the shards, taking transcripts in, results |
//! | `input.rs` | what a run reads, and which run waited longest |
//! | `lines.rs` | the held transcripts, packed |
//! | `views.rs` | rows and details for views |
//! | `lifetime.rs` | restoring, ending and forgetting sessions |
//! | `results.rs` | the latest results, their bodies until the file holds them |

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

mod input;
mod lifetime;
mod lines;
mod results;
mod views;

pub use input::{InFile, READ_BACK_LINES, ReadBack, RunInput};
pub use results::Latest;
pub use views::{SessionContent, SessionFacts};

use self::lines::{HeldLine, Lines};
use self::results::HeldResult;
use super::forgotten::Forgotten;
use crate::events::RunId;
use crate::model::{Operation, SessionId, Transcript};
use crate::ops::OpMap;

/// Longest rejected answer kept per session and operation.
pub const MAX_REJECTED_BYTES: usize = 32 * 1024;

/// Final transcripts read back per session from the database at start.
pub const MAX_KEPT_TRANSCRIPTS: usize = 400;

/// Covered final transcripts kept per session in memory for views, unless
/// told otherwise (`--keep-transcripts`): the details pane shows 40. With
/// a database they stay only until the file holds them.
pub const KEPT_TRANSCRIPTS: usize = 40;

/// Final transcripts held per session at most, covered or not, unless
/// told otherwise (`--max-held-transcripts`).
pub const MAX_HELD_TRANSCRIPTS: usize = 4_000;

/// How long a line the database holds waits for a run in memory, unless
/// told otherwise ([`SessionLimits::spill_after`]).
pub const SPILL_AFTER: Duration = Duration::from_millis(250);

/// A final transcript as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredTranscript {
    pub generation: u64,
    pub speaker: Option<String>,
    pub text: String,
    pub start: Option<f64>,
    pub received_at: SystemTime,
    /// Its place in the order of arrival across all sessions.
    pub arrival: u64,
}

pub use crate::ops::output::ResultBody;

/// The latest result of one operation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpResult {
    pub body: ResultBody,
    pub covered_generation: u64,
    pub run_id: RunId,
    pub model: String,
    pub processing_time: Duration,
    pub finished_at: SystemTime,
    /// The server cut the answer at the token limit (`--max-tokens`, or
    /// half a small context window): the text is kept, but it is not the
    /// whole answer.
    pub truncated: bool,
}

impl OpResult {
    /// A result as the database keeps it; `None` for a body this build
    /// cannot read (it is left out, not fatal).
    pub fn from_stored(op: Operation, stored: &crate::db::StoredResult) -> Option<Self> {
        let body = ResultBody::from_stored(crate::ops::registry().output(op), &stored.body)?;
        Some(Self {
            body,
            covered_generation: stored.covered_generation,
            run_id: stored.run_id,
            model: stored.model.clone(),
            processing_time: stored.processing,
            finished_at: stored.finished_at,
            truncated: stored.truncated,
        })
    }
}

/// How many sessions the store holds and how long they live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionLimits {
    /// Sessions held at once; a new session beyond is refused.
    pub max_sessions: usize,
    /// A live session silent this long is treated as ended.
    pub idle_after: Duration,
    /// An ended session is forgotten this long after it ended.
    pub forget_after: Duration,
    /// Forgotten ids remembered with their last `seq`.
    pub remember_forgotten: usize,
    /// Final transcripts one session holds at most, covered or not.
    pub max_held_transcripts: usize,
    /// Covered final transcripts one session keeps for views.
    pub kept_transcripts: usize,
    /// A line the database holds that no run has covered yet leaves memory
    /// once it waited this long: a run soon after reads it from memory,
    /// a run late (a slow model, a queue for permits) from the file.
    pub spill_after: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            idle_after: Duration::from_secs(10 * 60),
            forget_after: Duration::from_secs(30 * 60),
            remember_forgotten: super::forgotten::DEFAULT_REMEMBERED,
            max_held_transcripts: MAX_HELD_TRANSCRIPTS,
            kept_transcripts: KEPT_TRANSCRIPTS,
            spill_after: SPILL_AFTER,
        }
    }
}

#[derive(Debug)]
struct SessionRecord {
    feed: Option<usize>,
    generation: u64,
    transcripts: Lines,
    partial: Option<String>,
    last_seq: Option<u64>,
    /// The newest of its lines the database has committed (0: none, or
    /// no database). A line at or below it leaves memory (when runs read
    /// incrementally): views and runs read it back from the file.
    written: u64,
    /// The oldest line that left memory for the file before every tracked
    /// operation covered it (0: none): the lines from it up to the oldest
    /// held are read back from the file by the runs that need them.
    spilled_from: u64,
    /// The arrival number of the line at `spilled_from` when it left (of
    /// an older line once some operation covered that one): the runs'
    /// place in the queue for a permit.
    spilled_arrival: u64,
    last_transcript_at: Option<Instant>,
    /// The last transcript of any kind, for `idle_after`.
    last_heard_at: Instant,
    ended: bool,
    ended_at: Option<Instant>,
    /// Empty (no allocation) until the first result is kept.
    results: OpMap<Option<HeldResult>>,
    /// Empty (no allocation) until an answer is rejected.
    rejected: OpMap<Option<String>>,
    /// Transcripts dropped before every tracked operation covered them.
    lost: u64,
    /// The session's kind, as its feed first gave it.
    kind: Option<Box<str>>,
    /// The budget that stopped its last run, until one is admitted again.
    over_budget: Option<crate::spend::Budget>,
    /// An operator lifted the session's own budget: it no longer applies.
    budget_lifted: bool,
}

impl SessionRecord {
    fn new(feed: Option<usize>, last_seq: Option<u64>) -> Self {
        Self {
            feed,
            generation: 0,
            transcripts: Lines::default(),
            partial: None,
            last_seq,
            written: 0,
            spilled_from: 0,
            spilled_arrival: 0,
            last_transcript_at: None,
            last_heard_at: Instant::now(),
            ended: false,
            ended_at: None,
            results: OpMap::empty(),
            rejected: OpMap::empty(),
            lost: 0,
            kind: None,
            over_budget: None,
            budget_lifted: false,
        }
    }

    /// The generation `op`'s latest result covers (0 without one).
    fn covered(&self, op: Operation) -> u64 {
        self.results
            .get(op)
            .and_then(Option::as_ref)
            .map_or(0, HeldResult::covered_generation)
    }

    /// The generation of the oldest line memory holds (the next one's
    /// when it holds none).
    fn first_held(&self) -> u64 {
        self.transcripts
            .oldest()
            .map_or(self.generation + 1, |t| t.generation)
    }

    /// Lines that left memory for the file before every tracked operation
    /// covered them.
    fn spilled(&self) -> usize {
        match self.spilled_from {
            0 => 0,
            from => usize::try_from(self.first_held().saturating_sub(from)).unwrap_or(usize::MAX),
        }
    }
}

/// What `SessionStore::append` did with a transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// A final transcript, now the session's newest generation.
    Final { generation: u64 },
    /// A partial transcript: the live line changed.
    Partial { generation: u64 },
    /// Its `seq` was not above the last one seen: a replay, ignored.
    Duplicate,
    /// A new session while the store is full: refused, nothing kept.
    Refused,
}

/// How many maps the sessions are spread over.
pub const SHARDS: usize = 64;

/// One share of the sessions, by the hash of their id.
struct Shard {
    /// Boxed: a map keeps room for more records than it holds, and room
    /// for a pointer is 8 bytes where a record's is over 200.
    held: HashMap<SessionId, Box<SessionRecord>>,
    forgotten: Forgotten,
    /// What an operator added to a held session's own budget: kept apart,
    /// since few sessions are ever raised.
    raised: HashMap<SessionId, crate::llm::Usage>,
}

pub struct SessionStore {
    limits: SessionLimits,
    shards: Box<[Mutex<Shard>]>,
    hasher: std::hash::RandomState,
    /// Sessions held in all shards.
    held: AtomicUsize,
    /// The next transcript's arrival number.
    arrivals: AtomicU64,
    /// Sessions forgotten so far: while it has not moved, a session held
    /// before is held still.
    forgets: AtomicU64,
    /// Operations whose coverage keeps transcripts (the automatic ones).
    tracked: Vec<Operation>,
    /// Runs re-read the newest transcript up to this many characters
    /// (not incremental): covered lines within it are kept.
    whole_window: Option<usize>,
}

impl Default for SessionStore {
    fn default() -> Self {
        Self::new(SessionLimits::default())
    }
}

impl SessionStore {
    pub fn new(limits: SessionLimits) -> Self {
        let remembered_per_shard = limits.remember_forgotten.div_ceil(SHARDS);
        Self {
            limits,
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        held: HashMap::new(),
                        forgotten: Forgotten::new(remembered_per_shard),
                        raised: HashMap::new(),
                    })
                })
                .collect(),
            hasher: std::hash::RandomState::new(),
            held: AtomicUsize::new(0),
            arrivals: AtomicU64::new(0),
            forgets: AtomicU64::new(0),
            tracked: crate::ops::registry().ops().collect(),
            whole_window: None,
        }
    }

    /// Keeps transcripts until these operations covered them (all, unless
    /// told otherwise).
    pub fn tracking(mut self, ops: &[Operation]) -> Self {
        self.tracked = ops.to_vec();
        self
    }

    /// Runs re-read the newest `window` characters of transcript each time
    /// (not incremental): covered lines they may still read are kept.
    pub fn rereading(mut self, window: usize) -> Self {
        self.whole_window = Some(window);
        self
    }

    /// The shard of `session`, locked. Takes the lock even if a panic
    /// poisoned it: every critical section leaves the maps consistent.
    fn lock(&self, session: &SessionId) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(session) as usize % SHARDS;
        lock(&self.shards[index])
    }

    /// Every shard, locked one at a time as the iteration reaches it.
    fn each_shard(&self) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        self.shards.iter().map(lock)
    }

    /// Takes one place among the held sessions, unless all are taken.
    fn reserve(&self) -> bool {
        let max = self.limits.max_sessions;
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Records a transcript, dropping replays by `seq` (also of sessions
    /// forgotten lately) and refusing a new session when the store is full.
    /// A session that had ended is live again.
    pub fn append(&self, transcript: Transcript, feed: Option<usize>) -> Appended {
        let mut guard = self.lock(&transcript.session_id);
        let Shard {
            held, forgotten, ..
        } = &mut *guard;
        let record = match held.get_mut(&transcript.session_id) {
            Some(record) => record,
            None => {
                let remembered = forgotten.last_seq(&transcript.session_id).flatten();
                if let (Some(seq), Some(last)) = (transcript.seq, remembered)
                    && seq <= last
                {
                    return Appended::Duplicate;
                }
                if !self.reserve() {
                    return Appended::Refused;
                }
                forgotten.revive(&transcript.session_id);
                held.entry(transcript.session_id.clone())
                    .or_insert_with(|| Box::new(SessionRecord::new(feed, remembered)))
            }
        };
        if let Some(seq) = transcript.seq {
            if record.last_seq.is_some_and(|last| seq <= last) {
                return Appended::Duplicate;
            }
            record.last_seq = Some(seq);
        }
        if feed.is_some() {
            record.feed = feed;
        }
        if record.kind.is_none()
            && let Some(kind) = &transcript.kind
        {
            record.kind = Some(kind.as_str().into());
        }
        record.last_heard_at = Instant::now();
        // Speaking again after an end: live again, and a later end asks
        // for final runs again.
        record.ended = false;
        record.ended_at = None;
        if !transcript.is_final {
            record.partial = Some(transcript.text);
            return Appended::Partial {
                generation: record.generation,
            };
        }
        record.generation += 1;
        record.partial = None;
        record.last_transcript_at = Some(Instant::now());
        record.transcripts.push(HeldLine::new(
            record.generation,
            self.arrivals.fetch_add(1, Ordering::Relaxed),
            transcript.speaker.as_deref(),
            transcript.text,
            transcript.start,
            SystemTime::now(),
        ));
        self.trim(record);
        Appended::Final {
            generation: record.generation,
        }
    }

    /// Lifts the session's own budget; false for a session not held.
    pub fn lift_budget(&self, session: &SessionId) -> bool {
        let mut shard = self.lock(session);
        let Some(record) = shard.held.get_mut(session) else {
            return false;
        };
        record.budget_lifted = true;
        if record.over_budget.is_some_and(|b| b.per_session()) {
            record.over_budget = None;
        }
        true
    }

    /// Adds `by` to the session's own budget; what it was raised by in
    /// all, or `None` for a session not held. A session stopped by its own
    /// budget is no longer marked.
    pub fn raise_budget(
        &self,
        session: &SessionId,
        by: crate::llm::Usage,
    ) -> Option<crate::llm::Usage> {
        let mut guard = self.lock(session);
        let Shard { held, raised, .. } = &mut *guard;
        let record = held.get_mut(session)?;
        if record.over_budget.is_some_and(|b| b.per_session()) {
            record.over_budget = None;
        }
        let total = raised.entry(session.clone()).or_default();
        *total = total.plus(by);
        Some(*total)
    }

    /// What an operator added to the session's own budget.
    pub fn budget_raised(&self, session: &SessionId) -> crate::llm::Usage {
        self.lock(session)
            .raised
            .get(session)
            .copied()
            .unwrap_or_default()
    }

    /// Whether an operator lifted the session's own budget.
    pub fn budget_lifted(&self, session: &SessionId) -> bool {
        self.lock(session)
            .held
            .get(session)
            .is_some_and(|r| r.budget_lifted)
    }

    /// The budget that stopped the session's last run, if one did.
    pub fn over_budget(&self, session: &SessionId) -> Option<crate::spend::Budget> {
        self.lock(session).held.get(session)?.over_budget
    }

    /// Marks the session stopped by `budget`, or (`None`) running again;
    /// answers the mark it had.
    pub fn set_over_budget(
        &self,
        session: &SessionId,
        budget: Option<crate::spend::Budget>,
    ) -> Option<crate::spend::Budget> {
        let mut shard = self.lock(session);
        let record = shard.held.get_mut(session)?;
        std::mem::replace(&mut record.over_budget, budget)
    }

    /// Whether the store holds the session.
    pub fn contains(&self, session: &SessionId) -> bool {
        self.lock(session).held.contains_key(session)
    }

    /// How many sessions were forgotten so far. A session held when this
    /// was read is held still while the count has not moved: a cheaper
    /// question than [`contains`](Self::contains), which takes a shard's
    /// lock.
    pub fn forgets(&self) -> u64 {
        self.forgets.load(Ordering::Acquire)
    }

    /// The feed that last spoke for the session.
    pub fn feed_of(&self, session: &SessionId) -> Option<usize> {
        self.lock(session).held.get(session).and_then(|r| r.feed)
    }

    /// The last `seq` of each held session `feed` last spoke for, ended
    /// ones included (else a replaying feed would send them again and
    /// again): what a reconnecting feed is asked to resume after.
    pub fn resume_points(&self, feed: usize) -> std::collections::BTreeMap<String, u64> {
        let mut points = std::collections::BTreeMap::new();
        for shard in self.each_shard() {
            points.extend(
                shard
                    .held
                    .iter()
                    .filter(|(_, r)| r.feed == Some(feed))
                    .filter_map(|(id, r)| Some((id.as_str().to_string(), r.last_seq?))),
            );
        }
        points
    }

    /// The session's newest generation (0 when unknown).
    pub fn generation(&self, session: &SessionId) -> u64 {
        self.lock(session)
            .held
            .get(session)
            .map_or(0, |r| r.generation)
    }

    /// The database committed the session's lines up to `generation`:
    /// covered ones among them leave memory now, kept ones included (a
    /// view reads them back from the file).
    pub fn written_through(&self, session: &SessionId, generation: u64) {
        let mut shard = self.lock(session);
        if let Some(record) = shard.held.get_mut(session) {
            // Never past what this record numbered (a session forgotten
            // and speaking again numbers its lines from 1 again).
            record.written = record.written.max(generation.min(record.generation));
            self.trim(record);
        }
    }

    /// Final transcripts the session holds in memory, covered or not.
    pub fn lines_held(&self, session: &SessionId) -> Option<usize> {
        Some(self.lock(session).held.get(session)?.transcripts.len())
    }

    /// Drops the oldest transcripts memory need not hold: covered by every
    /// tracked operation and past the newest
    /// [`SessionLimits::kept_transcripts`]; or in the database (an
    /// uncovered one once it waited [`SessionLimits::spill_after`]; the
    /// runs read it back from there, see [`SessionStore::run_input`]);
    /// and, when runs re-read the whole transcript, not within the newest
    /// window's worth (nor does a line leave uncovered then). Past the
    /// hard cap, held and spilled lines together, the oldest go whatever
    /// they are (counted as lost when not covered). Result bodies the file
    /// holds leave once they waited as long.
    fn trim(&self, record: &mut SessionRecord) {
        let covered = self
            .tracked
            .iter()
            .map(|op| record.covered(*op))
            .min()
            .unwrap_or(u64::MAX);
        let kept = self.limits.kept_transcripts;
        let cap = self.limits.max_held_transcripts.max(kept);
        if self.whole_window.is_some() {
            record.transcripts.count_chars();
        }
        // Spilled lines every tracked operation has covered since are no
        // longer waited for.
        if record.spilled_from != 0 && record.spilled_from <= covered {
            record.spilled_from = covered.saturating_add(1);
        }
        if record.spilled_from >= record.first_held() {
            record.spilled_from = 0;
        }
        // The clock is read once, and only when a line not covered yet or
        // a result body the file holds may leave.
        let mut clock = None;
        let mut now = || *clock.get_or_insert_with(SystemTime::now);
        for kept in record.results.values_mut().flatten() {
            kept.settle(&mut now, self.limits.spill_after);
        }
        let mut waited = |line: &HeldLine| {
            let now_us = now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
            let after = u64::try_from(self.limits.spill_after.as_micros()).unwrap_or(u64::MAX);
            line.received_us().saturating_add(after) <= now_us
        };
        while let Some(oldest) = record.transcripts.oldest() {
            let uncovered = oldest.generation > covered;
            let in_file = oldest.generation <= record.written;
            if record.transcripts.len() + record.spilled() > cap {
                if record.spilled_from != 0 {
                    // The oldest spilled line leaves the runs' reach.
                    record.lost += 1;
                    record.spilled_from += 1;
                    if record.spilled_from >= record.first_held() {
                        record.spilled_from = 0;
                    }
                    continue;
                }
                record.lost += u64::from(uncovered);
            } else if uncovered {
                if !in_file || self.whole_window.is_some() || !waited(oldest) {
                    break;
                }
                if record.spilled_from == 0 {
                    record.spilled_from = oldest.generation;
                    record.spilled_arrival = oldest.arrival;
                }
            } else if record.transcripts.len() <= kept && !in_file {
                break;
            } else if let Some(window) = self.whole_window
                && record.transcripts.chars() <= window
            {
                // A full re-read may still reach it.
                break;
            }
            record.transcripts.drop_oldest();
        }
    }

    /// Stores a result unless a result covering a newer generation is
    /// there, calling `stamp` on it under the same lock when it is kept;
    /// answers the kept result's run id.
    /// Several instances use it to number results in the order they were
    /// kept here, whichever instance made them: the database keeps the one
    /// with the highest number, so it keeps what memory keeps.
    pub fn put_result(
        &self,
        session: &SessionId,
        op: Operation,
        mut result: OpResult,
        stamp: impl FnOnce(&mut OpResult),
    ) -> Option<RunId> {
        let mut shard = self.lock(session);
        let record = shard.held.get_mut(session)?;
        let slot = record.results.entry(op);
        if slot
            .as_ref()
            .is_some_and(|old| old.covered_generation() > result.covered_generation)
        {
            return None;
        }
        stamp(&mut result);
        let run_id = result.run_id;
        *slot = Some(HeldResult::new(result, false));
        self.trim(record);
        Some(run_id)
    }

    /// Keeps an answer that could not be read (cut to [`MAX_REJECTED_BYTES`]).
    pub fn put_rejected(&self, session: &SessionId, op: Operation, raw: String) {
        // A model's text: no control characters reach a view from here.
        let mut raw = crate::text::strip_controls_keep_lines(&raw).into_owned();
        crate::text::cut_to(&mut raw, MAX_REJECTED_BYTES);
        if let Some(record) = self.lock(session).held.get_mut(session) {
            *record.rejected.entry(op) = Some(raw);
        }
    }

    /// Sessions held (a capacity hint for snapshots).
    pub(crate) fn len(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
