//! Per `(session, operation)` statistics that outlast the in-flight entries.

use std::time::{Duration, SystemTime};

pub use super::history::History;

use crate::events::{Outcome, RunId};
use crate::llm::Usage;

/// How many past runs' durations each `(session, op)` keeps for its p95
/// (and how many runs a restart reads back).
pub const HISTORY_LEN: usize = 32;

/// One finished run, for the history view and the duration sparkline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub run_id: RunId,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub outcome: Outcome,
    pub covered_generation: Option<u64>,
    pub follow_up: bool,
    /// Time spent waiting for an LLM permit (part of `duration`).
    pub waited: Duration,
    /// Tokens the run's calls cost.
    pub usage: Usage,
}

/// Counters and durations of one operation on one session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpStats {
    /// Runs, their ends, skips, tokens and permit waits.
    pub counts: OpCounters,
    pub last_duration: Option<Duration>,
    pub total_duration: Duration,
    /// The generation covered by the newest successful run.
    pub covered_generation: Option<u64>,
    /// Failures in a row since the last success.
    pub consecutive_failures: u32,
    /// The last error and failure: none until a run reports one, which
    /// most never do, so an operation that never failed keeps a pointer,
    /// not 48 bytes.
    failure: Option<Box<LastFailure>>,
    /// The newest runs, packed, with the durations for the p95.
    pub history: History,
}

/// What [`OpStats`] keeps of the errors its runs reported.
#[derive(Debug, Clone, Default, PartialEq)]
struct LastFailure {
    error: Option<String>,
    /// When the last failure (or timeout) ended.
    at: Option<SystemTime>,
    /// The runs in a row that failed with `error`, as it reads now.
    streak: u32,
}

/// The counts of one operation, that only grow: the one type behind a
/// session's statistics ([`OpStats::counts`]), the dashboard's rows and
/// totals, the API's operations (serialized flat, under these names) and
/// the process's lifetime counters, which outlive forgotten sessions and
/// are what Prometheus reports. A new counter is a field here.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct OpCounters {
    /// Runs admitted (follow-ups included).
    pub runs: u64,
    pub ok: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub cancelled: u64,
    /// Requests refused because a run was in flight.
    pub skipped: u64,
    /// Runs started by a pending flag when the previous run ended.
    pub follow_ups: u64,
    /// Runs started again because the one before failed or timed out with
    /// transcripts left uncovered (not counted in `follow_ups`).
    pub retries: u64,
    /// Runs that found nothing said since the result they would update,
    /// and so made no call (counted as `ok` too).
    pub nothing_new: u64,
    /// Answers the server cut at the token limit (`finish_reason:
    /// "length"`): kept, marked truncated.
    pub truncated: u64,
    /// Tokens the runs cost, in all.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Of the prompt tokens, those read from the server's cache.
    #[serde(default)]
    pub cached_tokens: u64,
    /// What the tokens cost at the price table, in the prices' currency
    /// (written as a number of it).
    #[serde(default, with = "crate::spend::units")]
    #[schema(value_type = f64)]
    pub cost: crate::spend::Cost,
    /// Time runs spent waiting for an LLM permit, in all.
    #[serde(rename = "permit_wait_seconds", with = "seconds")]
    #[schema(value_type = f64)]
    pub waited: Duration,
}

/// A duration as seconds in a float, as the API writes them.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Ok(Duration::try_from_secs_f64(secs).unwrap_or_default())
    }
}

impl OpCounters {
    /// Runs that ended, however.
    pub fn ended(&self) -> u64 {
        self.ok + self.failed + self.timed_out + self.cancelled
    }

    /// Failures of any kind (failed or timed out).
    pub fn failures(&self) -> u64 {
        self.failed + self.timed_out
    }

    /// The tokens, as a usage.
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self.cached_tokens,
            cost: self.cost,
        }
    }

    /// A run was admitted (a follow-up or not).
    pub(crate) fn count_admission(&mut self, follow_up: bool) {
        self.runs += 1;
        if follow_up {
            self.follow_ups += 1;
        }
    }

    /// A run was admitted to retry a failed one.
    pub(crate) fn count_retry(&mut self) {
        self.runs += 1;
        self.retries += 1;
    }

    pub fn finished(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Ok => self.ok,
            Outcome::Failed => self.failed,
            Outcome::TimedOut => self.timed_out,
            Outcome::Cancelled => self.cancelled,
        }
    }

    pub(crate) fn count_end(&mut self, record: &RunRecord) {
        match record.outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::TimedOut => self.timed_out += 1,
            Outcome::Cancelled => self.cancelled += 1,
        }
        self.prompt_tokens += record.usage.prompt_tokens;
        self.completion_tokens += record.usage.completion_tokens;
        self.cached_tokens += record.usage.cached_tokens;
        self.cost = self.cost.plus(record.usage.cost);
        self.waited += record.waited;
    }

    /// The sum of `self` and `other`, field by field.
    pub fn plus(self, other: OpCounters) -> OpCounters {
        OpCounters {
            runs: self.runs + other.runs,
            ok: self.ok + other.ok,
            failed: self.failed + other.failed,
            timed_out: self.timed_out + other.timed_out,
            cancelled: self.cancelled + other.cancelled,
            skipped: self.skipped + other.skipped,
            follow_ups: self.follow_ups + other.follow_ups,
            retries: self.retries + other.retries,
            nothing_new: self.nothing_new + other.nothing_new,
            truncated: self.truncated + other.truncated,
            prompt_tokens: self.prompt_tokens + other.prompt_tokens,
            completion_tokens: self.completion_tokens + other.completion_tokens,
            cached_tokens: self.cached_tokens + other.cached_tokens,
            cost: self.cost.plus(other.cost),
            waited: self.waited + other.waited,
        }
    }
}

impl OpStats {
    pub fn mean_duration(&self) -> Option<Duration> {
        let n = self.counts.ended();
        (n > 0).then(|| self.total_duration / n as u32)
    }

    /// The 95th percentile of the recent durations (nearest rank).
    pub fn p95_duration(&self) -> Option<Duration> {
        self.history.p95()
    }

    /// The last error a run reported.
    pub fn last_error(&self) -> Option<&str> {
        self.failure.as_ref()?.error.as_deref()
    }

    /// When the last failure (or timeout) ended.
    pub fn last_failure_at(&self) -> Option<SystemTime> {
        self.failure.as_ref()?.at
    }

    /// The runs in a row that failed with [`OpStats::last_error`], as it
    /// reads now (0 since a success).
    pub fn error_streak(&self) -> u32 {
        self.failure.as_ref().map_or(0, |failure| failure.streak)
    }

    pub(crate) fn record(&mut self, record: RunRecord, error: Option<String>) {
        self.counts.count_end(&record);
        match record.outcome {
            Outcome::Ok => {
                self.consecutive_failures = 0;
                if let Some(failure) = &mut self.failure {
                    failure.streak = 0;
                }
                if let Some(generation) = record.covered_generation {
                    self.covered_generation = Some(
                        self.covered_generation
                            .map_or(generation, |g| g.max(generation)),
                    );
                }
            }
            Outcome::Failed | Outcome::TimedOut | Outcome::Cancelled => {}
        }
        if matches!(record.outcome, Outcome::Failed | Outcome::TimedOut) {
            // Failures in a row end with a success, and also when a run
            // kept a result before it failed (the state manager clears
            // them then): the same error after either starts at 1.
            let in_a_row = self.consecutive_failures > 0;
            let failure = self.failure.get_or_insert_default();
            let same = in_a_row && error == failure.error;
            self.consecutive_failures += 1;
            failure.streak = if same { failure.streak + 1 } else { 1 };
            failure.at = Some(SystemTime::now());
        }
        if error.is_some() {
            self.failure.get_or_insert_default().error = error;
        }
        self.last_duration = Some(record.duration);
        self.total_duration += record.duration;
        self.history.push(&record);
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::RUNS_KEPT;
    use super::*;

    fn run(ms: u64, outcome: Outcome) -> RunRecord {
        RunRecord {
            run_id: 1,
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(ms),
            outcome,
            covered_generation: Some(ms),
            follow_up: false,
            waited: Duration::from_millis(1),
            usage: Usage {
                cached_tokens: 30,
                cost: crate::spend::Cost(1_500),
                ..Usage::tokens(100, 10)
            },
        }
    }

    #[test]
    fn durations_and_outcomes_are_summarised() {
        let mut stats = OpStats::default();
        for ms in 1..=20 {
            stats.record(run(ms * 10, Outcome::Ok), None);
        }
        assert_eq!(stats.counts.ok, 20);
        assert_eq!(stats.p95_duration(), Some(Duration::from_millis(190)));
        assert_eq!(stats.mean_duration(), Some(Duration::from_millis(105)));
        assert_eq!(stats.covered_generation, Some(200));
        assert_eq!(stats.counts.waited, Duration::from_millis(20));
        assert_eq!(
            (stats.counts.prompt_tokens, stats.counts.completion_tokens),
            (2000, 200)
        );
        assert_eq!(
            (stats.counts.cached_tokens, stats.counts.cost),
            (600, crate::spend::Cost(30_000)),
            "cached tokens and costs add up as tokens do"
        );

        stats.record(run(5, Outcome::Failed), Some("boom".into()));
        stats.record(run(5, Outcome::TimedOut), None);
        stats.record(run(5, Outcome::TimedOut), None);
        stats.record(run(5, Outcome::Cancelled), None);
        stats.record(run(5, Outcome::Cancelled), None);
        stats.record(run(5, Outcome::Cancelled), None);
        assert_eq!(
            (
                stats.counts.ok,
                stats.counts.failed,
                stats.counts.timed_out,
                stats.counts.cancelled
            ),
            (20, 1, 2, 3)
        );
        assert_eq!(stats.counts.ended(), 26, "every outcome counts once");
        // Cancelled runs are no failures of the model: 1 failed + 2 timed out.
        assert_eq!(stats.consecutive_failures, 3);
        assert_eq!(stats.last_error(), Some("boom"));
        // A failed run never lowers the covered generation.
        assert_eq!(stats.covered_generation, Some(200));
    }

    #[test]
    fn the_last_failure_is_kept_only_once_there_is_one() {
        let mut stats = OpStats::default();
        stats.record(run(5, Outcome::Ok), None);
        assert_eq!(stats.failure, None, "a success keeps nothing of errors");
        assert_eq!((stats.last_error(), stats.error_streak()), (None, 0));

        let before = SystemTime::now();
        stats.record(run(5, Outcome::Failed), Some("refused".into()));
        stats.record(run(5, Outcome::TimedOut), Some("refused".into()));
        assert_eq!(stats.last_error(), Some("refused"));
        assert_eq!((stats.error_streak(), stats.consecutive_failures), (2, 2));
        assert!(stats.last_failure_at().is_some_and(|at| at >= before));

        // Another error starts the streak again, not the failures in a row.
        stats.record(run(5, Outcome::Failed), Some("overloaded".into()));
        assert_eq!((stats.error_streak(), stats.consecutive_failures), (1, 3));
        let failed_at = stats.last_failure_at();
        // A cancelled run with an error keeps the error, not a failure.
        stats.record(run(5, Outcome::Cancelled), Some("stopped".into()));
        assert_eq!(stats.last_error(), Some("stopped"));
        assert_eq!(
            (stats.error_streak(), stats.last_failure_at()),
            (1, failed_at)
        );

        // A run that kept a result before it failed ends the failures in a
        // row (the state manager clears them): the same error starts over.
        stats.record(run(5, Outcome::Failed), Some("stopped".into()));
        assert_eq!(stats.error_streak(), 2);
        stats.consecutive_failures = 0;
        stats.record(run(5, Outcome::Failed), Some("stopped".into()));
        assert_eq!((stats.error_streak(), stats.consecutive_failures), (1, 1));

        // A success ends the streak; what the last error said stays.
        stats.record(run(5, Outcome::Ok), None);
        assert_eq!((stats.error_streak(), stats.consecutive_failures), (0, 0));
        assert_eq!(stats.last_error(), Some("stopped"));
        assert_eq!(std::mem::size_of::<OpStats>(), 216, "not 312");
    }

    #[test]
    fn p95_follows_the_window() {
        let mut stats = OpStats::default();
        for ms in (1..=100).rev() {
            stats.record(run(ms, Outcome::Ok), None);
        }
        // The window holds the last 32 runs: 32ms down to 1ms.
        let mut window: Vec<u64> = (1..=32).collect();
        window.sort_unstable();
        assert_eq!(
            stats.p95_duration(),
            Some(Duration::from_millis(window[30]))
        );
        assert_eq!(stats.history.sorted_durations().len(), HISTORY_LEN);
        assert!(stats.history.sorted_durations().is_sorted());
    }

    #[test]
    fn the_p95_looks_further_back_than_the_records_kept() {
        let mut stats = OpStats::default();
        for _ in 0..RUNS_KEPT {
            stats.record(run(500, Outcome::Ok), None);
        }
        for _ in 0..RUNS_KEPT {
            stats.record(run(1, Outcome::Ok), None);
        }
        assert!(stats.history.iter().all(|r| r.duration.as_millis() == 1));
        assert_eq!(stats.p95_duration(), Some(Duration::from_millis(500)));
        // Once the window has moved past them, the slow runs are gone.
        for _ in 0..RUNS_KEPT {
            stats.record(run(1, Outcome::Ok), None);
        }
        assert_eq!(stats.p95_duration(), Some(Duration::from_millis(1)));
    }

    #[test]
    fn history_is_bounded() {
        let mut stats = OpStats::default();
        for _ in 0..(HISTORY_LEN * 3) {
            stats.record(run(1, Outcome::Ok), None);
        }
        assert_eq!(stats.history.len(), RUNS_KEPT);
        assert_eq!(stats.counts.ended(), (HISTORY_LEN * 3) as u64);
        assert_eq!(
            stats.history.room(),
            2 * HISTORY_LEN + RUNS_KEPT * 16,
            "never more room than that"
        );
    }

    #[test]
    fn a_young_history_keeps_no_empty_room() {
        // Every session keeps one per operation: room doubled ahead would
        // be up to half empty (20 runs took room for 32).
        let mut stats = OpStats::default();
        for n in 1..=20 {
            stats.record(run(n, Outcome::Ok), None);
        }
        assert_eq!(stats.history.room(), 2 * 20 + RUNS_KEPT * 16);
    }
}
