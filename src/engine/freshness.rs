//! When a session's result will next be fresh: an estimate for the views
//! ("fresh in ~12s").
//!
//! It is worked out from what the engine knows when a snapshot is taken:
//! the run's place in the permits' queue, how many calls run at once, how
//! long this operation's calls have been taking at this server (the median
//! of the newest [`KEPT`]), and whether a budget or failures stopped it.
//!
//! - Running: the call's typical time, less what it has run. When lines
//!   came after the call read the session, the follow-up that covers them
//!   adds its turn behind everything queued now, and its own call.
//! - Queued at place `k` with `P` calls at once: `k / P` calls' time for
//!   the runs ahead, half a call for the busy permits to free one, then its
//!   own call.
//! - Idle, its result covering every transcript: fresh now.
//! - Idle and behind (its retries spent), or stopped by a budget: nothing
//!   is coming, so no time is given.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::snapshot::OpRow;
use crate::model::Operation;
use crate::ops::OpMap;
use crate::state::Phase;

/// Call times kept per operation.
pub const KEPT: usize = 64;

/// The newest call times of each operation.
#[derive(Debug, Default)]
pub struct CallTimes {
    recent: Mutex<OpMap<VecDeque<Duration>>>,
}

impl CallTimes {
    pub fn record(&self, op: Operation, took: Duration) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let times = recent.entry(op);
        if times.len() == KEPT {
            times.pop_front();
        }
        times.push_back(took);
    }

    /// The median of the newest call times of `op`; `None` before any.
    pub fn typical(&self, op: Operation) -> Option<Duration> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut times: Vec<Duration> = recent.get(op)?.iter().copied().collect();
        if times.is_empty() {
            return None;
        }
        times.sort_unstable();
        Some(times[times.len() / 2])
    }
}

/// When an operation's result will next cover every transcript.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    /// Not known (no call has been timed yet, or the run waits out a
    /// backoff or `--min-interval`).
    #[default]
    Unknown,
    /// Its result covers every transcript.
    Fresh,
    /// About this long from the snapshot.
    In(Duration),
    /// Nothing is coming: its retries are spent or a budget stopped it.
    Stopped,
}

impl Freshness {
    /// A session's freshness from its operations': fresh when every one
    /// is, stopped when one is, else the longest estimate (unknown when
    /// none is known).
    pub fn of_all(ops: impl IntoIterator<Item = Freshness>) -> Freshness {
        let mut all = Freshness::Fresh;
        for fresh in ops {
            all = match (all, fresh) {
                (Freshness::Stopped, _) | (_, Freshness::Stopped) => Freshness::Stopped,
                (Freshness::In(a), Freshness::In(b)) => Freshness::In(a.max(b)),
                (Freshness::In(a), _) | (_, Freshness::In(a)) => Freshness::In(a),
                (Freshness::Unknown, _) | (_, Freshness::Unknown) => Freshness::Unknown,
                (Freshness::Fresh, Freshness::Fresh) => Freshness::Fresh,
            };
        }
        all
    }

    /// In a few characters, claiming no more than it knows: `now`, `~12s`,
    /// `~3m`, `never`, `-`.
    pub fn short(self) -> String {
        match self {
            Freshness::Fresh => "now".into(),
            Freshness::In(wait) => match wait.as_secs() {
                s if s < 60 => format!("~{}s", s.max(1)),
                s if s < 3600 => format!("~{}m", (s + 30) / 60),
                s => format!("~{}h", (s + 1800) / 3600),
            },
            Freshness::Stopped => "never".into(),
            Freshness::Unknown => "-".into(),
        }
    }

    /// Seconds until fresh, for the API: 0 when fresh, none when unknown
    /// or stopped.
    pub fn seconds(self) -> Option<f64> {
        match self {
            Freshness::Fresh => Some(0.0),
            Freshness::In(wait) => Some(wait.as_secs_f64()),
            Freshness::Stopped | Freshness::Unknown => None,
        }
    }
}

/// What a queue of calls is like at snapshot time.
#[derive(Debug, Clone, Copy)]
pub struct Queue {
    /// Calls at once.
    pub permits: usize,
    /// The operation's typical call time.
    pub call: Option<Duration>,
    /// Runs and steps waiting for a permit now.
    pub waiting: usize,
    pub now: Instant,
}

/// The estimate for one operation of a session with `transcripts`,
/// `place` being its run's place in the permits' queue, if it has one.
pub fn estimate(
    op: &OpRow,
    transcripts: u64,
    over_budget: bool,
    place: Option<usize>,
    queue: Queue,
) -> Freshness {
    let Some(run) = &op.in_flight else {
        return if op.covered_generation.unwrap_or(0) >= transcripts {
            Freshness::Fresh
        } else if over_budget || op.consecutive_failures > 0 {
            Freshness::Stopped
        } else {
            Freshness::Unknown
        };
    };
    let Some(call) = queue.call else {
        return Freshness::Unknown;
    };
    let permits = queue.permits.max(1) as u32;
    // A run behind k others: their calls, spread over the permits, and
    // half a call for a busy permit to come free.
    let queued = |k: usize| call * (k as u32) / permits + call / 2;
    let own = match run.phase {
        Phase::Running => {
            let ran = run
                .started
                .map_or(Duration::ZERO, |at| queue.now.saturating_duration_since(at));
            call.saturating_sub(ran)
        }
        Phase::Queued => match place {
            Some(k) => queued(k) + call,
            None => return Freshness::Unknown,
        },
    };
    // A running call covers what it read; lines said since need the
    // follow-up, which queues when this run ends, behind about everything
    // waiting now. A queued run reads everything when it starts.
    let read = run.covered_generation.unwrap_or(0);
    let follow_up = if run.phase == Phase::Running && read < transcripts {
        queued(queue.waiting) + call
    } else {
        Duration::ZERO
    };
    Freshness::In(own + follow_up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::InFlight;

    fn run(phase: Phase, started_ago: Option<u64>, pending: bool, now: Instant) -> InFlight {
        InFlight {
            run_id: 1,
            phase,
            since: std::time::SystemTime::now(),
            admitted: now,
            queued_since: now,
            waited: Duration::ZERO,
            started: started_ago.map(|s| now - Duration::from_secs(s)),
            deadline: None,
            pending,
            follow_up: false,
            // The call read the session's twelve lines.
            covered_generation: Some(12),
            instance: None,
            retry: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn estimates_follow_the_queue_and_the_call_time() {
        let now = Instant::now();
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = now + Duration::from_secs(60);
        let queue = Queue {
            permits: 4,
            call: Some(Duration::from_secs(2)),
            waiting: 12,
            now,
        };
        let mut op = OpRow {
            covered_generation: Some(10),
            ..OpRow::default()
        };
        assert_eq!(estimate(&op, 10, false, None, queue), Freshness::Fresh);
        assert_eq!(estimate(&op, 12, false, None, queue), Freshness::Unknown);
        op.consecutive_failures = 1;
        assert_eq!(estimate(&op, 12, false, None, queue), Freshness::Stopped);
        assert_eq!(estimate(&op, 12, true, None, queue), Freshness::Stopped);
        op.consecutive_failures = 0;
        op.in_flight = Some(run(Phase::Running, Some(1), false, now));
        assert_eq!(
            estimate(&op, 12, false, None, queue),
            Freshness::In(Duration::from_secs(1)),
            "a call of 2 s that ran 1 s"
        );
        op.in_flight = Some(run(Phase::Queued, None, false, now));
        assert_eq!(
            estimate(&op, 12, false, Some(8), queue),
            Freshness::In(Duration::from_secs(4 + 1 + 2)),
            "8 ahead on 4 permits: two calls' time, half a call, its own"
        );
        assert_eq!(
            estimate(&op, 12, false, None, queue),
            Freshness::Unknown,
            "backing off"
        );
        let mut behind = run(Phase::Running, Some(0), true, now);
        behind.covered_generation = Some(11);
        op.in_flight = Some(behind);
        assert_eq!(
            estimate(&op, 12, false, None, queue),
            Freshness::In(Duration::from_secs(2 + 6 + 1 + 2)),
            "line 12 came after the call read 11: the follow-up, behind the 12 waiting on 4 permits"
        );
        assert_eq!(
            estimate(&op, 11, false, None, queue),
            Freshness::In(Duration::from_secs(2)),
            "the call read everything: it is enough"
        );
        let unknown = Queue {
            call: None,
            ..queue
        };
        assert_eq!(estimate(&op, 12, false, None, unknown), Freshness::Unknown);
    }

    #[test]
    fn a_session_is_as_fresh_as_its_stalest_operation() {
        let secs = |s| Freshness::In(Duration::from_secs(s));
        assert_eq!(
            Freshness::of_all([Freshness::Fresh, Freshness::Fresh]),
            Freshness::Fresh
        );
        assert_eq!(
            Freshness::of_all([Freshness::Fresh, secs(3), secs(12)]),
            secs(12)
        );
        assert_eq!(Freshness::of_all([Freshness::Unknown, secs(3)]), secs(3));
        assert_eq!(
            Freshness::of_all([Freshness::Unknown, Freshness::Fresh]),
            Freshness::Unknown
        );
        assert_eq!(
            Freshness::of_all([secs(3), Freshness::Stopped]),
            Freshness::Stopped
        );
        assert_eq!(secs(12).short(), "~12s");
        assert_eq!(secs(0).short(), "~1s");
        assert_eq!(secs(59).short(), "~59s");
        assert_eq!(secs(60).short(), "~1m");
        assert_eq!(secs(150).short(), "~3m");
        assert_eq!(secs(3599).short(), "~60m");
        assert_eq!(secs(3600).short(), "~1h");
        assert_eq!(secs(7200).short(), "~2h");
        assert_eq!(Freshness::Fresh.short(), "now");
        assert_eq!(Freshness::Stopped.seconds(), None);
        assert_eq!(Freshness::Fresh.seconds(), Some(0.0));
    }

    #[test]
    fn the_typical_call_is_the_median_of_the_newest() {
        let times = CallTimes::default();
        assert_eq!(times.typical(Operation::SUMMARY), None);
        for ms in [100, 300, 200, 10_000, 150] {
            times.record(Operation::SUMMARY, Duration::from_millis(ms));
        }
        assert_eq!(
            times.typical(Operation::SUMMARY),
            Some(Duration::from_millis(200)),
            "the middle of all five, not the newest"
        );
        for _ in 0..KEPT {
            times.record(Operation::SUMMARY, Duration::from_secs(1));
        }
        assert_eq!(
            times.typical(Operation::SUMMARY),
            Some(Duration::from_secs(1)),
            "the newest 64"
        );
        assert_eq!(times.typical(Operation::MIND_MAP), None);
    }
}
