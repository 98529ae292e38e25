//! The newest runs of one `(session, operation)`, packed, with the
//! durations of a longer window kept sorted for the p95.
//!
//! Every held session keeps one history per operation, so a run's record
//! is most of what a busy session costs. A history holds the newest
//! [`RUNS_KEPT`] records (what the details pane lists and draws, and the
//! API's session detail gives), each packed: a [`RunRecord`] is 96 bytes, a
//! [`PastRun`] 64 (its cost included). The p95 is taken over the newest [`HISTORY_LEN`]
//! durations, four bytes each. Records are unpacked only when a view or the
//! database reads them. Runs and durations share one allocation, grown one
//! run at a time: room doubled ahead would be up to half empty.

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

// A full window of durations means the runs are full too: a history in
// place never has fewer runs than it keeps.
const _: () = assert!(RUNS_KEPT <= HISTORY_LEN);

/// The words of one [`PastRun`] in a history's block.
const RUN_WORDS: usize = 16;

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A 64-bit number as two words, low first.
fn split(n: u64) -> [u32; 2] {
    [n as u32, (n >> 32) as u32]
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

    /// The run as [`RUN_WORDS`] words: each 64-bit field low word first,
    /// the outcome and the follow-up flag in the last.
    fn to_words(self) -> [u32; RUN_WORDS] {
        let [a, b] = split(self.run_id);
        let [c, d] = split(self.started_us);
        let [e, f] = split(self.duration_us);
        let [g, h] = split(self.waited_us);
        let [i, j] = split(self.covered);
        let [k, l] = split(self.cost);
        let outcome = match self.outcome {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::Cancelled => 2,
            Outcome::TimedOut => 3,
        };
        let flags = outcome | u32::from(self.follow_up) << 8;
        let (m, n, o) = (
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
        );
        [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, flags]
    }

    /// The run [`PastRun::to_words`] wrote; `words` holds [`RUN_WORDS`].
    fn from_words(words: &[u32]) -> Self {
        let at = |i: usize| u64::from(words[i]) | u64::from(words[i + 1]) << 32;
        let flags = words[15];
        Self {
            run_id: at(0),
            started_us: at(2),
            duration_us: at(4),
            waited_us: at(6),
            covered: at(8),
            cost: at(10),
            prompt_tokens: words[12],
            completion_tokens: words[13],
            cached_tokens: words[14],
            outcome: match flags & 0xff {
                0 => Outcome::Ok,
                1 => Outcome::Failed,
                2 => Outcome::Cancelled,
                _ => Outcome::TimedOut,
            },
            follow_up: flags >> 8 & 1 == 1,
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
/// [`HISTORY_LEN`] durations, in one allocation of the exact size.
///
/// The block holds, in order: the durations in the order the runs ended
/// (what leaves the window next), the same durations sorted (so the p95
/// costs a lookup: snapshots read it for thousands of sessions many times a
/// second, and a finish must stay cheap), then the runs, [`RUN_WORDS`]
/// words each. Durations are in microseconds, saturating at about 71
/// minutes. Three queues took three allocations and 88 bytes beside them;
/// this is one and 24. Once full, a run is added in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    words: Box<[u32]>,
    durations: u8,
    runs: u8,
}

fn window_micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl History {
    /// Adds the newest run, letting the oldest record go past
    /// [`RUNS_KEPT`] and the oldest duration past [`HISTORY_LEN`].
    pub(super) fn push(&mut self, run: &RunRecord) {
        let us = window_micros(run.duration);
        let packed = PastRun::pack(run).to_words();
        let (d, r) = (usize::from(self.durations), usize::from(self.runs));
        if d == HISTORY_LEN {
            // Full, runs too (there are fewer of them): in place.
            let (order, rest) = self.words.split_at_mut(d);
            let (sorted, runs) = rest.split_at_mut(d);
            let evicted = order[0];
            order.copy_within(1.., 0);
            order[d - 1] = us;
            replace_sorted(sorted, evicted, us);
            runs.copy_within(RUN_WORDS.., 0);
            runs[(r - 1) * RUN_WORDS..].copy_from_slice(&packed);
            return;
        }
        // One duration more; one run more, or the oldest run goes.
        let new_r = (r + 1).min(RUNS_KEPT);
        let mut words = Vec::with_capacity(2 * (d + 1) + new_r * RUN_WORDS);
        words.extend_from_slice(self.order());
        words.push(us);
        words.extend_from_slice(self.sorted());
        words.push(0);
        insert_sorted(&mut words[d + 1..], us);
        words.extend_from_slice(&self.run_words()[(r + 1 - new_r) * RUN_WORDS..]);
        words.extend_from_slice(&packed);
        self.words = words.into_boxed_slice();
        // Both are at most HISTORY_LEN, well within a byte.
        (self.durations, self.runs) = ((d + 1) as u8, new_r as u8);
    }

    /// The durations in the order the runs ended.
    fn order(&self) -> &[u32] {
        &self.words[..usize::from(self.durations)]
    }

    /// The durations, sorted.
    fn sorted(&self) -> &[u32] {
        let d = usize::from(self.durations);
        &self.words[d..2 * d]
    }

    fn run_words(&self) -> &[u32] {
        &self.words[2 * usize::from(self.durations)..]
    }

    /// The 95th percentile of the durations held (nearest rank).
    pub fn p95(&self) -> Option<Duration> {
        let sorted = self.sorted();
        let rank = (sorted.len() * 95).div_ceil(100).max(1);
        sorted
            .get(rank - 1)
            .map(|us| Duration::from_micros(u64::from(*us)))
    }

    pub fn len(&self) -> usize {
        usize::from(self.runs)
    }

    pub fn is_empty(&self) -> bool {
        self.runs == 0
    }

    /// The runs, oldest first, unpacked.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = RunRecord> + '_ {
        self.run_words()
            .chunks_exact(RUN_WORDS)
            .map(|words| PastRun::from_words(words).unpack())
    }

    /// The runs, oldest first, unpacked.
    pub fn to_vec(&self) -> Vec<RunRecord> {
        self.iter().collect()
    }

    /// The words the block holds.
    #[cfg(test)]
    pub(super) fn room(&self) -> usize {
        self.words.len()
    }

    #[cfg(test)]
    pub(super) fn sorted_durations(&self) -> &[u32] {
        self.sorted()
    }
}

/// Puts `us` in the last place of `sorted` (whose other places are in
/// order), keeping it sorted.
fn insert_sorted(sorted: &mut [u32], us: u32) {
    let last = sorted.len() - 1;
    let at = sorted[..last].partition_point(|d| *d <= us);
    sorted.copy_within(at..last, at + 1);
    sorted[at] = us;
}

/// Takes `evicted` out of `sorted` and puts `us` in, keeping it sorted.
fn replace_sorted(sorted: &mut [u32], evicted: u32, us: u32) {
    // The evicted duration is always there (its first copy is taken);
    // were it not, the next longer one would go, and the window would
    // keep its length.
    let out = sorted
        .partition_point(|d| *d < evicted)
        .min(sorted.len() - 1);
    sorted.copy_within(out + 1.., out);
    insert_sorted(sorted, us);
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
        assert_eq!(std::mem::size_of::<History>(), 24, "not 88");
    }

    fn run(n: u64) -> RunRecord {
        let outcomes = [
            Outcome::Ok,
            Outcome::Failed,
            Outcome::Cancelled,
            Outcome::TimedOut,
        ];
        RunRecord {
            run_id: n << 33 | n,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_micros(n * 1_000_003 + (n << 40)),
            // Durations out of order, with ties, and one past 71 minutes.
            duration: Duration::from_micros(if n == 7 {
                u64::MAX / 4
            } else {
                n * 7919 % 1000
            }),
            outcome: outcomes[(n % 4) as usize],
            covered_generation: (!n.is_multiple_of(3)).then_some(n << 35),
            follow_up: n.is_multiple_of(2),
            waited: Duration::from_micros(n << 34),
            usage: Usage {
                prompt_tokens: n * 3,
                completion_tokens: n * 5,
                cached_tokens: n,
                cost: crate::spend::Cost(n << 36 | 5),
            },
        }
    }

    #[test]
    fn a_history_holds_what_three_queues_would() {
        // The queues the block stands for, kept plainly beside it.
        let mut history = History::default();
        let mut runs = std::collections::VecDeque::new();
        let mut window = std::collections::VecDeque::new();
        for n in 1..=100 {
            let record = run(n);
            history.push(&record);
            let kept = RunRecord {
                duration: Duration::from_micros(record.duration.as_micros() as u64),
                ..record
            };
            runs.push_back(PastRun::pack(&kept).unpack());
            window.push_back(window_micros(kept.duration));
            if runs.len() > RUNS_KEPT {
                runs.pop_front();
            }
            if window.len() > HISTORY_LEN {
                window.pop_front();
            }
            let mut sorted: Vec<u32> = window.iter().copied().collect();
            sorted.sort_unstable();
            assert_eq!(history.to_vec(), Vec::from(runs.clone()), "after {n}");
            assert_eq!(history.order(), Vec::from(window.clone()), "after {n}");
            assert_eq!(history.sorted_durations(), sorted, "after {n}");
            let rank = (sorted.len() * 95).div_ceil(100);
            assert_eq!(
                history.p95(),
                Some(Duration::from_micros(u64::from(sorted[rank - 1])))
            );
            assert_eq!(history.len(), runs.len());
            assert_eq!(history.room(), 2 * window.len() + runs.len() * RUN_WORDS);
        }
    }

    #[test]
    fn a_full_history_takes_a_run_in_place() {
        let mut history = History::default();
        for n in 1..=HISTORY_LEN as u64 {
            history.push(&run(n));
        }
        let block = history.words.as_ptr();
        history.push(&run(1_000));
        assert_eq!(history.words.as_ptr(), block, "no new block once full");
        assert_eq!(
            history.iter().last().map(|r| r.run_id),
            Some(run(1_000).run_id)
        );
    }
}
