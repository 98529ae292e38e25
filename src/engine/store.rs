//! The session store: what each session has said and what was made of it.
//!
//! Per session: the final transcripts with their generation numbers, the
//! live partial line, the last `seq` seen (to drop replays), and the latest
//! result of each operation with the generation it covers.
//!
//! Transcripts are kept while a tracked operation has not covered them yet
//! (up to [`SessionLimits::max_held_transcripts`]), and the newest [`MAX_KEPT_TRANSCRIPTS`]
//! besides, for views. So after an LLM outage the runs catch up on the
//! whole backlog, oldest first, one prompt window at a time
//! ([`SessionStore::run_input`]). Only a backlog past the hard cap loses
//! lines, and those are counted as never summarised.
//!
//! The store is bounded: it holds at most [`SessionLimits::max_sessions`]
//! sessions (a new one beyond is refused), and a forgotten session's id and
//! last `seq` are remembered (`forgotten.rs`) so a replay cannot revive it.
//! A session that speaks after it ended is live again.
//!
//! Sessions are spread over [`SHARDS`] maps, each behind its own short
//! lock, so a snapshot that walks every session holds up an ingest for at
//! most one shard's worth of copying, not the whole store's.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::forgotten::Forgotten;
use crate::events::RunId;
use crate::llm::Utterance;
use crate::model::{MindMap, OPERATION_COUNT, Operation, SessionId, Transcript};

/// Longest rejected answer kept per session and operation.
pub const MAX_REJECTED_BYTES: usize = 32 * 1024;

/// Final transcripts kept per session for views once every tracked
/// operation has covered them.
pub const MAX_KEPT_TRANSCRIPTS: usize = 400;

/// Final transcripts held per session at most, covered or not, unless
/// told otherwise (`--max-held-transcripts`).
pub const MAX_HELD_TRANSCRIPTS: usize = 4_000;

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

/// What a finished run produced.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ResultBody {
    Summary(String),
    MindMap(MindMap),
}

/// The latest result of one operation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpResult {
    pub body: ResultBody,
    pub covered_generation: u64,
    pub run_id: RunId,
    pub model: String,
    pub processing_time: Duration,
    pub finished_at: SystemTime,
}

impl OpResult {
    /// A result as the database keeps it; `None` for a body this build
    /// cannot read (it is left out, not fatal).
    pub fn from_stored(op: Operation, stored: &crate::db::StoredResult) -> Option<Self> {
        let body = match op {
            Operation::Summary => ResultBody::Summary(stored.body.clone()),
            Operation::MindMap => ResultBody::MindMap(serde_json::from_str(&stored.body).ok()?),
        };
        Some(Self {
            body,
            covered_generation: stored.covered_generation,
            run_id: stored.run_id,
            model: stored.model.clone(),
            processing_time: stored.processing,
            finished_at: stored.finished_at,
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
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            idle_after: Duration::from_secs(10 * 60),
            forget_after: Duration::from_secs(30 * 60),
            remember_forgotten: super::forgotten::DEFAULT_REMEMBERED,
            max_held_transcripts: MAX_HELD_TRANSCRIPTS,
        }
    }
}

#[derive(Debug)]
struct SessionRecord {
    feed: Option<usize>,
    generation: u64,
    transcripts: VecDeque<StoredTranscript>,
    partial: Option<String>,
    last_seq: Option<u64>,
    last_transcript_at: Option<Instant>,
    /// The last transcript of any kind, for `idle_after`.
    last_heard_at: Instant,
    ended: bool,
    ended_at: Option<Instant>,
    results: [Option<OpResult>; OPERATION_COUNT],
    rejected: [Option<String>; OPERATION_COUNT],
    /// Transcripts dropped before every tracked operation covered them.
    lost: u64,
}

impl SessionRecord {
    fn new(feed: Option<usize>, last_seq: Option<u64>) -> Self {
        Self {
            feed,
            generation: 0,
            transcripts: VecDeque::new(),
            partial: None,
            last_seq,
            last_transcript_at: None,
            last_heard_at: Instant::now(),
            ended: false,
            ended_at: None,
            results: Default::default(),
            rejected: Default::default(),
            lost: 0,
        }
    }

    /// The generation `op`'s latest result covers (0 without one).
    fn covered(&self, op: Operation) -> u64 {
        self.results[op.index()]
            .as_ref()
            .map_or(0, |r| r.covered_generation)
    }
}

/// What [`SessionStore::append`] did with a transcript.
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

/// What a run reads when it gets its permit.
#[derive(Debug, Clone)]
pub struct RunInput {
    /// The generation its result will cover: that of the newest utterance
    /// it holds (or of the session, when nothing new was said).
    pub generation: u64,
    pub utterances: Vec<Utterance>,
    /// The previous result it builds on: a summary's text, a mind map as an
    /// outline.
    pub previous: Option<String>,
    /// More was said after `generation` than one prompt window held: the
    /// run goes on with another step.
    pub more: bool,
}

/// A light view of one session for tables.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionFacts {
    pub feed: Option<usize>,
    pub generation: u64,
    pub last_transcript_at: Option<Instant>,
    pub ended: bool,
    pub covered: [Option<u64>; OPERATION_COUNT],
    pub partial: bool,
    /// Transcripts dropped before they were covered (a backlog past
    /// [`MAX_HELD_TRANSCRIPTS`]): never sent to the model.
    pub lost: u64,
}

/// Everything about one session, for a detail view.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionContent {
    pub recent: Vec<StoredTranscript>,
    pub partial: Option<String>,
    pub results: [Option<OpResult>; OPERATION_COUNT],
    /// The last answer of each op that could not be read, kept for inspection.
    pub rejected: [Option<String>; OPERATION_COUNT],
}

/// How many maps the sessions are spread over.
pub const SHARDS: usize = 64;

/// One share of the sessions, by the hash of their id.
struct Shard {
    held: HashMap<SessionId, SessionRecord>,
    forgotten: Forgotten,
}

pub struct SessionStore {
    limits: SessionLimits,
    shards: Box<[Mutex<Shard>]>,
    hasher: std::hash::RandomState,
    /// Sessions held in all shards.
    held: AtomicUsize,
    /// The next transcript's arrival number.
    arrivals: AtomicU64,
    /// Operations whose coverage keeps transcripts (the automatic ones).
    tracked: Vec<Operation>,
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
                    })
                })
                .collect(),
            hasher: std::hash::RandomState::new(),
            held: AtomicUsize::new(0),
            arrivals: AtomicU64::new(0),
            tracked: Operation::ALL.to_vec(),
        }
    }

    /// Keeps transcripts until these operations covered them (all, unless
    /// told otherwise).
    pub fn tracking(mut self, ops: &[Operation]) -> Self {
        self.tracked = ops.to_vec();
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
        let Shard { held, forgotten } = &mut *guard;
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
                    .or_insert_with(|| SessionRecord::new(feed, remembered))
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
        record.transcripts.push_back(StoredTranscript {
            generation: record.generation,
            speaker: transcript.speaker,
            text: transcript.text,
            start: transcript.start,
            received_at: SystemTime::now(),
            arrival: self.arrivals.fetch_add(1, Ordering::Relaxed),
        });
        self.trim(record);
        Appended::Final {
            generation: record.generation,
        }
    }

    /// Puts back a session read from disk at start. False when the store
    /// is full or already holds it.
    pub fn restore(&self, stored: &crate::db::StoredSession) -> bool {
        let mut shard = self.lock(&stored.id);
        if shard.held.contains_key(&stored.id) || !self.reserve() {
            return false;
        }
        let now = Instant::now();
        let age = |at: SystemTime| {
            now.checked_sub(SystemTime::now().duration_since(at).unwrap_or_default())
                .unwrap_or(now)
        };
        let mut record = SessionRecord::new(stored.feed, stored.last_seq);
        record.generation = stored.generation;
        record.last_heard_at = age(stored.last_seen);
        record.last_transcript_at = Some(age(stored.last_seen));
        record.ended = stored.ended_at.is_some();
        record.ended_at = stored.ended_at.map(age);
        record.transcripts = stored
            .transcripts
            .iter()
            .map(|t| StoredTranscript {
                generation: t.generation,
                speaker: t.speaker.clone(),
                text: t.text.clone(),
                start: t.start,
                received_at: t.received_at,
                arrival: self.arrivals.fetch_add(1, Ordering::Relaxed),
            })
            .collect();
        record.results = std::array::from_fn(|i| {
            OpResult::from_stored(Operation::ALL[i], stored.results[i].as_ref()?)
        });
        shard.held.insert(stored.id.clone(), record);
        true
    }

    /// Marks a held session ended. True the first time since it last spoke,
    /// for a session that said something (a replayed `session_end` asks for
    /// nothing more; an unknown session is not created).
    pub fn end(&self, session: &SessionId, feed: Option<usize>) -> bool {
        let mut shard = self.lock(session);
        let Some(record) = shard.held.get_mut(session) else {
            return false;
        };
        if feed.is_some() {
            record.feed = feed;
        }
        let first = !record.ended;
        if first {
            record.ended_at = Some(Instant::now());
        }
        record.ended = true;
        record.partial = None;
        first && record.generation > 0
    }

    /// Whether the store holds the session.
    pub fn contains(&self, session: &SessionId) -> bool {
        self.lock(session).held.contains_key(session)
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

    /// Live sessions that said nothing for [`SessionLimits::idle_after`].
    pub fn idle(&self) -> Vec<SessionId> {
        let idle_after = self.limits.idle_after;
        self.ids_where(|r| !r.ended && r.last_heard_at.elapsed() >= idle_after)
    }

    /// The session's newest generation (0 when unknown).
    pub fn generation(&self, session: &SessionId) -> u64 {
        self.lock(session)
            .held
            .get(session)
            .map_or(0, |r| r.generation)
    }

    /// Drops the oldest transcripts that nobody needs: past the newest
    /// [`MAX_KEPT_TRANSCRIPTS`] and covered by every tracked operation, or
    /// past [`MAX_HELD_TRANSCRIPTS`] whatever they are (counted as lost
    /// when not covered).
    fn trim(&self, record: &mut SessionRecord) {
        let covered = self
            .tracked
            .iter()
            .map(|op| record.covered(*op))
            .min()
            .unwrap_or(u64::MAX);
        while let Some(oldest) = record.transcripts.front() {
            let len = record.transcripts.len();
            let uncovered = oldest.generation > covered;
            if len > self.limits.max_held_transcripts.max(MAX_KEPT_TRANSCRIPTS) {
                record.lost += u64::from(uncovered);
            } else if len <= MAX_KEPT_TRANSCRIPTS || uncovered {
                break;
            }
            record.transcripts.pop_front();
        }
    }

    /// What a run of `op` reads now, within one prompt window of
    /// `window_chars` characters.
    ///
    /// Incremental: the previous result and the transcripts after the
    /// generation it covers, oldest first, as many as the window holds
    /// (at least one); `more` says when the rest needs another step. Full:
    /// the newest transcripts the window holds, from the start at best.
    pub fn run_input(
        &self,
        session: &SessionId,
        op: Operation,
        incremental: bool,
        window_chars: usize,
    ) -> RunInput {
        let shard = self.lock(session);
        let Some(record) = shard.held.get(session) else {
            return RunInput {
                generation: 0,
                utterances: Vec::new(),
                previous: None,
                more: false,
            };
        };
        let utterance = |t: &StoredTranscript| Utterance {
            speaker: t.speaker.clone(),
            text: t.text.clone(),
        };
        let fits = |used: &mut usize, t: &StoredTranscript| {
            *used += crate::llm::prompts::line_chars(t.speaker.as_deref(), &t.text);
            *used <= window_chars
        };
        if !incremental {
            let mut used = 0;
            let mut newest: Vec<Utterance> = record
                .transcripts
                .iter()
                .rev()
                .enumerate()
                .take_while(|(i, t)| fits(&mut used, t) || *i == 0)
                .map(|(_, t)| utterance(t))
                .collect();
            newest.reverse();
            return RunInput {
                generation: record.generation,
                utterances: newest,
                previous: None,
                more: false,
            };
        }
        let previous = record.results[op.index()].as_ref().map(|r| {
            let text = match &r.body {
                ResultBody::Summary(text) => text.clone(),
                ResultBody::MindMap(map) => crate::llm::mind_map::to_outline(map),
            };
            (text, r.covered_generation)
        });
        let after = previous.as_ref().map_or(0, |(_, covered)| *covered);
        let mut used = 0;
        let mut generation = record.generation;
        let mut utterances = Vec::new();
        let mut more = false;
        for t in record.transcripts.iter().filter(|t| t.generation > after) {
            if !fits(&mut used, t) && !utterances.is_empty() {
                more = true;
                break;
            }
            utterances.push(utterance(t));
            generation = t.generation;
        }
        RunInput {
            generation,
            utterances,
            previous: previous.map(|(text, _)| text),
            more,
        }
    }

    /// The arrival number of the oldest transcript `op` has not covered, or
    /// the next arrival number when it is up to date: the run's place in
    /// the queue for a permit (lower goes first).
    pub fn oldest_uncovered(&self, session: &SessionId, op: Operation) -> u64 {
        let now = self.arrivals.load(Ordering::Relaxed);
        let shard = self.lock(session);
        let Some(record) = shard.held.get(session) else {
            return now;
        };
        let covered = record.covered(op);
        record
            .transcripts
            .iter()
            .find(|t| t.generation > covered)
            .map_or(now, |t| t.arrival)
    }

    /// Stores a result unless a result covering a newer generation is there.
    pub fn put_result(&self, session: &SessionId, op: Operation, result: OpResult) -> bool {
        let mut shard = self.lock(session);
        let Some(record) = shard.held.get_mut(session) else {
            return false;
        };
        let slot = &mut record.results[op.index()];
        if slot
            .as_ref()
            .is_some_and(|old| old.covered_generation > result.covered_generation)
        {
            return false;
        }
        *slot = Some(result);
        self.trim(record);
        true
    }

    /// Sessions that ended longer than `after` ago.
    pub fn ended_before(&self, after: Duration) -> Vec<SessionId> {
        self.ids_where(|r| ended_before(r, after))
    }

    fn ids_where(&self, keep: impl Fn(&SessionRecord) -> bool) -> Vec<SessionId> {
        let mut ids = Vec::new();
        for shard in self.each_shard() {
            ids.extend(
                shard
                    .held
                    .iter()
                    .filter(|(_, r)| keep(r))
                    .map(|(id, _)| id.clone()),
            );
        }
        ids
    }

    /// Drops a session and all it holds if it still ended longer than
    /// `after` ago (it may have spoken since it was listed), remembering
    /// its last `seq`. Returns whether it went.
    pub fn forget_if_ended_before(&self, session: &SessionId, after: Duration) -> bool {
        let mut guard = self.lock(session);
        let Shard { held, forgotten } = &mut *guard;
        match held.get(session) {
            Some(record) if ended_before(record, after) => {
                let last_seq = record.last_seq;
                held.remove(session);
                self.held.fetch_sub(1, Ordering::AcqRel);
                forgotten.remember(session.clone(), last_seq);
                true
            }
            _ => false,
        }
    }

    /// Keeps an answer that could not be read (cut to [`MAX_REJECTED_BYTES`]).
    pub fn put_rejected(&self, session: &SessionId, op: Operation, raw: String) {
        // A model's text: no control characters reach a view from here.
        let mut raw = crate::text::strip_controls_keep_lines(&raw).into_owned();
        crate::text::cut_to(&mut raw, MAX_REJECTED_BYTES);
        if let Some(record) = self.lock(session).held.get_mut(session) {
            record.rejected[op.index()] = Some(raw);
        }
    }

    /// The latest result of `op`.
    pub fn result(&self, session: &SessionId, op: Operation) -> Option<OpResult> {
        self.lock(session).held.get(session)?.results[op.index()].clone()
    }

    pub fn facts(&self, session: &SessionId) -> Option<SessionFacts> {
        self.lock(session).held.get(session).map(facts_of)
    }

    /// Calls `visit` for each session, holding one shard's lock at a time.
    pub fn for_each(&self, mut visit: impl FnMut(&SessionId, SessionFacts)) {
        for shard in self.each_shard() {
            for (id, record) in shard.held.iter() {
                visit(id, facts_of(record));
            }
        }
    }

    pub fn content(&self, session: &SessionId, recent: usize) -> Option<SessionContent> {
        let shard = self.lock(session);
        let record = shard.held.get(session)?;
        let skip = record.transcripts.len().saturating_sub(recent);
        Some(SessionContent {
            recent: record.transcripts.iter().skip(skip).cloned().collect(),
            partial: record.partial.clone(),
            results: record.results.clone(),
            rejected: record.rejected.clone(),
        })
    }

    /// Sessions held (a capacity hint for snapshots).
    pub(crate) fn len(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

fn ended_before(record: &SessionRecord, after: Duration) -> bool {
    record.ended && record.ended_at.is_some_and(|at| at.elapsed() >= after)
}

fn facts_of(record: &SessionRecord) -> SessionFacts {
    SessionFacts {
        feed: record.feed,
        generation: record.generation,
        last_transcript_at: record.last_transcript_at,
        ended: record.ended,
        covered: std::array::from_fn(|i| record.results[i].as_ref().map(|r| r.covered_generation)),
        partial: record.partial.is_some(),
        lost: record.lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(session: &str, seq: Option<u64>, text: &str, is_final: bool) -> Transcript {
        Transcript {
            session_id: SessionId::parse(session).unwrap(),
            seq,
            text: text.into(),
            speaker: None,
            start: None,
            end: None,
            is_final,
        }
    }

    #[test]
    fn generations_count_finals_and_replays_are_dropped() {
        let store = SessionStore::default();
        assert_eq!(
            store.append(said("a", Some(1), "one", true), None),
            Appended::Final { generation: 1 }
        );
        assert_eq!(
            store.append(said("a", Some(2), "tw", false), None),
            Appended::Partial { generation: 1 }
        );
        assert_eq!(
            store.append(said("a", Some(2), "two", true), None),
            Appended::Duplicate
        );
        assert_eq!(
            store.append(said("a", Some(3), "two", true), None),
            Appended::Final { generation: 2 }
        );
        assert_eq!(
            store.append(said("a", None, "three", true), None),
            Appended::Final { generation: 3 }
        );
        assert_eq!(store.generation(&SessionId::parse("a").unwrap()), 3);
    }

    #[test]
    fn the_limit_holds_across_shards_and_threads() {
        let store = std::sync::Arc::new(SessionStore::new(SessionLimits {
            max_sessions: 100,
            ..Default::default()
        }));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|i| {
                            let name = format!("t{t}-{i}");
                            store.append(said(&name, Some(1), "hi", true), None)
                                == Appended::Refused
                        })
                        .count()
                })
            })
            .collect();
        let refused: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(store.len(), 100);
        assert_eq!(refused, 3900);
        let mut held = 0;
        store.for_each(|_, _| held += 1);
        assert_eq!(held, 100, "the count and the maps agree");

        // A forgotten session makes room for a new one.
        let id = store.ended_before(Duration::ZERO);
        assert!(id.is_empty());
        let mut one = None;
        store.for_each(|id, _| one = Some(id.clone()));
        let one = one.unwrap();
        assert!(store.end(&one, None));
        assert!(store.forget_if_ended_before(&one, Duration::ZERO));
        assert_eq!(store.len(), 99);
        assert_eq!(
            store.append(said("newcomer", Some(1), "hi", true), None),
            Appended::Final { generation: 1 }
        );
        assert_eq!(
            store.append(said("one-too-many", Some(1), "hi", true), None),
            Appended::Refused
        );
    }

    #[test]
    fn rejected_answers_are_cut_to_32_kib() {
        let store = SessionStore::default();
        store.append(said("a", None, "one", true), None);
        let id = SessionId::parse("a").unwrap();
        store.put_rejected(&id, Operation::MindMap, "é".repeat(40_000));
        let kept = store.content(&id, 0).unwrap().rejected[Operation::MindMap.index()]
            .clone()
            .unwrap();
        assert!(
            kept.len() <= 32 * 1024 && kept.len() > 32 * 1024 - 2,
            "{}",
            kept.len()
        );
    }

    #[test]
    fn a_result_of_the_same_generation_replaces_the_older_one() {
        let store = SessionStore::default();
        store.append(said("a", None, "one", true), None);
        let id = SessionId::parse("a").unwrap();
        let result = |text: &str, run_id| OpResult {
            body: ResultBody::Summary(text.into()),
            covered_generation: 1,
            run_id,
            model: "m".into(),
            processing_time: Duration::ZERO,
            finished_at: SystemTime::now(),
        };
        assert!(store.put_result(&id, Operation::Summary, result("first", 1)));
        // An operator's re-run reads the same transcripts: its result is newer.
        assert!(store.put_result(&id, Operation::Summary, result("second", 2)));
        assert_eq!(
            store.result(&id, Operation::Summary).map(|r| r.run_id),
            Some(2)
        );
    }

    #[test]
    fn ending_a_session_that_said_nothing_final_asks_for_nothing() {
        let store = SessionStore::default();
        store.append(said("quiet", None, "uh", false), None);
        let id = SessionId::parse("quiet").unwrap();
        assert!(!store.end(&id, None), "only a partial: no final runs");
        store.append(said("talk", None, "one", true), None);
        assert!(store.end(&SessionId::parse("talk").unwrap(), None));
    }

    const WINDOW: usize = crate::llm::prompts::MAX_TRANSCRIPT_CHARS;

    fn result_covering(generation: u64, run_id: RunId) -> OpResult {
        OpResult {
            body: ResultBody::Summary(format!("up to {generation}")),
            covered_generation: generation,
            run_id,
            model: "m".into(),
            processing_time: Duration::ZERO,
            finished_at: SystemTime::now(),
        }
    }

    #[test]
    fn a_backlog_is_read_oldest_first_one_window_at_a_time() {
        let store = SessionStore::default();
        let id = SessionId::parse("a").unwrap();
        // Ten lines of 10 characters (9 + newline): a window of 35 holds 3.
        for i in 0..10 {
            store.append(said("a", None, &format!("line {i:04}"), true), None);
        }
        let mut covered = 0;
        let mut steps = Vec::new();
        loop {
            let input = store.run_input(&id, Operation::Summary, true, 35);
            let texts: Vec<String> = input.utterances.iter().map(|u| u.text.clone()).collect();
            steps.push(texts);
            assert!(input.generation > covered, "every step moves on");
            covered = input.generation;
            store.put_result(&id, Operation::Summary, result_covering(covered, covered));
            if !input.more {
                break;
            }
        }
        let flat: Vec<String> = steps.concat();
        let expected: Vec<String> = (0..10).map(|i| format!("line {i:04}")).collect();
        assert_eq!(flat, expected, "every line once, in order, none dropped");
        assert_eq!(steps.len(), 4, "{steps:?}");
        // A line longer than the window still goes, alone.
        store.append(said("a", None, &"x".repeat(100), true), None);
        let input = store.run_input(&id, Operation::Summary, true, 35);
        assert_eq!((input.utterances.len(), input.more), (1, false));
        // Full mode reads the newest window.
        let full = store.run_input(&id, Operation::Summary, false, 35);
        assert_eq!(full.utterances.len(), 1);
        assert_eq!(full.generation, 11);
    }

    #[test]
    fn uncovered_transcripts_are_kept_past_the_view_limit_up_to_the_hard_cap() {
        let store = SessionStore::default().tracking(&[Operation::Summary]);
        let id = SessionId::parse("a").unwrap();
        let n = MAX_KEPT_TRANSCRIPTS + 100;
        for i in 0..n {
            store.append(said("a", None, &format!("{i}"), true), None);
        }
        assert_eq!(
            store.content(&id, usize::MAX).unwrap().recent.len(),
            n,
            "none covered"
        );
        assert_eq!(store.oldest_uncovered(&id, Operation::Summary), 0);
        store.put_result(&id, Operation::Summary, result_covering(n as u64, 1));
        assert_eq!(
            store.content(&id, usize::MAX).unwrap().recent.len(),
            MAX_KEPT_TRANSCRIPTS,
            "covered: back to the view limit"
        );
        assert_eq!(
            store.oldest_uncovered(&id, Operation::Summary),
            n as u64,
            "up to date"
        );
        for i in 0..(MAX_HELD_TRANSCRIPTS + 5) {
            store.append(said("a", None, &format!("more {i}"), true), None);
        }
        let facts = store.facts(&id).unwrap();
        let held = store.content(&id, usize::MAX).unwrap().recent.len();
        assert_eq!(held, MAX_HELD_TRANSCRIPTS);
        assert_eq!(facts.lost, 5, "only uncovered lines count as lost");
        assert_eq!(
            store.oldest_uncovered(&id, Operation::Summary),
            (n + 5) as u64
        );
    }

    #[test]
    fn the_hard_cap_follows_its_setting() {
        let store = SessionStore::new(SessionLimits {
            max_held_transcripts: 450,
            ..Default::default()
        })
        .tracking(&[Operation::Summary]);
        let id = SessionId::parse("a").unwrap();
        for i in 0..460 {
            store.append(said("a", None, &format!("{i}"), true), None);
        }
        assert_eq!(store.content(&id, usize::MAX).unwrap().recent.len(), 450);
        assert_eq!(store.facts(&id).unwrap().lost, 10);
    }

    #[test]
    fn incremental_input_reads_after_the_previous_summary() {
        let store = SessionStore::default();
        let id = SessionId::parse("a").unwrap();
        for text in ["one", "two", "three"] {
            store.append(said("a", None, text, true), None);
        }
        let result = OpResult {
            body: ResultBody::Summary("S".into()),
            covered_generation: 2,
            run_id: 1,
            model: "m".into(),
            processing_time: Duration::ZERO,
            finished_at: SystemTime::now(),
        };
        assert!(store.put_result(&id, Operation::Summary, result.clone()));
        let input = store.run_input(&id, Operation::Summary, true, WINDOW);
        assert_eq!(input.previous.as_deref(), Some("S"));
        assert_eq!(input.utterances.len(), 1);
        assert_eq!((input.generation, input.more), (3, false));
        assert_eq!(
            store
                .run_input(&id, Operation::Summary, false, WINDOW)
                .utterances
                .len(),
            3
        );
        // The mind map has no result yet: it reads from the start.
        let map = store.run_input(&id, Operation::MindMap, true, WINDOW);
        assert_eq!((map.utterances.len(), map.previous), (3, None));
        // An older result never replaces a newer one.
        let older = OpResult {
            covered_generation: 1,
            ..result
        };
        assert!(!store.put_result(&id, Operation::Summary, older));
    }
}
