//! The processing state manager: which `(session, operation)` has a run in
//! flight, and the one atomic step that decides whether another may start.
//!
//! This is the original system's `ProcessingStateManager`, made safe under
//! concurrency:
//!
//! - [`ProcessingStateManager::try_start`] checks and claims a slot in one
//!   critical section and always answers: [`Admission::Started`] with a
//!   [`RunGuard`], or [`Admission::Busy`] saying which run holds the slot.
//! - The guard ends the run. Dropping it (a panic, an aborted task) ends the
//!   run as `cancelled`, so nothing stays "processing".
//! - Every run has a [`RunId`] that only grows. A finish whose id is no longer
//!   the slot's (after a forced stop) changes nothing: a fencing token.
//! - A session with no run left loses its in-flight entry (the original
//!   automatic cleanup) and a `SessionCleaned` event is sent. Statistics are
//!   kept apart and outlast it.
//! - Under [`Policy::Coalesce`], a refused request leaves a pending flag; when
//!   the run ends and the session has moved past what the run covered, the
//!   slot passes straight to one follow-up run, inside the same lock.
//!
//! One `std::sync::Mutex` guards the maps: every critical section is a few
//! map operations and never crosses an `.await`.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the tables, admission (`try_start`), phases |
//! | `ending.rs` | finishes, forced stops, follow-ups, recording an end |
//! | `reads.rs` | status, views, snapshots' visits, lifetime counters, forgetting |
//! | `guard.rs` | the run guard |
//! | `cancel.rs` | a run's stop signal |
//! | `stats.rs` | the counters and durations of an operation |
//! | [`status`] | the original status JSON |

mod cancel;
mod ending;
mod guard;
mod history;
mod reads;
pub(crate) mod stats;
pub mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

pub use cancel::RunCancel;
pub use guard::{FinishOutcome, RunGuard, RunNotes};
pub use reads::SessionOps;
pub use stats::{OpCounters, OpStats, RunRecord};
pub use status::{ProcessingStatus, StatusResponse};

use crate::events::{Event, EventBus, RunId};
use crate::model::{Operation, SessionId};
use crate::ops::OpMap;

/// Sessions visited per lock by [`ProcessingStateManager::visit_sessions`].
pub const VISIT_CHUNK: usize = 512;

/// What to do with a request that finds its operation already running.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Drop it, count it, log it: the original behaviour.
    Skip,
    /// Count it as skipped and remember one follow-up run for when the
    /// current run ends.
    #[default]
    Coalesce,
}

/// The answer to "may this op start now for this session?".
#[derive(Debug)]
pub enum Admission {
    /// The slot is yours; the guard ends the run.
    Started(RunGuard),
    /// Another run holds the slot. `pending` tells whether a follow-up will run.
    Busy {
        run_id: RunId,
        since: SystemTime,
        pending: bool,
    },
}

/// Waiting for an LLM permit, or calling the LLM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    Queued,
    Running,
}

/// A run in flight, as views see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InFlight {
    pub run_id: RunId,
    pub phase: Phase,
    /// Wall-clock admission time (the original start time).
    pub since: SystemTime,
    /// Monotonic admission time, for durations.
    #[serde(with = "crate::monotime")]
    pub admitted: Instant,
    /// When the run last began waiting for a permit.
    #[serde(with = "crate::monotime")]
    pub queued_since: Instant,
    /// Time spent waiting for permits before the current phase.
    pub waited: Duration,
    /// When the current LLM call began (running only).
    #[serde(with = "crate::monotime::option")]
    pub started: Option<Instant>,
    /// When the current call is given up as timed out: `--op-timeout`
    /// after it began. Waiting for a permit never counts.
    #[serde(with = "crate::monotime::option")]
    pub deadline: Option<Instant>,
    pub pending: bool,
    pub follow_up: bool,
    pub covered_generation: Option<u64>,
    /// With several instances: the one whose run this is (this instance's
    /// own name once it holds the lease, another's while that one runs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// A retry of a failed run: which one (1 for the first). It waits its
    /// backoff as queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u32>,
}

/// One operation of one session: its run in flight, if any, and its statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpView {
    pub in_flight: Option<InFlight>,
    pub stats: OpStats,
}

#[derive(Debug)]
struct Slot {
    view: InFlight,
    cancel: RunCancel,
}

type Slots = OpMap<Option<Slot>>;

/// Everything the manager knows about one session.
#[derive(Default)]
struct SessionEntry {
    /// The in-flight entry: present while at least one run is in flight,
    /// removed when the last one ends (the original automatic cleanup).
    in_flight: Option<Slots>,
    /// Statistics, kept for as long as the process runs.
    stats: OpMap<OpStats>,
}

impl SessionEntry {
    fn slot(&self, op: Operation) -> Option<&Slot> {
        self.in_flight
            .as_ref()
            .and_then(|slots| slots.get(op)?.as_ref())
    }

    fn slot_mut(&mut self, op: Operation) -> Option<&mut Slot> {
        self.in_flight
            .as_mut()
            .and_then(|slots| slots.get_mut(op)?.as_mut())
    }
}

/// One map, so an admission and a finish each hash the session id once.
#[derive(Default)]
struct Tables {
    sessions: HashMap<SessionId, SessionEntry>,
    /// Sessions whose in-flight entry is present.
    active: usize,
    /// Per operation, since the process started; outlives every session.
    lifetime: OpMap<OpCounters>,
}

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct StateConfig {
    pub policy: OpMap<Policy>,
    /// How long one LLM call may take, from the moment it starts.
    pub op_timeout: Duration,
    /// Runs in a row that may fail (or time out) while the session has
    /// transcripts no result covers, each then run again (a retry, on the
    /// follow-up's path); past them the operation is left stale.
    pub retries: u32,
}

/// Retries of a failed run, by default.
pub const DEFAULT_RETRIES: u32 = 5;

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            policy: OpMap::new(),
            op_timeout: Duration::from_secs(300),
            retries: DEFAULT_RETRIES,
        }
    }
}

/// Told of every admission and finished run, from inside the manager's
/// lock (so in the order they happened): it must not block. Skips are told
/// as a running count with each end, not one by one (there can be far more
/// of them than runs). The database implements it.
pub trait Journal: Send + Sync {
    fn admitted(&self, session: &SessionId, op: Operation, run: &InFlight);
    /// `skipped`: the operation's skip count on this session so far.
    fn ended(
        &self,
        session: &SessionId,
        op: Operation,
        record: &RunRecord,
        error: Option<&str>,
        skipped: u64,
    );
}

/// Tracks runs in flight per `(session, op)`; see the module docs.
pub struct ProcessingStateManager {
    tables: Mutex<Tables>,
    next_run_id: AtomicU64,
    config: StateConfig,
    events: EventBus,
    journal: std::sync::OnceLock<Arc<dyn Journal>>,
}

impl ProcessingStateManager {
    pub fn new(config: StateConfig, events: EventBus) -> Arc<Self> {
        Arc::new(Self {
            tables: Mutex::new(Tables::default()),
            next_run_id: AtomicU64::new(1),
            config,
            events,
            journal: std::sync::OnceLock::new(),
        })
    }

    /// Writes every admission, end and skip to `journal` from now on (once).
    pub fn set_journal(&self, journal: Arc<dyn Journal>) {
        let _ = self.journal.set(journal);
    }

    /// Run ids continue from `next` (after a restart, past every stored one).
    pub fn continue_run_ids_from(&self, next: RunId) {
        self.next_run_id.fetch_max(next, Ordering::Relaxed);
    }

    /// Puts back a session's statistics read from disk (before it runs).
    pub fn restore_stats(&self, session: &SessionId, stats: OpMap<OpStats>) {
        let mut tables = self.lock();
        tables.sessions.entry(session.clone()).or_default().stats = stats;
    }

    /// A run id of this process for something that did not run here (a
    /// result another instance made): ids keep the order things happened
    /// in here, which the database's fencing of results relies on.
    pub fn take_run_id(&self) -> RunId {
        self.next_run_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A result covering `generation` arrived from elsewhere (another
    /// instance): the operation is as fresh as if a run here had made it.
    /// Only a session the manager already knows is touched.
    pub fn note_covered(&self, session: &SessionId, op: Operation, generation: u64) {
        let mut tables = self.lock();
        if let Some(entry) = tables.sessions.get_mut(session) {
            let covered = &mut entry.stats.entry(op).covered_generation;
            if covered.is_none_or(|c| c < generation) {
                *covered = Some(generation);
            }
        }
    }

    fn journal(&self) -> Option<&dyn Journal> {
        self.journal.get().map(|j| j.as_ref())
    }

    pub fn policy(&self, op: Operation) -> Policy {
        self.config.policy.get(op).copied().unwrap_or_default()
    }

    pub fn op_timeout(&self) -> Duration {
        self.config.op_timeout
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic never happens inside these short sections; if one did, the
        // maps are still consistent, so carry on rather than poison everything.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_slot(&self, follow_up: bool) -> Slot {
        let admitted = Instant::now();
        Slot {
            view: InFlight {
                run_id: self.next_run_id.fetch_add(1, Ordering::Relaxed),
                phase: Phase::Queued,
                since: SystemTime::now(),
                admitted,
                queued_since: admitted,
                waited: Duration::ZERO,
                started: None,
                deadline: None,
                pending: false,
                follow_up,
                covered_generation: None,
                instance: None,
                retry: None,
            },
            cancel: RunCancel::new(),
        }
    }

    /// Checks and claims the `(session, op)` slot in one step.
    pub fn try_start(self: &Arc<Self>, session: &SessionId, op: Operation) -> Admission {
        let policy = self.policy(op);
        let (admission, event) = self.admit_locked(&mut self.lock(), session, op, policy);
        self.events.emit(event);
        admission
    }

    /// [`try_start`](Self::try_start), unless `holds` (asked under the
    /// manager's lock, as [`forget_if`](Self::forget_if) asks its own)
    /// says the session is gone: then nothing is admitted, counted or
    /// made. A run asked for by a session's end or an operator cannot
    /// then start for a session forgotten meanwhile, and leave statistics
    /// that nothing forgets.
    #[inline(always)]
    pub fn try_start_if(
        self: &Arc<Self>,
        session: &SessionId,
        op: Operation,
        holds: impl FnOnce() -> bool,
    ) -> Option<Admission> {
        let policy = self.policy(op);
        let (admission, event) = {
            let mut tables = self.lock();
            if !holds() {
                return None;
            }
            self.admit_locked(&mut tables, session, op, policy)
        };
        self.events.emit(event);
        Some(admission)
    }

    /// The admission itself, under the manager's lock: claims the slot or
    /// counts the skip, and says what to tell listeners once the lock is
    /// let go.
    #[inline(always)]
    fn admit_locked(
        self: &Arc<Self>,
        tables: &mut Tables,
        session: &SessionId,
        op: Operation,
        policy: Policy,
    ) -> (Admission, Event) {
        let Tables {
            sessions,
            active,
            lifetime,
        } = tables;
        let lifetime = lifetime.entry(op);
        // Look up first so the common case clones no key.
        let entry = match sessions.get_mut(session) {
            Some(entry) => entry,
            None => sessions.entry(session.clone()).or_default(),
        };
        let SessionEntry { in_flight, stats } = entry;
        let op_stats = stats.entry(op);
        let slots = in_flight.get_or_insert_with(|| {
            *active += 1;
            Default::default()
        });
        match slots.entry(op) {
            Some(slot) => {
                if policy == Policy::Coalesce {
                    slot.view.pending = true;
                }
                op_stats.counts.skipped += 1;
                lifetime.skipped += 1;

                let (run_id, since, pending) =
                    (slot.view.run_id, slot.view.since, slot.view.pending);
                (
                    Admission::Busy {
                        run_id,
                        since,
                        pending,
                    },
                    Event::OpSkipped {
                        session: session.clone(),
                        op,
                        running_run_id: run_id,
                        since,
                        pending,
                    },
                )
            }
            empty @ None => {
                let slot = self.new_slot(false);
                if let Some(journal) = self.journal() {
                    journal.admitted(session, op, &slot.view);
                }
                let guard = RunGuard::new(self.clone(), session.clone(), op, &slot);
                let run_id = slot.view.run_id;
                *empty = Some(slot);
                op_stats.counts.count_admission(false);
                lifetime.count_admission(false);
                (
                    Admission::Started(guard),
                    Event::OpQueued {
                        session: session.clone(),
                        op,
                        run_id,
                        follow_up: false,
                    },
                )
            }
        }
    }

    fn set_phase(
        &self,
        session: &SessionId,
        op: Operation,
        run_id: RunId,
        f: impl FnOnce(&mut InFlight),
    ) -> bool {
        let mut tables = self.lock();
        match tables
            .sessions
            .get_mut(session)
            .and_then(|entry| entry.slot_mut(op))
        {
            Some(slot) if slot.view.run_id == run_id => {
                f(&mut slot.view);
                true
            }
            _ => false,
        }
    }

    /// A step of the run `run_id` kept a result covering `generation`: the
    /// operation shows covered that far at once, before the run ends (a
    /// backlog's catch-up takes many steps).
    fn advance_covered(&self, session: &SessionId, op: Operation, run_id: RunId, generation: u64) {
        let mut tables = self.lock();
        let Some(entry) = tables.sessions.get_mut(session) else {
            return;
        };
        if entry
            .slot_mut(op)
            .is_none_or(|slot| slot.view.run_id != run_id)
        {
            return;
        }
        let stats = entry.stats.entry(op);
        stats.covered_generation = Some(
            stats
                .covered_generation
                .map_or(generation, |g| g.max(generation)),
        );
    }

    /// Sessions that currently hold an in-flight entry.
    pub fn in_flight_sessions(&self) -> usize {
        self.lock().active
    }
}

impl InFlight {
    /// Permit wait so far, counting the current wait if queued now.
    pub fn waited_until(&self, now: Instant) -> Duration {
        match self.phase {
            Phase::Queued => self.waited + now.saturating_duration_since(self.queued_since),
            Phase::Running => self.waited,
        }
    }
}
