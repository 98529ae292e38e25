//! Why a session needs the operator's attention, as one typed value that
//! the API, `inflight status` and both dashboards show alike.
//!
//! The rules: a call in its last fifth before `--op-timeout`; a run slower
//! than its operation's p95 (once there are three finished runs to judge
//! by); an operation that failed twice or more in a row; one left stale
//! (failed past its retries with transcripts uncovered); a live session
//! silent for [`SILENT_AFTER`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::SessionRow;
use crate::model::Operation;

/// A live session with no transcript for this long is flagged as silent.
pub const SILENT_AFTER: Duration = Duration::from_secs(120);

/// One reason to look at a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attention {
    /// The running call is past 80 % of its deadline.
    NearDeadline { op: Operation },
    /// The run has taken longer than the operation's p95 so far.
    SlowerThanP95 { op: Operation, p95_seconds: f64 },
    /// The last runs of the operation failed, this many in a row.
    FailingInARow { op: Operation, failures: u32 },
    /// Its runs failed past their retries, and this many transcripts are
    /// covered by no result: nothing more runs until a new transcript or a
    /// trigger.
    Stale { op: Operation, uncovered: u64 },
    /// No transcript for this long, and the session has not ended.
    Silent { seconds: f64 },
}

impl Attention {
    /// In a few words, for a screen: `summary near its deadline`.
    pub fn describe(&self) -> String {
        match self {
            Attention::NearDeadline { op } => format!("{} near its deadline", op.label()),
            Attention::SlowerThanP95 { op, p95_seconds } => format!(
                "{} slower than its p95 ({})",
                op.label(),
                crate::format::duration(Duration::from_secs_f64(*p95_seconds))
            ),
            Attention::FailingInARow { op, failures } => {
                format!("{} failed {failures} times in a row", op.label())
            }
            Attention::Stale { op, uncovered } => format!(
                "{} stale: {uncovered} {} uncovered, retries spent",
                op.label(),
                if *uncovered == 1 { "line" } else { "lines" }
            ),
            Attention::Silent { seconds } => format!(
                "silent for {}",
                crate::format::age(Duration::from_secs_f64(*seconds))
            ),
        }
    }
}

/// What in `row` needs attention at `now`, under `op_timeout`.
pub fn attention(row: &SessionRow, now: Instant, op_timeout: Duration) -> Vec<Attention> {
    let mut out = Vec::new();
    for op in crate::ops::registry().ops() {
        let stats = row.op(op);
        if let Some(run) = &stats.in_flight {
            // The deadline counts from the call's start; durations (and the
            // p95) from admission, as the original status does.
            let calling = run.started.map(|at| now.saturating_duration_since(at));
            let running = now.saturating_duration_since(run.admitted);
            if calling.is_some_and(|calling| calling >= op_timeout.mul_f64(0.8)) {
                out.push(Attention::NearDeadline { op });
            } else if let Some(p95) = stats
                .p95_duration
                .filter(|_| stats.counts.ok + stats.counts.failed >= 3)
                && running > p95
            {
                out.push(Attention::SlowerThanP95 {
                    op,
                    p95_seconds: p95.as_secs_f64(),
                });
            }
        }
        if stats.consecutive_failures >= 2 {
            out.push(Attention::FailingInARow {
                op,
                failures: stats.consecutive_failures,
            });
        }
        if stats.is_stale(row.transcripts) {
            out.push(Attention::Stale {
                op,
                uncovered: row.transcripts - stats.covered_generation.unwrap_or(0),
            });
        }
    }
    if !row.ended
        && let Some(last) = row.last_transcript_at
        && now.saturating_duration_since(last) > SILENT_AFTER
    {
        out.push(Attention::Silent {
            seconds: now.saturating_duration_since(last).as_secs_f64(),
        });
    }
    out
}
