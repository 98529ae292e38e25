//! How runs end: their own finish (through the guard), the operator's
//! forced stop, and stopping everything at shutdown. Each end records the
//! run's statistics and tells the journal, inside the manager's lock; a
//! finish may hand the slot straight to a follow-up run.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::guard::{FinishOutcome, RunGuard};
use super::{
    InFlight, Journal, OpCounters, ProcessingStateManager, RunRecord, SessionEntry, Slot, Tables,
};
use crate::events::{Event, Outcome, RunId};
use crate::llm::Usage;
use crate::model::{Operation, SessionId};

impl ProcessingStateManager {
    /// The operator's forced stop: frees the slot now, cancels the run's token
    /// and records it as cancelled. The run's own finish will be stale.
    /// Returns the stopped run's id, or `None` when nothing was running.
    pub fn stop_processing(&self, session: &SessionId, op: Operation) -> Option<RunId> {
        self.stop_with(session, op, "stopped by the operator")
    }

    /// Stops every run in flight, saying why; returns how many it stopped.
    /// For a process that is going away.
    pub fn stop_all(&self, reason: &str) -> usize {
        let keys: Vec<(SessionId, Operation)> = {
            let tables = self.lock();
            tables
                .sessions
                .iter()
                .filter_map(|(id, entry)| Some((id, entry.in_flight.as_ref()?)))
                .flat_map(|(id, slots)| {
                    slots
                        .iter()
                        .filter(|(_, slot)| slot.is_some())
                        .map(|(op, _)| (id.clone(), op))
                })
                .collect()
        };
        keys.iter()
            .filter(|(session, op)| self.stop_with(session, *op, reason).is_some())
            .count()
    }

    fn stop_with(&self, session: &SessionId, op: Operation, reason: &str) -> Option<RunId> {
        let mut events = Vec::with_capacity(2);
        let run_id = {
            let mut tables = self.lock();
            let Tables {
                sessions,
                active,
                lifetime,
            } = &mut *tables;
            let entry = sessions.get_mut(session)?;
            let slot = take_slot(entry, active, session, op, &mut events)?;
            slot.cancel.cancel();
            let now = Instant::now();
            let duration = now.saturating_duration_since(slot.view.admitted);
            let error = reason.to_string();
            record_end(
                (entry, self.journal(), session),
                lifetime.entry(op),
                op,
                &slot.view,
                (now, duration, Usage::default()),
                Outcome::Cancelled,
                Some(error.clone()),
            );
            events.insert(
                0,
                Event::OpFinished {
                    session: session.clone(),
                    op,
                    run_id: slot.view.run_id,
                    duration,
                    outcome: Outcome::Cancelled,
                    error: Some(error),
                },
            );
            slot.view.run_id
        };
        for event in events {
            self.events.emit(event);
        }
        Some(run_id)
    }

    /// Ends a run (called by its guard). When the run's id is no longer the
    /// slot's, nothing changes and [`FinishOutcome::Stale`] is returned.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn end_run(
        self: &Arc<Self>,
        session: &SessionId,
        op: Operation,
        run_id: RunId,
        outcome: Outcome,
        error: Option<String>,
        usage: Usage,
        latest_generation: Option<&dyn Fn() -> u64>,
        notes: super::guard::RunNotes,
    ) -> FinishOutcome {
        let super::guard::RunNotes {
            retryable,
            nothing_new,
            truncated,
            kept,
        } = notes;
        let mut events = Vec::with_capacity(3);
        let result = {
            let mut tables = self.lock();
            let Tables {
                sessions,
                active,
                lifetime,
            } = &mut *tables;
            let lifetime = lifetime.entry(op);
            let Some(entry) = sessions.get_mut(session) else {
                return FinishOutcome::Stale;
            };
            let (failures_before, covered) = {
                let stats = entry.stats.entry(op);
                let before = stats.covered_generation.unwrap_or(0);
                // Steps kept before a failure count as covered (each kept
                // step showed so at once), and a run that kept a result got
                // further than the last: no failure in a row.
                match kept {
                    Some(kept) => {
                        stats.covered_generation = Some(kept.max(before));
                        stats.consecutive_failures = 0;
                        (0, kept.max(before))
                    }
                    _ => (stats.consecutive_failures, before),
                }
            };
            let Some(slot) = entry.slot_mut(op).filter(|slot| slot.view.run_id == run_id) else {
                return FinishOutcome::Stale;
            };
            // One clock read serves the duration and the permit wait.
            let now = Instant::now();
            let duration = now.saturating_duration_since(slot.view.admitted);
            events.push(Event::OpFinished {
                session: session.clone(),
                op,
                run_id,
                duration,
                outcome,
                error: error.clone(),
            });
            // The session's newest generation is asked for only when a
            // follow-up or a retry could come of it, and then once.
            let mut asked = None;
            let mut latest = || *asked.get_or_insert_with(|| latest_generation.map(|l| l()));
            let wants_follow_up = slot.view.pending
                && outcome != Outcome::Cancelled
                && latest().is_some_and(|l| l > slot.view.covered_generation.unwrap_or(0));
            // A failed call with transcripts left uncovered is run again,
            // up to `retries` runs in a row (this one counted).
            let failures = failures_before + 1;
            let wants_retry = retryable
                && matches!(outcome, Outcome::Failed | Outcome::TimedOut)
                && failures <= self.config.retries
                && latest().is_some_and(|l| l > covered);
            let (ended, result) = if wants_follow_up || wants_retry {
                // Hand the slot straight to the follow-up: no window in which
                // another request could slip in between.
                let mut next = self.new_slot(true);
                next.view.retry = wants_retry.then_some(failures);
                if let Some(journal) = self.journal() {
                    journal.admitted(session, op, &next.view);
                }
                let guard = RunGuard::new(self.clone(), session.clone(), op, &next);
                events.push(Event::OpQueued {
                    session: session.clone(),
                    op,
                    run_id: guard.run_id(),
                    follow_up: true,
                });
                let ended = std::mem::replace(slot, next);
                let stats = entry.stats.entry(op);
                if wants_retry {
                    stats.counts.count_retry();
                    lifetime.count_retry();
                } else {
                    stats.counts.count_admission(true);
                    lifetime.count_admission(true);
                }
                (ended, FinishOutcome::FollowUp(guard))
            } else {
                match take_slot(entry, active, session, op, &mut events) {
                    Some(ended) => (ended, FinishOutcome::Ended),
                    None => unreachable!("the slot was found just above"),
                }
            };
            if nothing_new {
                entry.stats.entry(op).counts.nothing_new += 1;
                lifetime.nothing_new += 1;
            }
            entry.stats.entry(op).counts.truncated += u64::from(truncated);
            lifetime.truncated += u64::from(truncated);
            record_end(
                (entry, self.journal(), session),
                lifetime,
                op,
                &ended.view,
                (now, duration, usage),
                outcome,
                error,
            );
            result
        };
        for event in events {
            self.events.emit(event);
        }
        result
    }
}

/// Removes the slot; removes the session's in-flight entry when it was the
/// last one, and says so with a `SessionCleaned` event.
fn take_slot(
    entry: &mut SessionEntry,
    active: &mut usize,
    session: &SessionId,
    op: Operation,
    events: &mut Vec<Event>,
) -> Option<Slot> {
    let slots = entry.in_flight.as_mut()?;
    let slot = slots.get_mut(op)?.take()?;
    if slots.values().all(Option::is_none) {
        entry.in_flight = None;
        *active -= 1;
        events.push(Event::SessionCleaned {
            session: session.clone(),
        });
    }
    Some(slot)
}

fn record_end(
    (entry, journal, session): (&mut SessionEntry, Option<&dyn Journal>, &SessionId),
    lifetime: &mut OpCounters,
    op: Operation,
    run: &InFlight,
    (now, duration, usage): (Instant, Duration, Usage),
    outcome: Outcome,
    error: Option<String>,
) {
    let record = RunRecord {
        run_id: run.run_id,
        started_at: run.since,
        duration,
        outcome,
        covered_generation: run.covered_generation,
        follow_up: run.follow_up,
        waited: run.waited_until(now),
        usage,
    };
    lifetime.count_end(&record);
    if let Some(journal) = journal {
        let skipped = entry.stats.entry(op).counts.skipped;
        journal.ended(session, op, &record, error.as_deref(), skipped);
    }
    entry.stats.entry(op).record(record, error);
}
