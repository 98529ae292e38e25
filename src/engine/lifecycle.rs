//! A session's and the process's end: ending sessions that went silent,
//! forgetting ended ones after a while (so weeks of sessions do not pile
//! up in memory), and draining the runs in flight when the process stops.

use std::time::Duration;

use super::Engine;

/// How often idle sessions are ended and ended ones forgotten.
pub const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

/// What [`Engine::drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Runs in flight when the drain began.
    pub in_flight: usize,
    /// Of those (and their follow-ups), the ones stopped at the deadline.
    pub cancelled: usize,
}

impl Engine {
    /// Forgets sessions that ended longer than `after` ago and have no run
    /// in flight: their transcripts, results and statistics. Returns how
    /// many went. Keeps a long-running process's memory bounded by the
    /// sessions of the last `after`, not of its whole life.
    ///
    /// Each session goes in one step with both locks held (state, then
    /// store: the order finishes use), so a transcript arriving meanwhile
    /// either comes first and keeps the session live, or comes after and
    /// starts a new life of it; never half of each.
    pub fn forget_ended(&self, after: Duration) -> usize {
        let shared = &self.shared;
        let mut forgotten = 0;
        for session in shared.store.ended_before(after) {
            if shared.state.forget_if(&session, || {
                shared.store.forget_if_ended_before(&session, after)
            }) {
                if let Some(db) = shared.db.get() {
                    db.forgot(&session);
                }
                forgotten += 1;
            }
        }
        if forgotten > 0 {
            tracing::info!(
                sessions = forgotten,
                "forgot sessions that ended over {} ago",
                humantime::format_duration(after)
            );
        }
        forgotten
    }

    /// Ends the live sessions that said nothing for `idle_after`, as a
    /// `session_end` would: their final runs start. Feeds that never send
    /// an end (or crashed before it) leave no session live forever.
    pub fn end_idle(&self) -> usize {
        let idle = self.shared.store.idle();
        for session in &idle {
            self.end_session(session, None);
        }
        if !idle.is_empty() {
            tracing::info!(
                sessions = idle.len(),
                "ended sessions silent for {}",
                humantime::format_duration(self.shared.config.sessions.idle_after)
            );
        }
        idle.len()
    }

    /// Every [`HOUSEKEEPING_EVERY`] until `stop`: ends idle sessions,
    /// forgets those ended over `forget_after` ago, and lets go of the
    /// lines and result bodies the file holds of sessions gone silent; every
    /// [`crate::db::PRUNE_EVERY`], has the database delete what is past
    /// `--retain` (it does so at start too).
    pub async fn housekeeping(self, stop: tokio_util::sync::CancellationToken) {
        let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
        let prune_every = crate::db::PRUNE_EVERY;
        let mut prune =
            tokio::time::interval_at(tokio::time::Instant::now() + prune_every, prune_every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {
                    let slots = self.shared.backend.info().slots;
                    self.shared.permits.server_slots(slots.map(|n| n as usize));
                    self.end_idle();
                    self.forget_ended(self.shared.config.sessions.forget_after);
                    self.shared.store.settle();
                }
                _ = prune.tick() => {
                    if let Some(db) = self.shared.db.get() {
                        db.prune();
                    }
                }
            }
        }
    }

    /// Lets the runs in flight finish, for at most `within`; then stops the
    /// rest as cancelled ("the process is stopping") and waits for their
    /// tasks to end. Feeds should be stopped first, so no new work comes.
    pub async fn drain(&self, within: Duration) -> Drained {
        if let Some(tap) = self.shared.events.recording() {
            tap.record(crate::record::Record::Stop {
                at: tap.now(),
                drain_ms: within.as_millis() as u64,
            });
        }
        let runs = &self.shared.runs;
        let in_flight = self.snapshot().totals;
        let in_flight = (in_flight.running + in_flight.queued) as usize;
        runs.close();
        if tokio::time::timeout(within, runs.wait()).await.is_ok() {
            return Drained {
                in_flight,
                cancelled: 0,
            };
        }
        let cancelled = self.shared.state.stop_all("the process is stopping");
        self.shared.permits.forget_stopped();
        // A cancelled run ends at its next await; don't wait forever anyway.
        let _ = tokio::time::timeout(Duration::from_secs(5), runs.wait()).await;
        Drained {
            in_flight,
            cancelled,
        }
    }
}
