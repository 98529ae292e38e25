//! Per `(session, operation)` statistics that outlast the in-flight entries.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::events::{Outcome, RunId};
use crate::llm::Usage;

/// How many past runs each `(session, op)` keeps for its history and p95.
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
    pub last_duration: Option<Duration>,
    pub total_duration: Duration,
    /// Time runs spent waiting for an LLM permit, in all.
    pub total_wait: Duration,
    /// Tokens spent, in all.
    pub usage: Usage,
    pub last_error: Option<String>,
    /// When the last failure (or timeout) ended.
    pub last_failure_at: Option<std::time::SystemTime>,
    /// The runs in a row that failed with `last_error`, as it reads now.
    pub error_streak: u32,
    /// The generation covered by the newest successful run.
    pub covered_generation: Option<u64>,
    /// Failures in a row since the last success.
    pub consecutive_failures: u32,
    pub history: VecDeque<RunRecord>,
    /// The durations of `history`, kept sorted by every finish, so the p95
    /// costs a lookup (snapshots read it for thousands of sessions many
    /// times a second, and a finish must stay cheap).
    /// In microseconds (saturating at about 71 minutes): four bytes a run
    /// keep the window in two cache lines.
    sorted_durations: Vec<u32>,
}

/// Counts of one operation that only grow, kept for the whole process
/// apart from the sessions: forgetting a session never makes them fall,
/// so they are what Prometheus counters report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpCounters {
    pub runs: u64,
    pub ok: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub cancelled: u64,
    pub skipped: u64,
    pub follow_ups: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Time runs spent waiting for an LLM permit.
    pub waited: Duration,
}

impl OpCounters {
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
            prompt_tokens: self.prompt_tokens + other.prompt_tokens,
            completion_tokens: self.completion_tokens + other.completion_tokens,
            waited: self.waited + other.waited,
        }
    }
}

impl OpStats {
    pub fn finished(&self) -> u64 {
        self.ok + self.failed + self.timed_out + self.cancelled
    }

    pub fn mean_duration(&self) -> Option<Duration> {
        let n = self.finished();
        (n > 0).then(|| self.total_duration / n as u32)
    }

    /// The 95th percentile of the recent durations (nearest rank).
    pub fn p95_duration(&self) -> Option<Duration> {
        let n = self.sorted_durations.len();
        let rank = (n * 95).div_ceil(100).max(1);
        self.sorted_durations
            .get(rank - 1)
            .map(|us| Duration::from_micros(u64::from(*us)))
    }

    pub(crate) fn record(&mut self, record: RunRecord, error: Option<String>) {
        match record.outcome {
            Outcome::Ok => {
                self.ok += 1;
                self.consecutive_failures = 0;
                self.error_streak = 0;
                if let Some(generation) = record.covered_generation {
                    self.covered_generation = Some(
                        self.covered_generation
                            .map_or(generation, |g| g.max(generation)),
                    );
                }
            }
            Outcome::Failed => self.failed += 1,
            Outcome::TimedOut => self.timed_out += 1,
            Outcome::Cancelled => self.cancelled += 1,
        }
        if matches!(record.outcome, Outcome::Failed | Outcome::TimedOut) {
            let same = self.consecutive_failures > 0 && error == self.last_error;
            self.consecutive_failures += 1;
            self.error_streak = if same { self.error_streak + 1 } else { 1 };
            self.last_failure_at = Some(std::time::SystemTime::now());
        }
        if error.is_some() {
            self.last_error = error;
        }
        self.last_duration = Some(record.duration);
        self.total_duration += record.duration;
        self.total_wait += record.waited;
        self.usage = self.usage.plus(record.usage);
        if self.history.len() == HISTORY_LEN
            && let Some(evicted) = self.history.pop_front()
            && let Ok(at) = self
                .sorted_durations
                .binary_search(&micros(evicted.duration))
        {
            self.sorted_durations.remove(at);
        }
        let us = micros(record.duration);
        let at = self.sorted_durations.partition_point(|d| *d <= us);
        self.sorted_durations.insert(at, us);
        self.history.push_back(record);
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
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
                prompt_tokens: 100,
                completion_tokens: 10,
            },
        }
    }

    #[test]
    fn durations_and_outcomes_are_summarised() {
        let mut stats = OpStats::default();
        for ms in 1..=20 {
            stats.record(run(ms * 10, Outcome::Ok), None);
        }
        assert_eq!(stats.ok, 20);
        assert_eq!(stats.p95_duration(), Some(Duration::from_millis(190)));
        assert_eq!(stats.mean_duration(), Some(Duration::from_millis(105)));
        assert_eq!(stats.covered_generation, Some(200));
        assert_eq!(stats.total_wait, Duration::from_millis(20));
        assert_eq!(
            (stats.usage.prompt_tokens, stats.usage.completion_tokens),
            (2000, 200)
        );

        stats.record(run(5, Outcome::Failed), Some("boom".into()));
        stats.record(run(5, Outcome::TimedOut), None);
        stats.record(run(5, Outcome::TimedOut), None);
        stats.record(run(5, Outcome::Cancelled), None);
        stats.record(run(5, Outcome::Cancelled), None);
        stats.record(run(5, Outcome::Cancelled), None);
        assert_eq!(
            (stats.ok, stats.failed, stats.timed_out, stats.cancelled),
            (20, 1, 2, 3)
        );
        assert_eq!(stats.finished(), 26, "every outcome counts once");
        // Cancelled runs are no failures of the model: 1 failed + 2 timed out.
        assert_eq!(stats.consecutive_failures, 3);
        assert_eq!(stats.last_error.as_deref(), Some("boom"));
        // A failed run never lowers the covered generation.
        assert_eq!(stats.covered_generation, Some(200));
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
        assert_eq!(stats.sorted_durations.len(), HISTORY_LEN);
        assert!(stats.sorted_durations.is_sorted());
    }

    #[test]
    fn history_is_bounded() {
        let mut stats = OpStats::default();
        for _ in 0..(HISTORY_LEN * 3) {
            stats.record(run(1, Outcome::Ok), None);
        }
        assert_eq!(stats.history.len(), HISTORY_LEN);
        assert_eq!(stats.finished(), (HISTORY_LEN * 3) as u64);
    }
}
