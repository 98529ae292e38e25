//! What a run reads: the previous result and the transcripts after what it
//! covered, oldest first, one prompt window at a time; and which waiting
//! run has gone longest without fresh results (the permits' order).

use std::sync::atomic::Ordering;

use super::{HeldLine, Operation, SessionId, SessionStore};
use crate::llm::Utterance;

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

impl SessionStore {
    /// What a run of `op` reads now, within one prompt window of
    /// `window_chars` characters of transcript, and, when the server's
    /// context window is known, `room` characters of previous result and
    /// transcript together (a previous result longer than half the room is
    /// cut to it, see `prompts::cut_previous`).
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
        room: Option<usize>,
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
        let utterance = |t: &HeldLine| Utterance::new(t.speaker(), t.text());
        if !incremental {
            let window_chars = room.map_or(window_chars, |room| window_chars.min(room));
            let fits = |used: &mut usize, t: &HeldLine| {
                *used += crate::llm::prompts::line_chars(t.speaker(), t.text());
                *used <= window_chars
            };
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
        let previous = record.results.get(op).and_then(Option::as_ref).map(|r| {
            let text = r.body.for_prompt();
            let text = match room {
                Some(room) => crate::llm::prompts::cut_previous(op, text, room / 2),
                None => text,
            };
            (text, r.covered_generation)
        });
        let after = previous.as_ref().map_or(0, |(_, covered)| *covered);
        let window_chars = match (room, &previous) {
            (Some(room), Some((text, _))) => {
                window_chars.min(room.saturating_sub(text.chars().count()))
            }
            (Some(room), None) => window_chars.min(room),
            (None, _) => window_chars,
        };
        let fits = |used: &mut usize, t: &HeldLine| {
            *used += crate::llm::prompts::line_chars(t.speaker(), t.text());
            *used <= window_chars
        };
        // Counted first, so the lines are copied into room of their size.
        let fresh = || record.transcripts.iter().filter(|t| t.generation > after);
        let (mut used, mut taken, mut more) = (0, 0, false);
        for t in fresh() {
            if !fits(&mut used, t) && taken > 0 {
                more = true;
                break;
            }
            taken += 1;
        }
        let mut generation = record.generation;
        let mut utterances = Vec::with_capacity(taken);
        for t in fresh().take(taken) {
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

    /// The arrival number the next transcript will get: a permit priority
    /// behind everything said so far.
    pub fn next_arrival(&self) -> u64 {
        self.arrivals.load(Ordering::Relaxed)
    }

    /// Whether a result of `op` covers everything the session said: a run
    /// would find nothing new to send.
    pub fn covers_all(&self, session: &SessionId, op: Operation) -> bool {
        let shard = self.lock(session);
        shard.held.get(session).is_some_and(|record| {
            record.results.get(op).is_some_and(Option::is_some)
                && record.covered(op) >= record.generation
        })
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
}
