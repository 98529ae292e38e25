//! The newest runs of one `(session, operation)`, packed, with the
//! durations of a longer window kept sorted for the p95.
//!
//! Every held session keeps one history per operation, so a run's record
//! is most of what a busy session costs. A history holds the newest
//! [`RUNS_KEPT`] records (what the details pane lists and draws, and the
//! API's session detail gives), each packed: a [`RunRecord`] is 96 bytes, a
//! [`PastRun`] 64 (its cost included). The p95 is taken over the newest [`HISTORY_LEN`]
//! durations, four bytes each. Records are unpacked only when a view or the
//! database reads them. Every queue grows one run at a time: room doubled
//! ahead would be up to half empty.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::stats::{HISTORY_LEN, RunRecord};

/// Run records each history holds.
pub const RUNS_KEPT: usize = 16;
use crate::events::Outcome;
use crate::llm::Usage;

/// A finished run, as a history holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PastRun {
    run_id: u64,
    /// Microseconds since the Unix epoch.
    started_us: u64,
    duration_us: u64,
    waited_us: u64,
    /// [`NOT_COVERED`] when the run covered nothing.
    covered: u64,
    prompt_tokens: u32,
    completion_tokens: u32,
    cached_tokens: u32,
    /// In billionths of the prices' currency.
    cost: u64,
    outcome: Outcome,
    follow_up: bool,
}

const NOT_COVERED: u64 = u64::MAX;

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn tokens(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl PastRun {
    fn pack(run: &RunRecord) -> Self {
        Self {
            run_id: run.run_id,
            started_us: run
                .started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, micros),
            duration_us: micros(run.duration),
            waited_us: micros(run.waited),
            covered: run.covered_generation.unwrap_or(NOT_COVERED),
            prompt_tokens: tokens(run.usage.prompt_tokens),
            completion_tokens: tokens(run.usage.completion_tokens),
            cached_tokens: tokens(run.usage.cached_tokens),
            cost: run.usage.cost.0,
            outcome: run.outcome,
            follow_up: run.follow_up,
        }
    }

    fn unpack(&self) -> RunRecord {
        RunRecord {
            run_id: self.run_id,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_micros(self.started_us),
            duration: Duration::from_micros(self.duration_us),
            outcome: self.outcome,
            covered_generation: (self.covered != NOT_COVERED).then_some(self.covered),
            follow_up: self.follow_up,
            waited: Duration::from_micros(self.waited_us),
            usage: Usage {
                prompt_tokens: u64::from(self.prompt_tokens),
                completion_tokens: u64::from(self.completion_tokens),
                cached_tokens: u64::from(self.cached_tokens),
                cost: crate::spend::Cost(self.cost),
            },
        }
    }
}

/// The newest [`RUNS_KEPT`] runs, oldest first, and the newest
/// [`HISTORY_LEN`] durations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    runs: VecDeque<PastRun>,
    /// The newest durations in the order the runs ended, in microseconds
    /// (saturating at about 71 minutes): what leaves the window next.
    durations: VecDeque<u32>,
    /// The same durations, kept sorted by every finish, so the p95
    /// costs a lookup (snapshots read it for thousands of sessions many
    /// times a second, and a finish must stay cheap). In microseconds
    /// (saturating at about 71 minutes).
    sorted_durations: Vec<u32>,
}

fn window_micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl History {
    /// Adds the newest run, letting the oldest record go past
    /// [`RUNS_KEPT`] and the oldest duration past [`HISTORY_LEN`].
    pub(super) fn push(&mut self, run: &RunRecord) {
        if self.durations.len() == HISTORY_LEN
            && let Some(evicted) = self.durations.pop_front()
            && let Ok(at) = self.sorted_durations.binary_search(&evicted)
        {
            self.sorted_durations.remove(at);
        }
        let us = window_micros(run.duration);
        let at = self.sorted_durations.partition_point(|d| *d <= us);
        // At most HISTORY_LEN, so growing one at a time copies little.
        self.sorted_durations.reserve_exact(1);
        self.sorted_durations.insert(at, us);
        self.durations.reserve_exact(1);
        self.durations.push_back(us);
        if self.runs.len() == RUNS_KEPT {
            self.runs.pop_front();
        }
        self.runs.reserve_exact(1);
        self.runs.push_back(PastRun::pack(run));
    }

    /// The 95th percentile of the durations held (nearest rank).
    pub fn p95(&self) -> Option<Duration> {
        let n = self.sorted_durations.len();
        let rank = (n * 95).div_ceil(100).max(1);
        self.sorted_durations
            .get(rank - 1)
            .map(|us| Duration::from_micros(u64::from(*us)))
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs, oldest first, unpacked.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = RunRecord> + '_ {
        self.runs.iter().map(PastRun::unpack)
    }

    /// The runs, oldest first, unpacked.
    pub fn to_vec(&self) -> Vec<RunRecord> {
        self.iter().collect()
    }

    #[cfg(test)]
    pub(super) fn room(&self) -> (usize, usize, usize) {
        (
            self.runs.capacity(),
            self.durations.capacity(),
            self.sorted_durations.capacity(),
        )
    }

    #[cfg(test)]
    pub(super) fn sorted_durations(&self) -> &[u32] {
        &self.sorted_durations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reads_back_as_it_was_recorded() {
        let run = RunRecord {
            run_id: 9,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_765_000_000_654_321),
            duration: Duration::from_micros(1_500_250),
            outcome: Outcome::TimedOut,
            covered_generation: Some(12),
            follow_up: true,
            waited: Duration::from_millis(40),
            usage: Usage {
                prompt_tokens: 1234,
                completion_tokens: 56,
                cached_tokens: 1000,
                cost: crate::spend::Cost(987_654_321),
            },
        };
        let uncovered = RunRecord {
            covered_generation: None,
            outcome: Outcome::Cancelled,
            follow_up: false,
            ..run.clone()
        };
        let mut history = History::default();
        assert!(history.is_empty());
        history.push(&run);
        assert!(!history.is_empty());
        history.push(&uncovered);
        assert_eq!(history.to_vec(), [run, uncovered]);
        assert_eq!(std::mem::size_of::<PastRun>(), 64, "not 96");
    }
}
