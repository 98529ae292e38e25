//! What views read of the store: a light row per session, one session's
//! content in full, an operation's latest result.

use tokio::time::Instant;

use super::{
    HeldLine, OpMap, OpResult, Operation, SessionId, SessionRecord, SessionStore, StoredTranscript,
};

/// A light view of one session for tables.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionFacts {
    pub feed: Option<usize>,
    pub generation: u64,
    pub last_transcript_at: Option<Instant>,
    pub ended: bool,
    pub partial: bool,
    /// Transcripts dropped before they were covered (a backlog past
    /// [`MAX_HELD_TRANSCRIPTS`]): never sent to the model.
    pub lost: u64,
    /// The budget that stopped its last run, if one did.
    pub over_budget: Option<crate::spend::Budget>,
    /// An operator lifted its own budget.
    pub budget_lifted: bool,
}

/// Everything about one session, for a detail view.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionContent {
    pub recent: Vec<StoredTranscript>,
    pub partial: Option<String>,
    pub results: OpMap<Option<OpResult>>,
    /// The last answer of each op that could not be read, kept for inspection.
    pub rejected: OpMap<Option<String>>,
}

impl SessionStore {
    /// The session's kind, when its feed gave one.
    pub fn kind(&self, session: &SessionId) -> Option<String> {
        let shard = self.lock(session);
        shard.held.get(session)?.kind.as_deref().map(String::from)
    }

    pub fn facts(&self, session: &SessionId) -> Option<SessionFacts> {
        self.lock(session)
            .held
            .get(session)
            .map(|record| facts_of(record))
    }

    /// Calls `visit` for each session, holding one shard's lock at a time.
    pub fn for_each(&self, mut visit: impl FnMut(&SessionId, SessionFacts)) {
        for shard in self.each_shard() {
            for (id, record) in shard.held.iter() {
                visit(id, facts_of(record));
            }
        }
    }

    /// The session's newest `recent` lines memory holds, its partial line,
    /// and the results whose bodies memory holds (see
    /// [`SessionStore::content_and_filed`] for the others).
    #[cfg(test)]
    pub fn content(&self, session: &SessionId, recent: usize) -> Option<SessionContent> {
        self.content_and_filed(session, recent)
            .map(|(content, _)| content)
    }

    /// [`SessionStore::content`], and the operations whose latest result
    /// is in the file only (`None` in the content): read them from there.
    pub fn content_and_filed(
        &self,
        session: &SessionId,
        recent: usize,
    ) -> Option<(SessionContent, Vec<Operation>)> {
        let shard = self.lock(session);
        let record = shard.held.get(session)?;
        let filed = record
            .results
            .iter()
            .filter(|(_, kept)| kept.as_ref().is_some_and(|k| k.held().is_none()))
            .map(|(op, _)| op)
            .collect();
        let skip = record.transcripts.len().saturating_sub(recent);
        let content = SessionContent {
            recent: record
                .transcripts
                .iter()
                .skip(skip)
                .map(HeldLine::to_stored)
                .collect(),
            partial: record.partial.clone(),
            results: OpMap::filled_with(|op| {
                record
                    .results
                    .get(op)?
                    .as_ref()
                    .and_then(|kept| kept.held().cloned())
            }),
            rejected: record.rejected.widened(),
        };
        Some((content, filed))
    }
}

fn facts_of(record: &SessionRecord) -> SessionFacts {
    SessionFacts {
        feed: record.feed,
        generation: record.generation,
        last_transcript_at: record.last_transcript_at,
        ended: record.ended,
        partial: record.partial.is_some(),
        lost: record.lost,
        over_budget: record.over_budget,
        budget_lifted: record.budget_lifted,
    }
}
