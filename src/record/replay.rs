//! A recording fed through today's engine, and the two outcomes compared.
//!
//! The engine runs on a paused clock: the recorded transcripts and session
//! ends arrive at their recorded times, and each LLM call is answered with
//! the recorded answer after as long as it took ([`ReplayBackend`]). Time
//! jumps from one thing to the next, so minutes replay in well under a
//! second. Run with the recorded settings, the engine makes the same runs:
//! where the recording's timing leaves a tie the replay's engine would
//! break its own way (a line within a millisecond of a run's start or
//! end), it follows the recording (see [`ReplayBackend::following`] and
//! `ties`). Run with others (`--llm-concurrency`, `--min-interval`,
//! `--on-busy`), it shows what they would have done.
//!
//! Both sides are counted by one [`Tally`]: per session and operation, the
//! runs that ended, the requests skipped, and the generation the newest
//! result covers, up to the recording's last moment or to just before the
//! process began to stop. A recording that goes on past a `stop` (a process
//! started again, appending) is replayed up to the stop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::{Reading, Record, ReplayBackend, Settings};
use crate::engine::{Engine, EngineConfig};
use crate::model::{Operation, SessionId};
use crate::state::{Policy, StateConfig};

/// What a replay changes from the recorded settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplaySettings {
    pub llm_concurrency: Option<usize>,
    pub min_interval: Option<Duration>,
    pub on_busy: Option<Policy>,
}

/// One (session, operation)'s outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Runs that ended, however they ended.
    pub runs: u64,
    /// Runs that ended failed or timed out.
    pub failed: u64,
    /// Requests that met a run in flight.
    pub skips: u64,
    /// The generation the newest result covers.
    pub covered: u64,
}

/// Outcomes per session and operation, and each session's final lines.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tally {
    pub ops: BTreeMap<(SessionId, Operation), Outcome>,
    pub lines: BTreeMap<SessionId, u64>,
}

impl Tally {
    /// Counts one record.
    pub fn add(&mut self, record: &Record) {
        use crate::events::Outcome as Ended;
        match record {
            Record::Transcript { line, .. } if line.is_final => {
                *self.lines.entry(line.session.clone()).or_default() += 1;
            }
            Record::Finished {
                session,
                op,
                outcome,
                ..
            } => {
                let o = self.ops.entry((session.clone(), *op)).or_default();
                o.runs += 1;
                if matches!(outcome, Ended::Failed | Ended::TimedOut) {
                    o.failed += 1;
                }
            }
            Record::Skipped { session, op, n, .. } => {
                self.ops.entry((session.clone(), *op)).or_default().skips += n;
            }
            Record::Result {
                session,
                op,
                covered,
                ..
            } => {
                let o = self.ops.entry((session.clone(), *op)).or_default();
                o.covered = o.covered.max(*covered);
            }
            _ => {}
        }
    }

    /// Sessions whose newest result of some operation does not cover all
    /// their lines at the end.
    pub fn stale(&self) -> usize {
        self.lines
            .iter()
            .filter(|(session, lines)| {
                self.ops
                    .iter()
                    .filter(|((s, _), _)| s == *session)
                    .any(|(_, o)| o.covered < **lines)
            })
            .count()
    }

    fn sum(&self, of: impl Fn(&Outcome) -> u64) -> u64 {
        self.ops.values().map(of).sum()
    }
}

/// Something the replay did differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub session: SessionId,
    pub op: Operation,
    /// `runs`, `failed`, `skips` or `covered`.
    pub what: &'static str,
    pub recorded: u64,
    pub replayed: u64,
}

/// The two outcomes side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub identical: bool,
    pub differences: Vec<Difference>,
    /// The settings the replay ran with, and what it changed.
    pub settings: Settings,
    pub changed: Vec<String>,
    pub recorded_seconds: f64,
    pub wall_seconds: f64,
    /// Recorded seconds replayed per wall second.
    pub speed: f64,
    /// Replayed calls the recording had no call for (answered with the
    /// pair's last answer).
    pub made_up_calls: u64,
    /// Events the tally missed because it fell behind (0 unless the
    /// replay was too big for the event buffer).
    pub missed_events: u64,
    /// Where the recording stopped being readable, if it did.
    pub damage: Option<String>,
    pub recorded: Totals,
    pub replayed: Totals,
    #[serde(skip)]
    pub recorded_tally: Tally,
    #[serde(skip)]
    pub replayed_tally: Tally,
}

/// One side's sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub sessions: usize,
    pub runs: u64,
    pub failed: u64,
    pub skips: u64,
    pub stale_sessions: usize,
}

impl Totals {
    fn of(tally: &Tally) -> Self {
        Self {
            sessions: tally.lines.len(),
            runs: tally.sum(|o| o.runs),
            failed: tally.sum(|o| o.failed),
            skips: tally.sum(|o| o.skips),
            stale_sessions: tally.stale(),
        }
    }
}

fn config_of(settings: &Settings) -> EngineConfig {
    let mut policy = crate::ops::OpMap::new();
    for (op, name) in &settings.on_busy {
        *policy.entry(*op) = if name == "skip" {
            Policy::Skip
        } else {
            Policy::Coalesce
        };
    }
    EngineConfig {
        state: StateConfig {
            policy,
            op_timeout: Duration::from_millis(settings.op_timeout_ms),
            retries: settings.retries,
        },
        llm_concurrency: settings.llm_concurrency.max(1),
        incremental: settings.incremental,
        min_interval: Duration::from_millis(settings.min_interval_ms),
        automatic_ops: settings.automatic_ops.clone(),
        end_ops: settings.end_ops.clone(),
        retry_backoff: Duration::from_millis(settings.retry_backoff_ms),
        ..EngineConfig::default()
    }
}

/// The recorded settings with the replay's changes, and the changes in
/// words.
fn apply(recorded: &Settings, changes: &ReplaySettings) -> (Settings, Vec<String>) {
    let mut settings = recorded.clone();
    let mut changed = Vec::new();
    if let Some(n) = changes.llm_concurrency
        && n != settings.llm_concurrency
    {
        changed.push(format!(
            "llm_concurrency {} → {n}",
            settings.llm_concurrency
        ));
        settings.llm_concurrency = n;
    }
    if let Some(d) = changes.min_interval {
        let ms = d.as_millis() as u64;
        if ms != settings.min_interval_ms {
            changed.push(format!(
                "min_interval {}ms → {ms}ms",
                settings.min_interval_ms
            ));
            settings.min_interval_ms = ms;
        }
    }
    if let Some(policy) = changes.on_busy {
        let name = match policy {
            Policy::Skip => "skip",
            Policy::Coalesce => "coalesce",
        };
        for (op, was) in &mut settings.on_busy {
            if was != name {
                changed.push(format!("on_busy {op} {was} → {name}"));
                *was = name.to_string();
            }
        }
    }
    (settings, changed)
}

/// The clock's tick, in microseconds: timers fire on whole milliseconds.
const TICK_US: u64 = 1_000;

/// Turns given to the engine's tasks woken in the same tick as a line (so
/// a run starting then reads what it read in the recording), or as the
/// moment a replay is counted to.
const YIELDS: usize = 16;

/// Gives the engine's tasks woken on this tick their turns first.
async fn let_the_engine_run() {
    for _ in 0..YIELDS {
        tokio::task::yield_now().await;
    }
}

/// The engine driven by a recording on a paused clock: it takes each
/// recorded transcript, session end and stop at its recorded time, as far
/// as it is asked to go. Both the comparison and the dashboard's replay
/// drive one.
pub struct Sim {
    records: Arc<[(u64, Record)]>,
    next: usize,
    engine: Engine,
    backend: Arc<ReplayBackend>,
    /// Follows the recording where its timing leaves a tie.
    as_recorded: bool,
    start: Instant,
    at: u64,
    events: tokio::sync::broadcast::Receiver<crate::events::Event>,
    /// The replay's own outcome so far.
    pub tally: Tally,
    pub missed_events: u64,
}

impl Sim {
    /// An engine with `settings`, at the recording's start; call it on a
    /// runtime whose clock is paused. With the recorded settings (`as_recorded`),
    /// runs meet lines at near-ties as they did in the recording (see
    /// `ties`).
    pub fn new(records: Arc<[(u64, Record)]>, settings: &Settings, as_recorded: bool) -> Self {
        let start = Instant::now();
        let mut backend = ReplayBackend::new(records.iter().map(|(_, r)| r));
        if as_recorded {
            let holds = super::ties::holds(records.iter().map(|(_, r)| r), settings);
            backend = backend.following(holds, start);
        }
        let backend = Arc::new(backend);
        let engine = Engine::new(config_of(settings), backend.clone());
        let events = engine.subscribe();
        Self {
            records,
            next: 0,
            engine,
            backend,
            as_recorded,
            start,
            at: 0,
            events,
            tally: Tally::default(),
            missed_events: 0,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Where it is, in microseconds of the recording.
    pub fn at(&self) -> u64 {
        self.at
    }

    /// The time of the next record after where it is, if any.
    pub fn next_at(&self) -> Option<u64> {
        self.records[self.next..]
            .iter()
            .map(|(at, _)| *at)
            .find(|at| *at > self.at)
    }

    /// Plays the recording up to `to` microseconds (never back).
    pub async fn advance_to(&mut self, to: u64) {
        while let Some((at, record)) = self.records.get(self.next) {
            if *at > to {
                break;
            }
            self.next += 1;
            let when = self.start + Duration::from_micros(*at);
            match record {
                Record::Transcript { feed, line, .. } => {
                    tokio::time::sleep_until(when).await;
                    if self.as_recorded && self.started_just_before(self.next - 1) {
                        // The line came a moment after a run of its session
                        // started, and the run did not read it: within the
                        // clock's tick here, so the run goes first.
                        let_the_engine_run().await;
                    }
                    self.tally.add(record);
                    self.engine.ingest(line.transcript(), *feed);
                }
                Record::End { feed, session, .. } => {
                    tokio::time::sleep_until(when).await;
                    self.engine.end_session(session, *feed);
                }
                Record::Stop { drain_ms, .. } => {
                    tokio::time::sleep_until(when).await;
                    self.engine.drain(Duration::from_millis(*drain_ms)).await;
                }
                _ => continue,
            }
            self.missed_events += drain(&mut self.events, &mut self.tally);
        }
        if to > self.at {
            tokio::time::sleep_until(self.start + Duration::from_micros(to)).await;
            self.at = to;
        }
        if self.as_recorded {
            // What else is due on this tick happens before it is counted.
            let_the_engine_run().await;
        }
        self.missed_events += drain(&mut self.events, &mut self.tally);
    }

    /// Whether, in the recording, a run of the session of the line at
    /// `index` started less than a tick of the clock before the line came.
    fn started_just_before(&self, index: usize) -> bool {
        let (at, Record::Transcript { line, .. }) = &self.records[index] else {
            return false;
        };
        self.records[..index]
            .iter()
            .rev()
            .take_while(|(earlier, _)| at.saturating_sub(*earlier) < TICK_US)
            .any(|(_, record)| {
                matches!(record, Record::Started { session, .. } if *session == line.session)
            })
    }

    /// Stops what still runs: a replay left for another.
    pub async fn stop(&self) {
        self.engine.drain(Duration::ZERO).await;
    }
}

/// Replays `reading` through the engine with `changes`. Call it on a
/// runtime whose clock is paused (`inflight replay` makes one), or it
/// takes as long as the recording did.
pub async fn replay(reading: &Reading, changes: &ReplaySettings) -> Comparison {
    let wall = std::time::Instant::now();
    let (settings, changed) = apply(&reading.settings, changes);
    let records: Arc<[(u64, Record)]> = reading.first_run().into();
    // Both sides are counted up to the recording's last moment (a run it
    // saw start but not end is not counted as ended in the replay either),
    // or, when the process stopped, to just before it began to: what runs
    // while a process drains depends on how long its feeds took to close.
    // Both ends are on a tick of the clock: the replay's events land on
    // ticks (a recorded moment rounded up), so each side then counts the
    // same moments.
    let stop = records.iter().find_map(|(at, r)| match r {
        Record::Stop { .. } => Some(at.saturating_sub(1) / TICK_US * TICK_US),
        _ => None,
    });
    let until = stop.unwrap_or_else(|| super::length(&records).div_ceil(TICK_US) * TICK_US);
    let mut recorded = Tally::default();
    for (at, record) in records.iter() {
        if *at <= until {
            recorded.add(record);
        }
    }
    let mut sim = Sim::new(records.clone(), &settings, changed.is_empty());
    sim.advance_to(until).await;
    let made_up = sim.backend.made_up();
    compare(
        reading,
        recorded,
        std::mem::take(&mut sim.tally),
        settings,
        changed,
        made_up,
        sim.missed_events,
        wall.elapsed(),
    )
}

/// Counts the engine's events so far; answers how many it missed.
fn drain(
    events: &mut tokio::sync::broadcast::Receiver<crate::events::Event>,
    tally: &mut Tally,
) -> u64 {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut missed = 0;
    loop {
        match events.try_recv() {
            Ok(event) => {
                if let Some(record) = Record::of_event(0, &event) {
                    tally.add(&record);
                }
            }
            Err(TryRecvError::Lagged(n)) => missed += n,
            Err(TryRecvError::Empty | TryRecvError::Closed) => return missed,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn compare(
    reading: &Reading,
    recorded: Tally,
    replayed: Tally,
    settings: Settings,
    changed: Vec<String>,
    made_up_calls: u64,
    missed_events: u64,
    wall: Duration,
) -> Comparison {
    let mut differences = Vec::new();
    let keys: std::collections::BTreeSet<_> =
        recorded.ops.keys().chain(replayed.ops.keys()).collect();
    for key in keys {
        let a = recorded.ops.get(key).copied().unwrap_or_default();
        let b = replayed.ops.get(key).copied().unwrap_or_default();
        for (what, x, y) in [
            ("runs", a.runs, b.runs),
            ("failed", a.failed, b.failed),
            ("skips", a.skips, b.skips),
            ("covered", a.covered, b.covered),
        ] {
            if x != y {
                differences.push(Difference {
                    session: key.0.clone(),
                    op: key.1,
                    what,
                    recorded: x,
                    replayed: y,
                });
            }
        }
    }
    let recorded_seconds = reading.length_us() as f64 / 1e6;
    let wall_seconds = wall.as_secs_f64();
    Comparison {
        identical: differences.is_empty(),
        differences,
        settings,
        changed,
        recorded_seconds,
        wall_seconds,
        speed: recorded_seconds / wall_seconds.max(1e-6),
        made_up_calls,
        missed_events,
        damage: reading.damage.as_ref().map(ToString::to_string),
        recorded: Totals::of(&recorded),
        replayed: Totals::of(&replayed),
        recorded_tally: recorded,
        replayed_tally: replayed,
    }
}
