//! The session store: what each session has said and what was made of it.
//!
//! Per session: the final transcripts with their generation numbers (the
//! newest [`MAX_KEPT_TRANSCRIPTS`] are kept; the generation counts them all),
//! the live partial line, the last `seq` seen (to drop replays), and the
//! latest result of each operation with the generation it covers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::events::RunId;
use crate::llm::Utterance;
use crate::model::{MindMap, OPERATION_COUNT, Operation, SessionId, Transcript};

/// Longest rejected answer kept per session and operation.
pub const MAX_REJECTED_BYTES: usize = 32 * 1024;

/// Final transcripts kept per session for prompts and views.
pub const MAX_KEPT_TRANSCRIPTS: usize = 400;

/// A final transcript as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTranscript {
    pub generation: u64,
    pub speaker: Option<String>,
    pub text: String,
    pub start: Option<f64>,
    pub received_at: SystemTime,
}

/// What a finished run produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultBody {
    Summary(String),
    MindMap(MindMap),
}

/// The latest result of one operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OpResult {
    pub body: ResultBody,
    pub covered_generation: u64,
    pub run_id: RunId,
    pub model: String,
    pub processing_time: Duration,
    pub finished_at: SystemTime,
}

#[derive(Debug)]
struct SessionRecord {
    feed: Option<usize>,
    generation: u64,
    transcripts: VecDeque<StoredTranscript>,
    partial: Option<String>,
    last_seq: Option<u64>,
    last_transcript_at: Option<Instant>,
    ended: bool,
    ended_at: Option<Instant>,
    results: [Option<OpResult>; OPERATION_COUNT],
    rejected: [Option<String>; OPERATION_COUNT],
}

impl SessionRecord {
    fn new(feed: Option<usize>) -> Self {
        Self {
            feed,
            generation: 0,
            transcripts: VecDeque::new(),
            partial: None,
            last_seq: None,
            last_transcript_at: None,
            ended: false,
            ended_at: None,
            results: Default::default(),
            rejected: Default::default(),
        }
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
}

/// What a run reads when it starts.
#[derive(Debug, Clone)]
pub struct RunInput {
    pub generation: u64,
    pub utterances: Vec<Utterance>,
    pub previous_summary: Option<String>,
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
}

/// Everything about one session, for a detail view.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionContent {
    pub recent: Vec<StoredTranscript>,
    pub partial: Option<String>,
    pub results: [Option<OpResult>; OPERATION_COUNT],
    /// The last answer of each op that could not be read, kept for inspection.
    pub rejected: [Option<String>; OPERATION_COUNT],
}

#[derive(Default)]
pub struct SessionStore {
    sessions: Mutex<HashMap<SessionId, SessionRecord>>,
}

impl SessionStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, SessionRecord>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a transcript, dropping replays by `seq`.
    pub fn append(&self, transcript: Transcript, feed: Option<usize>) -> Appended {
        let mut sessions = self.lock();
        let record = sessions
            .entry(transcript.session_id)
            .or_insert_with(|| SessionRecord::new(feed));
        if let Some(seq) = transcript.seq {
            if record.last_seq.is_some_and(|last| seq <= last) {
                return Appended::Duplicate;
            }
            record.last_seq = Some(seq);
        }
        if feed.is_some() {
            record.feed = feed;
        }
        if !transcript.is_final {
            record.partial = Some(transcript.text);
            return Appended::Partial {
                generation: record.generation,
            };
        }
        record.generation += 1;
        record.partial = None;
        record.last_transcript_at = Some(Instant::now());
        if record.transcripts.len() == MAX_KEPT_TRANSCRIPTS {
            record.transcripts.pop_front();
        }
        record.transcripts.push_back(StoredTranscript {
            generation: record.generation,
            speaker: transcript.speaker,
            text: transcript.text,
            start: transcript.start,
            received_at: SystemTime::now(),
        });
        Appended::Final {
            generation: record.generation,
        }
    }

    /// Marks the session ended. True the first time for a session that said
    /// something (a replayed `session_end` asks for nothing more).
    pub fn end(&self, session: &SessionId, feed: Option<usize>) -> bool {
        let mut sessions = self.lock();
        let record = sessions
            .entry(session.clone())
            .or_insert_with(|| SessionRecord::new(feed));
        let first = !record.ended;
        if first {
            record.ended_at = Some(Instant::now());
        }
        record.ended = true;
        record.partial = None;
        first && record.generation > 0
    }

    /// Makes sure the session exists (a trigger may name one no feed sent).
    /// Whether the store holds the session.
    pub fn contains(&self, session: &SessionId) -> bool {
        self.lock().contains_key(session)
    }

    /// The session's newest generation (0 when unknown).
    pub fn generation(&self, session: &SessionId) -> u64 {
        self.lock().get(session).map_or(0, |r| r.generation)
    }

    /// What a run of `op` reads now. With `incremental`, a summary reads only
    /// what came after the generation its previous summary covered.
    pub fn run_input(&self, session: &SessionId, op: Operation, incremental: bool) -> RunInput {
        let sessions = self.lock();
        let Some(record) = sessions.get(session) else {
            return RunInput {
                generation: 0,
                utterances: Vec::new(),
                previous_summary: None,
            };
        };
        let previous = match &record.results[Operation::Summary.index()] {
            Some(OpResult {
                body: ResultBody::Summary(text),
                covered_generation,
                ..
            }) if incremental && op == Operation::Summary => {
                Some((text.clone(), *covered_generation))
            }
            _ => None,
        };
        let after = previous.as_ref().map_or(0, |(_, covered)| *covered);
        RunInput {
            generation: record.generation,
            utterances: record
                .transcripts
                .iter()
                .filter(|t| t.generation > after)
                .map(|t| Utterance {
                    speaker: t.speaker.clone(),
                    text: t.text.clone(),
                })
                .collect(),
            previous_summary: previous.map(|(text, _)| text),
        }
    }

    /// Stores a result unless a result covering a newer generation is there.
    pub fn put_result(&self, session: &SessionId, op: Operation, result: OpResult) -> bool {
        let mut sessions = self.lock();
        let Some(record) = sessions.get_mut(session) else {
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
        true
    }

    /// Sessions that ended longer than `after` ago.
    pub fn ended_before(&self, after: std::time::Duration) -> Vec<SessionId> {
        self.lock()
            .iter()
            .filter(|(_, r)| r.ended_at.is_some_and(|at| at.elapsed() >= after))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Drops a session and all it holds.
    pub fn remove(&self, session: &SessionId) -> bool {
        self.lock().remove(session).is_some()
    }

    /// Keeps an answer that could not be read (cut to [`MAX_REJECTED_BYTES`]).
    pub fn put_rejected(&self, session: &SessionId, op: Operation, mut raw: String) {
        crate::text::cut_to(&mut raw, MAX_REJECTED_BYTES);
        if let Some(record) = self.lock().get_mut(session) {
            record.rejected[op.index()] = Some(raw);
        }
    }

    /// The latest result of `op`.
    pub fn result(&self, session: &SessionId, op: Operation) -> Option<OpResult> {
        self.lock().get(session)?.results[op.index()].clone()
    }

    pub fn facts(&self, session: &SessionId) -> Option<SessionFacts> {
        self.lock().get(session).map(facts_of)
    }

    /// Calls `visit` for each session under one lock.
    pub fn for_each(&self, mut visit: impl FnMut(&SessionId, SessionFacts)) {
        for (id, record) in self.lock().iter() {
            visit(id, facts_of(record));
        }
    }

    pub fn content(&self, session: &SessionId, recent: usize) -> Option<SessionContent> {
        let sessions = self.lock();
        let record = sessions.get(session)?;
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
        self.lock().len()
    }
}

fn facts_of(record: &SessionRecord) -> SessionFacts {
    SessionFacts {
        feed: record.feed,
        generation: record.generation,
        last_transcript_at: record.last_transcript_at,
        ended: record.ended,
        covered: std::array::from_fn(|i| record.results[i].as_ref().map(|r| r.covered_generation)),
        partial: record.partial.is_some(),
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
        let input = store.run_input(&id, Operation::Summary, true);
        assert_eq!(input.previous_summary.as_deref(), Some("S"));
        assert_eq!(input.utterances.len(), 1);
        assert_eq!(
            store
                .run_input(&id, Operation::Summary, false)
                .utterances
                .len(),
            3
        );
        // An older result never replaces a newer one.
        let older = OpResult {
            covered_generation: 1,
            ..result
        };
        assert!(!store.put_result(&id, Operation::Summary, older));
    }
}
