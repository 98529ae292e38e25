//! What a run reads: the previous result and the transcripts after what it
//! covered, oldest first, one prompt window at a time; and which waiting
//! run has gone longest without fresh results (the permits' order).
//!
//! With a database, lines the file holds leave memory before they are
//! covered (see `SessionStore::trim`), and so does the body of a result:
//! a run that needs them is told what to read ([`InFile`]), reads it
//! back, and asks again with it.

use std::sync::atomic::Ordering;

use super::{HeldLine, OpResult, Operation, SessionId, SessionStore, StoredTranscript};
use crate::llm::Utterance;

/// Lines a run reads back from the file at most per ask: a prompt window
/// rarely holds more; when it does, the run goes on with another step.
pub const READ_BACK_LINES: usize = 400;

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

/// What a run needs is in the file only: read it back and ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFile {
    /// The lines it needs start at this generation: read them back (at
    /// most [`READ_BACK_LINES`], oldest first).
    pub from: Option<u64>,
    /// The previous result it builds on: read the operation's result.
    pub result: bool,
}

/// Lines read back from the file for [`SessionStore::run_input`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadBack<'a> {
    /// Oldest first, from the generation [`InFile`] gave.
    pub lines: &'a [StoredTranscript],
    /// The operation's result as the file holds it.
    pub result: Option<&'a OpResult>,
    /// No more asking: lines the file lacks are passed over (a file
    /// pruned under a live session), not asked for again.
    pub last_try: bool,
}

/// One line as a prompt reads it: generation, speaker, text.
type Said<'a> = (u64, Option<&'a str>, &'a str);

fn said(t: &HeldLine) -> Said<'_> {
    (t.generation, t.speaker(), t.text())
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
    ///
    /// `Err` when some of those lines left memory for the file and
    /// `read_back` does not hold them: read them back and ask again.
    pub fn run_input(
        &self,
        session: &SessionId,
        op: Operation,
        incremental: bool,
        window_chars: usize,
        room: Option<usize>,
        read_back: ReadBack<'_>,
    ) -> Result<RunInput, InFile> {
        let shard = self.lock(session);
        let Some(record) = shard.held.get(session) else {
            return Ok(RunInput {
                generation: 0,
                utterances: Vec::new(),
                previous: None,
                more: false,
            });
        };
        let utterance = |(_, speaker, text): Said<'_>| Utterance::new(speaker, text);
        let chars = |(_, speaker, text): Said<'_>| crate::llm::prompts::line_chars(speaker, text);
        if !incremental {
            let window_chars = room.map_or(window_chars, |room| window_chars.min(room));
            let fits = |used: &mut usize, t: Said<'_>| {
                *used += chars(t);
                *used <= window_chars
            };
            let mut used = 0;
            let mut newest: Vec<Utterance> = record
                .transcripts
                .iter()
                .map(said)
                .rev()
                .enumerate()
                .take_while(|(i, t)| fits(&mut used, *t) || *i == 0)
                .map(|(_, t)| utterance(t))
                .collect();
            newest.reverse();
            return Ok(RunInput {
                generation: record.generation,
                utterances: newest,
                previous: None,
                more: false,
            });
        }
        // The result it builds on: from memory, or the file's when memory
        // let its body go (the same run's, or it is asked for again).
        let kept = record.results.get(op).and_then(Option::as_ref);
        let after = kept.map_or(0, |k| k.covered_generation());
        let previous = kept.and_then(|k| {
            k.held()
                .or_else(|| read_back.result.filter(|r| r.run_id == k.run_id()))
        });
        let wants_result = kept.is_some() && previous.is_none();
        let previous = previous.map(|r| {
            let text = r.body.for_prompt();
            match room {
                Some(room) => crate::llm::prompts::cut_previous(op, text, room / 2),
                None => text,
            }
        });
        let window_chars = match (room, &previous) {
            (Some(room), Some(text)) => window_chars.min(room.saturating_sub(text.chars().count())),
            (Some(room), None) => window_chars.min(room),
            (None, _) => window_chars,
        };
        let fits = |used: &mut usize, t: Said<'_>| {
            *used += chars(t);
            *used <= window_chars
        };
        // The spilled lines this run needs: from the file.
        let first_held = record.first_held();
        let from = match record.spilled_from {
            0 => first_held,
            spilled => spilled.max(after + 1),
        };
        let (filed, filed_through) = match from < first_held {
            false => (Vec::new(), None),
            true => {
                let filed: Vec<Said<'_>> = read_back
                    .lines
                    .iter()
                    .filter(|t| (from..first_held).contains(&t.generation))
                    .map(|t| (t.generation, t.speaker.as_deref(), t.text.as_str()))
                    .collect();
                let starts = filed.first().is_some_and(|t| t.0 == from);
                let whole = starts
                    && filed.windows(2).all(|w| w[1].0 == w[0].0 + 1)
                    && filed.last().is_some_and(|t| t.0 + 1 == first_held);
                // A full read that stops short: the rest waits for the
                // next step (read again then).
                let cut = starts && read_back.lines.len() >= READ_BACK_LINES && !whole;
                if !(whole || cut || read_back.last_try) {
                    return Err(InFile {
                        from: Some(from),
                        result: wants_result,
                    });
                }
                let through = cut.then(|| filed.last().map_or(from, |t| t.0));
                (filed, through)
            }
        };
        if wants_result {
            return Err(InFile {
                from: None,
                result: true,
            });
        }
        let held = || {
            record
                .transcripts
                .iter()
                .filter(|t| t.generation > after && filed_through.is_none())
                .map(said)
        };
        // Counted first, so the lines are copied into room of their size.
        let fresh = || filed.iter().copied().chain(held());
        let (mut used, mut taken, mut more) = (0, 0, filed_through.is_some());
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
            generation = t.0;
            utterances.push(utterance(t));
        }
        Ok(RunInput {
            generation,
            utterances,
            previous,
            more,
        })
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
        if record.spilled_from != 0 && covered + 1 < record.first_held() {
            return record.spilled_arrival;
        }
        record
            .transcripts
            .iter()
            .find(|t| t.generation > covered)
            .map_or(now, |t| t.arrival)
    }
}
