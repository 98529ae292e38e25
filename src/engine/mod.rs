//! The engine: transcripts in, runs scheduled, results and events out.
//!
//! [`Engine`] is a cheap handle (an `Arc`) that feeds, the API and the
//! dashboard share. It owns the session store, the processing state manager,
//! the LLM backend with its global permit cap, the feed registry and the
//! event bus.
//!
//! Scheduling rules: a new final transcript requests every automatic
//! operation of its session, each on its own (a slow mind map never holds up
//! summaries); a `session_end` requests one last run of each so the final
//! results cover the whole session; partial transcripts only move the live
//! line. A request goes through [`ProcessingStateManager::try_start`]; when
//! admitted, the runner (`runner.rs`) carries the run on its own task.

mod attention;
mod budget;
mod coordinator;
mod deliveries;
mod durable;
mod failure;
pub mod feeds;
mod forgotten;
pub mod freshness;
mod lease;
mod lifecycle;
pub mod permits;
mod progress;
mod readiness;
mod remote;
mod runner;
pub(crate) mod snapshot;
pub(crate) mod store;
mod tally;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use tokio::time::Instant;

pub use attention::{Attention, SILENT_AFTER, attention};
pub use budget::BudgetChange;
pub use deliveries::{DbRecord, NoRecord};
pub use durable::detail_from_disk;
pub use failure::short_cause;
pub use feeds::{FeedRegistry, FeedState, FeedStatus, FeedView};
pub use lease::ClusterCounts;
pub use lifecycle::{Drained, HOUSEKEEPING_EVERY};
pub use readiness::Readiness;
pub use snapshot::{ClusterView, DbView, OpRow, SessionDetail, SessionRow, Snapshot, Totals};
pub use store::{Appended, OpResult, ResultBody, SessionContent, SessionLimits, StoredTranscript};
pub use tally::SessionTally;

use crate::events::{Event, EventBus, RunId};
use crate::llm::Backend;
use crate::model::{Operation, SessionId, Transcript};
use crate::state::{Admission, ProcessingStateManager, ProcessingStatus, StateConfig};
use permits::Permits;
use progress::ProgressBoard;
use store::SessionStore;

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub state: StateConfig,
    /// Most LLM calls at once, across all sessions.
    pub llm_concurrency: usize,
    /// Results build on the previous result (`true`) or re-read everything.
    pub incremental: bool,
    /// A follow-up starts no sooner than this after the previous run of its
    /// `(session, op)` started (0: at once).
    pub min_interval: Duration,
    /// Operations requested by every new final transcript.
    pub automatic_ops: Vec<Operation>,
    /// Operations requested once more when a session ends (the automatic
    /// ones and those that run only then).
    pub end_ops: Vec<Operation>,
    /// How many sessions are held, and for how long.
    pub sessions: SessionLimits,
    /// The wait before the first retry of a failed run; it doubles each
    /// retry after, up to [`MAX_RETRY_BACKOFF`], with up to a quarter more
    /// at random so that sessions failing together do not retry together.
    pub retry_backoff: Duration,
    /// What tokens cost, per model (the config file's `[[prices]]`).
    pub prices: Arc<crate::spend::Prices>,
    /// What the work may spend (`[budgets]`).
    pub budgets: crate::spend::Budgets,
}

/// The longest wait before a retry.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);
/// The first retry's wait, by default.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(2);

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            state: StateConfig::default(),
            llm_concurrency: 4,
            incremental: true,
            min_interval: Duration::ZERO,
            automatic_ops: crate::ops::registry().ops().collect(),
            end_ops: crate::ops::registry().ops().collect(),
            sessions: SessionLimits::default(),
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            prices: Arc::default(),
            budgets: Default::default(),
        }
    }
}

/// The answer to a request for a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TriggerAnswer {
    Started {
        run_id: RunId,
    },
    /// A run is in flight; one follow-up will run after it (coalesce).
    Pending {
        running_run_id: RunId,
        since: SystemTime,
    },
    /// A run is in flight; the request was dropped (skip).
    Skipped {
        running_run_id: RunId,
        since: SystemTime,
    },
    /// A budget that covers the session is spent: nothing started.
    OverBudget {
        budget: crate::spend::Budget,
    },
}

struct Shared {
    config: EngineConfig,
    state: Arc<ProcessingStateManager>,
    store: SessionStore,
    backend: Arc<dyn Backend>,
    permits: Permits,
    progress: ProgressBoard,
    feeds: FeedRegistry,
    events: EventBus,
    started_at: Instant,
    /// New sessions refused because the store was full, from any source.
    refused_sessions: std::sync::atomic::AtomicU64,
    /// Final transcripts taken in since start, forgotten sessions' too.
    transcripts: std::sync::atomic::AtomicU64,
    /// Every run's task, so a stop can wait for them.
    runs: tokio_util::task::TaskTracker,
    /// Where everything is written down, when there is a database.
    db: std::sync::OnceLock<crate::db::Db>,
    /// The other instances, when there is a cluster (`--redis`).
    cluster: std::sync::OnceLock<lease::ClusterLink>,
    /// The user's receivers of results, when the config file has some.
    webhooks: std::sync::OnceLock<Arc<crate::webhooks::Webhooks>>,
    /// Some operation runs only for some kinds of session: admissions
    /// look the session's kind up (none do, by default).
    kinds_matter: bool,
    /// Models that answered with no price in the table, each warned of once.
    unpriced: crate::spend::Unpriced,
    /// The budgets and the hourly spending held against them.
    ledger: crate::spend::Ledger,
    /// How long each operation's calls have been taking.
    call_times: freshness::CallTimes,
}

/// A handle on the engine; clone it freely.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl Engine {
    pub fn new(config: EngineConfig, backend: Arc<dyn Backend>) -> Self {
        let events = EventBus::new();
        events
            .tap()
            .set_settings(crate::record::Settings::of(&config));
        // Every call passes the tap, which records it while something
        // records.
        let backend: Arc<dyn Backend> = Arc::new(crate::record::RecordingBackend::new(
            backend,
            events.tap().clone(),
        ));
        let state = ProcessingStateManager::new(config.state.clone(), events.clone());
        let mut store = SessionStore::new(config.sessions).tracking(&config.end_ops);
        if !config.incremental {
            store = store.rereading(crate::llm::prompts::MAX_TRANSCRIPT_CHARS);
        }
        let registry = crate::ops::registry();
        let kinds_matter = config
            .end_ops
            .iter()
            .any(|op| registry.def(*op).is_some_and(|d| !d.kinds.is_empty()));
        let ledger = crate::spend::Ledger::new(config.budgets);
        Self {
            shared: Arc::new(Shared {
                permits: Permits::new(config.llm_concurrency),
                config,
                state,
                store,
                backend,
                progress: ProgressBoard::default(),
                feeds: FeedRegistry::default(),
                events,
                started_at: Instant::now(),
                refused_sessions: Default::default(),
                transcripts: Default::default(),
                runs: tokio_util::task::TaskTracker::new(),
                db: std::sync::OnceLock::new(),
                cluster: std::sync::OnceLock::new(),
                webhooks: std::sync::OnceLock::new(),
                kinds_matter,
                unpriced: Default::default(),
                ledger,
                call_times: Default::default(),
            }),
        }
    }

    /// Takes in one transcript; a new final one requests the automatic ops.
    pub fn ingest(&self, transcript: Transcript, feed: Option<usize>) -> Appended {
        self.take_in(transcript, feed, None)
    }

    /// Takes in one transcript from a feed and counts it on the feed's status
    /// before anyone hears of it: a view that sees the transcript's event
    /// also sees it counted.
    pub fn ingest_from(&self, transcript: Transcript, feed: &FeedStatus) -> Appended {
        self.take_in(transcript, Some(feed.index), Some(feed))
    }

    fn take_in(
        &self,
        transcript: Transcript,
        feed: Option<usize>,
        status: Option<&FeedStatus>,
    ) -> Appended {
        let session = transcript.session_id.clone();
        if let Some(tap) = self.shared.events.recording() {
            tap.record(crate::record::Record::Transcript {
                at: tap.now(),
                feed,
                line: crate::record::Line::of(&transcript),
            });
        }
        let kept = durable::keep_for_db(&self.shared, &transcript);
        // Read before the line goes in: see `admit`.
        let forgets = self.shared.store.forgets();
        let appended = self.shared.store.append(transcript, feed);
        if let Some(status) = status {
            status.count(&appended);
        }
        match appended {
            Appended::Duplicate => {}
            Appended::Refused => self.note_refused(&session, feed),
            Appended::Partial { generation } | Appended::Final { generation } => {
                let is_final = matches!(appended, Appended::Final { .. });
                if is_final {
                    self.shared
                        .transcripts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    durable::write_transcript(&self.shared, kept, feed, generation);
                }
                self.shared.events.emit(Event::TranscriptReceived {
                    session: session.clone(),
                    generation,
                    is_final,
                });
                if is_final {
                    let kind = self.kind_of(&session);
                    for op in &self.shared.config.automatic_ops {
                        if self.runs_for(*op, kind.as_deref()) {
                            self.admit(&session, *op, Some(forgets));
                        }
                    }
                }
            }
        }
        appended
    }

    /// The session's kind, when some operation cares.
    fn kind_of(&self, session: &SessionId) -> Option<String> {
        self.shared
            .kinds_matter
            .then(|| self.shared.store.kind(session))
            .flatten()
    }

    /// Whether `op` runs by itself for a session of `kind`.
    fn runs_for(&self, op: Operation, kind: Option<&str>) -> bool {
        !self.shared.kinds_matter
            || crate::ops::registry()
                .def(op)
                .is_none_or(|d| d.runs_for(kind))
    }

    /// Counts a session refused for lack of room; logs the first few, then
    /// every power of ten, so a flood of new ids cannot flood the log.
    fn note_refused(&self, session: &SessionId, feed: Option<usize>) {
        use std::sync::atomic::Ordering;
        let n = self.shared.refused_sessions.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 3 || crate::text::is_power_of_ten(n) {
            tracing::warn!(
                session_id = %session,
                feed,
                refused = n,
                max_sessions = self.shared.config.sessions.max_sessions,
                "new session refused: the store is full (--max-sessions)"
            );
        }
    }

    /// New sessions refused so far because the store was full.
    pub fn refused_sessions(&self) -> u64 {
        self.shared
            .refused_sessions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The session ended: one last run of every operation.
    pub fn end_session(&self, session: &SessionId, feed: Option<usize>) {
        if let Some(tap) = self.shared.events.recording() {
            tap.record(crate::record::Record::End {
                at: tap.now(),
                feed,
                session: session.clone(),
            });
        }
        if self.shared.store.end(session, feed) {
            durable::write_ended(&self.shared, session);
            deliveries::session_ended(&self.shared, session);
            let kind = self.kind_of(session);
            for op in &self.shared.config.end_ops {
                if self.runs_for(*op, kind.as_deref()) {
                    // Ended: a forget may take it before its runs start.
                    self.admit(session, *op, None);
                }
            }
        }
    }

    /// Asks for a run of `op` now: the operator's trigger, from the
    /// dashboard or the API. Only a session the engine holds can be
    /// triggered; for any other the answer is `None` and no LLM is called
    /// (a trigger must not make sessions, nor spend the model on nothing).
    pub fn request(&self, session: &SessionId, op: Operation) -> Option<TriggerAnswer> {
        // Unknown before over budget (an API's 404, not its 429); the
        // check under the lock below covers a forget meanwhile.
        if !self.shared.store.contains(session) {
            return None;
        }
        self.admit(session, op, None)
    }

    /// Asks the state manager for a run of `op`; starts it when admitted.
    /// A spent budget that covers the session admits nothing.
    ///
    /// The session may be gone by now: ended (by silence, an operator, or
    /// another source while this one spoke) and forgotten by housekeeping.
    /// The store is asked under the state manager's lock, as a forget
    /// asks, so nothing starts or is counted for a session gone (`None`).
    /// `held_at` is the store's count of forgets at a moment the session
    /// was surely held (before its line went in): while the count has not
    /// moved, the store's own lock is not taken.
    fn admit(
        &self,
        session: &SessionId,
        op: Operation,
        held_at: Option<u64>,
    ) -> Option<TriggerAnswer> {
        if let Some(budget) = budget::over(&self.shared, session, None) {
            return Some(TriggerAnswer::OverBudget { budget });
        }
        let store = &self.shared.store;
        let admission = self.shared.state.try_start_if(session, op, || {
            held_at == Some(store.forgets()) || store.contains(session)
        })?;
        Some(self.carry_out(admission))
    }

    /// Starts an admitted run; says what became of the ask.
    fn carry_out(&self, admission: Admission) -> TriggerAnswer {
        match admission {
            Admission::Started(guard) => {
                let run_id = guard.run_id();
                runner::enqueue(self.shared.clone(), guard);
                TriggerAnswer::Started { run_id }
            }
            Admission::Busy {
                run_id,
                since,
                pending: true,
            } => TriggerAnswer::Pending {
                running_run_id: run_id,
                since,
            },
            Admission::Busy {
                run_id,
                since,
                pending: false,
            } => TriggerAnswer::Skipped {
                running_run_id: run_id,
                since,
            },
        }
    }

    /// Runs waiting for an LLM permit now.
    pub fn permits_waiting(&self) -> usize {
        self.shared.permits.waiting()
    }

    /// Stops the run of `op` on `session`; `None` when none was in flight.
    pub fn cancel(&self, session: &SessionId, op: Operation) -> Option<RunId> {
        let stopped = self.shared.state.stop_processing(session, op)?;
        // A run stopped while it waited for a permit leaves the queue now.
        self.shared.permits.forget_stopped();
        Some(stopped)
    }

    /// The original processing status of one session (`state::status`).
    pub fn status(&self, session: &SessionId) -> ProcessingStatus {
        self.shared.state.status(session)
    }

    pub fn state(&self) -> &Arc<ProcessingStateManager> {
        &self.shared.state
    }

    pub fn feeds(&self) -> &FeedRegistry {
        &self.shared.feeds
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    pub fn backend_info(&self) -> crate::llm::BackendInfo {
        self.shared.backend.info()
    }

    /// The latest result of `op` for `session`. With a database, one whose
    /// body memory let go is read back from the file (a short blocking
    /// read; a file that cannot be read gives `None`, and is logged).
    pub fn result(&self, session: &SessionId, op: Operation) -> Option<OpResult> {
        match self.shared.store.result(session, op)? {
            store::Latest::Held(result) => Some(result),
            store::Latest::InFile => durable::result_from(&self.shared, session, op)
                .ok()
                .flatten(),
        }
    }

    /// Whether the engine holds the session.
    pub fn holds(&self, session: &SessionId) -> bool {
        self.shared.store.contains(session)
    }

    /// The feed that last spoke for the session.
    pub fn feed_of(&self, session: &SessionId) -> Option<usize> {
        self.shared.store.feed_of(session)
    }

    /// Where feed `feed` should resume: the last `seq` of each session it
    /// last spoke for that the engine still holds.
    pub fn resume_points(&self, feed: usize) -> std::collections::BTreeMap<String, u64> {
        self.shared.store.resume_points(feed)
    }

    /// The session's newest generation (0 when unknown).
    pub fn generation(&self, session: &SessionId) -> u64 {
        self.shared.store.generation(session)
    }

    /// True when no run is in flight anywhere.
    pub fn is_idle(&self) -> bool {
        self.shared.state.in_flight_sessions() == 0
    }

    /// `--op-timeout`: how long an LLM call may take from its start.
    pub fn op_timeout(&self) -> Duration {
        self.shared.config.state.op_timeout
    }

    pub fn uptime(&self) -> Duration {
        self.shared.started_at.elapsed()
    }

    /// A copy of everything the views show.
    pub fn snapshot(&self) -> Snapshot {
        let shared = &self.shared;
        let mut sessions = Vec::with_capacity(shared.store.len());
        shared
            .store
            .for_each(|id, facts| sessions.push(SessionRow::from_facts(id.clone(), facts)));
        self.fill_ops(&mut sessions);
        sessions.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        self.snapshot_of(sessions)
    }

    /// What a `/metrics` scrape reads: a snapshot without session rows
    /// (`sessions` empty, so its `totals` count no session's runs; only
    /// `totals.transcripts` means anything), and the held sessions added up
    /// in their place.
    pub fn scrape(&self) -> (Snapshot, SessionTally) {
        let shared = &self.shared;
        let ops: Vec<Operation> = crate::ops::registry().ops().collect();
        let mut tally = SessionTally::new(ops, shared.store.len());
        let mut held: Vec<(SessionId, u64)> = Vec::with_capacity(shared.store.len());
        shared.store.for_each(|id, facts| {
            if let Some(budget) = facts.over_budget {
                tally.stopped_by(budget);
            }
            held.push((id.clone(), facts.generation));
        });
        held.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        shared.state.visit_sessions(
            &mut held,
            |(id, _)| id,
            |(_, transcripts), views| {
                for i in 0..tally.ops.len() {
                    let (in_flight, stats) = views.get(tally.ops[i]);
                    let stale = snapshot::is_stale(
                        in_flight.is_some(),
                        stats.consecutive_failures,
                        stats.covered_generation,
                        *transcripts,
                    );
                    let tokens = [stats.counts.prompt_tokens, stats.counts.completion_tokens];
                    tally.add(i, in_flight.map(|run| run.phase), stale, tokens);
                }
            },
        );
        tally.ids = held.into_iter().map(|(id, _)| id).collect();
        (self.snapshot_of(Vec::new()), tally)
    }

    fn snapshot_of(&self, sessions: Vec<SessionRow>) -> Snapshot {
        let shared = &self.shared;
        let lifetime = shared.state.lifetime();
        Snapshot {
            taken_at: Instant::now(),
            uptime: self.uptime(),
            backend: shared.backend.info(),
            permits_in_use: shared.permits.in_use(),
            permits_cap: shared.permits.capacity(),
            permits_limit: shared.permits.limit(),
            policy: shared.config.state.policy.clone(),
            operations: crate::ops::registry().defs().to_vec(),
            op_timeout: shared.config.state.op_timeout,
            feeds: shared.feeds.views(),
            totals: snapshot::totals(
                &sessions,
                &lifetime,
                shared
                    .transcripts
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            lifetime,
            sessions,
            max_sessions: shared.config.sessions.max_sessions,
            refused_sessions: self.refused_sessions(),
            db: shared.db.get().map(snapshot::DbView::of),
            cluster: self.cluster_view(),
            webhooks: self.webhook_views(),
            currency: shared.config.prices.currency().to_string(),
        }
    }

    /// Fills each row's operations from the state manager (one lock) and
    /// the running calls' token rates.
    fn fill_ops(&self, rows: &mut [SessionRow]) {
        self.shared.state.visit_sessions(
            rows,
            |row| &row.id,
            |row, views| {
                let mut ops = crate::ops::OpMap::new();
                for op in crate::ops::registry().ops() {
                    let (in_flight, stats) = views.get(op);
                    *ops.entry(op) = OpRow::new(in_flight, stats);
                }
                row.ops = ops;
            },
        );
        let places = self.shared.permits.places();
        let waiting = self.shared.permits.waiting();
        let now = Instant::now();
        let permits = self.shared.permits.limit();
        let calls: Vec<(Operation, Option<Duration>)> = crate::ops::registry()
            .ops()
            .map(|op| (op, self.shared.call_times.typical(op)))
            .collect();
        for row in rows.iter_mut() {
            let (transcripts, over_budget) = (row.transcripts, row.over_budget.is_some());
            for (op, row_op) in row.ops.iter_mut() {
                if let Some(run) = &row_op.in_flight {
                    row_op.tokens = self.shared.progress.rate(run.run_id);
                }
                let place = row_op
                    .in_flight
                    .as_ref()
                    .and_then(|run| places.get(&run.run_id).copied());
                let call = calls.iter().find(|(o, _)| *o == op).and_then(|(_, c)| *c);
                let queue = freshness::Queue {
                    permits,
                    call,
                    waiting,
                    now,
                };
                row_op.fresh = freshness::estimate(row_op, transcripts, over_budget, place, queue);
            }
        }
    }

    /// Final transcripts the session holds in memory, covered or not.
    pub fn lines_held(&self, session: &SessionId) -> Option<usize> {
        self.shared.store.lines_held(session)
    }

    /// Whether memory holds the body of `op`'s latest result (with a
    /// database it leaves once the file holds it); `None` when the session
    /// has no result of `op`.
    pub fn result_held(&self, session: &SessionId, op: Operation) -> Option<bool> {
        self.shared.store.result_held(session, op)
    }

    /// One session in full: its row, recent transcripts, results and history.
    /// Every session the state manager knows is in the store (feeds and
    /// triggers both list it), so the store decides what is known.
    /// With a database, the covered lines memory let go are read back from
    /// the file: blocking, call it from a blocking task there.
    pub fn session_detail(&self, session: &SessionId, recent: usize) -> Option<SessionDetail> {
        let shared = &self.shared;
        let facts = shared.store.facts(session)?;
        let newest = facts.generation;
        let mut rows = [SessionRow::from_facts(session.clone(), facts)];
        let (mut content, filed) = shared.store.content_and_filed(session, recent)?;
        durable::read_back_lines(shared, session, newest, &mut content, recent);
        durable::read_back_results(shared, session, &filed, &mut content);
        self.fill_ops(&mut rows);
        let [row] = rows;
        Some(SessionDetail {
            row,
            content,
            history: crate::ops::OpMap::filled_with(|op| {
                shared.state.op_view(session, op).stats.history.to_vec()
            }),
        })
    }
}
