//! A session's life in the store: put back from the database at start,
//! ended (by its feed, or for going silent), and forgotten a while after
//! it ended.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{HeldLine, HeldResult, OpResult, SessionId, SessionRecord, SessionStore, Shard};

impl SessionStore {
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
            .map(|t| {
                HeldLine::new(
                    t.generation,
                    self.arrivals.fetch_add(1, Ordering::Relaxed),
                    t.speaker.as_deref(),
                    t.text.clone(),
                    t.start,
                    t.received_at,
                )
            })
            .collect();
        // Read from the file, so in it: their bodies leave once they waited.
        record.results = stored.results.map(|op, stored| {
            OpResult::from_stored(op, stored.as_ref()?).map(|r| HeldResult::new(r, true))
        });
        // Read from the file, so in it: the covered ones go at once.
        record.written = stored.transcripts.last().map_or(0, |t| t.generation);
        self.trim(&mut record);
        shard.held.insert(stored.id.clone(), Box::new(record));
        true
    }

    /// Remembers a session the database holds and memory does not, as if
    /// this process had forgotten it: a replay of what it said is a
    /// duplicate. Does nothing for a session held.
    pub fn remember_forgotten(&self, session: SessionId, last_seq: Option<u64>) {
        let mut guard = self.lock(&session);
        let Shard {
            held, forgotten, ..
        } = &mut *guard;
        if !held.contains_key(&session) {
            forgotten.remember(session, last_seq);
        }
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

    /// Live sessions that said nothing for [`SessionLimits::idle_after`].
    pub fn idle(&self) -> Vec<SessionId> {
        let idle_after = self.limits.idle_after;
        self.ids_where(|r| !r.ended && r.last_heard_at.elapsed() >= idle_after)
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
        let Shard {
            held,
            forgotten,
            raised,
        } = &mut *guard;
        match held.get(session) {
            Some(record) if ended_before(record, after) => {
                let last_seq = record.last_seq;
                held.remove(session);
                raised.remove(session);
                self.held.fetch_sub(1, Ordering::AcqRel);
                self.forgets.fetch_add(1, Ordering::AcqRel);
                forgotten.remember(session.clone(), last_seq);
                true
            }
            _ => false,
        }
    }
}

fn ended_before(record: &SessionRecord, after: Duration) -> bool {
    record.ended && record.ended_at.is_some_and(|at| at.elapsed() >= after)
}
