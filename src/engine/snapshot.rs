//! Snapshots: copies of the engine's state that views read at their pace.
//!
//! A [`Snapshot`] is built under short locks and owns its data, so a view can
//! sort, filter and render it without holding anything the engine needs.

use std::time::Duration;

use tokio::time::Instant;

use super::feeds::FeedView;
use super::store::SessionContent;
use super::store::SessionFacts;
use crate::llm::BackendInfo;
use crate::model::{Operation, SessionId};
use crate::ops::OpMap;
use crate::state::{InFlight, OpCounters, OpStats, Policy, RunRecord};

/// One operation of one session, for tables.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpRow {
    pub in_flight: Option<InFlight>,
    /// Tokens streamed so far and tokens per second, while calling the LLM.
    pub tokens: Option<(u64, f64)>,
    /// Runs, their ends, skips, tokens and permit waits, in all.
    pub counts: OpCounters,
    pub last_duration: Option<Duration>,
    pub mean_duration: Option<Duration>,
    pub p95_duration: Option<Duration>,
    pub last_error: Option<String>,
    /// When the last failure ended.
    pub last_failure_at: Option<std::time::SystemTime>,
    /// The runs in a row that failed with `last_error`.
    pub error_streak: u32,
    pub consecutive_failures: u32,
    /// The generation the latest stored result covers.
    pub covered_generation: Option<u64>,
    /// When its result will next cover every transcript (filled in by a
    /// snapshot; see `freshness.rs`).
    #[serde(default)]
    pub fresh: super::freshness::Freshness,
}

impl OpRow {
    pub(super) fn new(in_flight: Option<&InFlight>, stats: &OpStats) -> Self {
        Self {
            in_flight: in_flight.cloned(),
            tokens: None,
            counts: stats.counts,
            last_duration: stats.last_duration,
            mean_duration: stats.mean_duration(),
            p95_duration: stats.p95_duration(),
            last_error: stats.last_error().map(String::from),
            last_failure_at: stats.last_failure_at(),
            error_streak: stats.error_streak(),
            consecutive_failures: stats.consecutive_failures,
            covered_generation: stats.covered_generation,
            fresh: Default::default(),
        }
    }

    /// Failures of any kind (failed or timed out).
    pub fn failures(&self) -> u64 {
        self.counts.failures()
    }

    /// Left behind by failures: no run in flight (so no retry is coming),
    /// the last run failed, and of the session's `transcripts` some are
    /// not covered by any result. A new transcript or a trigger asks again.
    pub fn is_stale(&self, transcripts: u64) -> bool {
        is_stale(
            self.in_flight.is_some(),
            self.consecutive_failures,
            self.covered_generation,
            transcripts,
        )
    }
}

/// [`OpRow::is_stale`], from the numbers it reads.
pub(super) fn is_stale(
    in_flight: bool,
    consecutive_failures: u32,
    covered_generation: Option<u64>,
    transcripts: u64,
) -> bool {
    !in_flight && consecutive_failures > 0 && covered_generation.unwrap_or(0) < transcripts
}

fn built_in_defs() -> Vec<crate::ops::OpDef> {
    crate::ops::OpRegistry::built_in().defs().to_vec()
}

/// One session, for tables.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionRow {
    pub id: SessionId,
    pub feed: Option<usize>,
    /// Final transcripts so far: the session's generation.
    pub transcripts: u64,
    #[serde(with = "crate::monotime::option")]
    pub last_transcript_at: Option<Instant>,
    pub ended: bool,
    pub has_partial: bool,
    /// Transcripts dropped before they were covered: never summarised.
    pub lost: u64,
    pub ops: OpMap<OpRow>,
    /// The budget that stopped its last run (`⊘ budget`), until a run is
    /// admitted again.
    #[serde(default)]
    pub over_budget: Option<crate::spend::Budget>,
    /// An operator lifted the session's own budget.
    #[serde(default)]
    pub budget_lifted: bool,
}

impl SessionRow {
    /// A row with the store's facts and no operation data yet.
    pub(super) fn from_facts(id: SessionId, facts: SessionFacts) -> Self {
        Self {
            id,
            feed: facts.feed,
            transcripts: facts.generation,
            last_transcript_at: facts.last_transcript_at,
            ended: facts.ended,
            has_partial: facts.partial,
            lost: facts.lost,
            ops: Default::default(),
            over_budget: facts.over_budget,
            budget_lifted: facts.budget_lifted,
        }
    }

    pub fn any_in_flight(&self) -> bool {
        self.ops.values().any(|op| op.in_flight.is_some())
    }

    /// `op`'s row; an empty one for an operation this row does not hold (a
    /// newer name than the row, from an attached server).
    pub fn op(&self, op: Operation) -> &OpRow {
        static EMPTY: std::sync::LazyLock<OpRow> = std::sync::LazyLock::new(OpRow::default);
        self.ops.get(op).unwrap_or(&EMPTY)
    }

    /// What every operation's calls cost so far.
    pub fn cost(&self) -> crate::spend::Cost {
        self.ops.values().map(|op| op.counts.cost).sum()
    }
}

/// Counters since the process started, forgotten sessions included (they
/// only grow), and the runs in flight now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub transcripts: u64,
    /// Every operation's lifetime counts, summed.
    pub counts: OpCounters,
    pub queued: u64,
    pub running: u64,
}

/// The whole engine at one moment.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    #[serde(with = "crate::monotime")]
    pub taken_at: Instant,
    pub uptime: Duration,
    pub backend: BackendInfo,
    pub permits_in_use: usize,
    pub permits_cap: usize,
    /// Calls at once in effect, as learnt from the server (at most the
    /// cap; see `permits.rs`). 0 from a server that does not say.
    #[serde(default)]
    pub permits_limit: usize,
    pub policy: OpMap<Policy>,
    /// The operations that run, in order, as the views draw them (an
    /// attached dashboard draws the server's).
    #[serde(default = "built_in_defs")]
    pub operations: Vec<crate::ops::OpDef>,
    pub op_timeout: Duration,
    pub feeds: Vec<FeedView>,
    /// Sorted by session id.
    pub sessions: Vec<SessionRow>,
    pub totals: Totals,
    /// Per operation, since the process started.
    pub lifetime: OpMap<OpCounters>,
    /// The most sessions held at once (`--max-sessions`).
    pub max_sessions: usize,
    /// New sessions refused so far because that many were held.
    pub refused_sessions: u64,
    /// The database, when there is one.
    pub db: Option<DbView>,
    /// The cluster, when this instance is in one (`--redis`).
    #[serde(default)]
    pub cluster: Option<ClusterView>,
    /// The webhook endpoints, when the config file has some.
    #[serde(default)]
    pub webhooks: Vec<crate::webhooks::EndpointView>,
    /// The currency costs are in (`USD`); empty without a price table,
    /// when views show no spend.
    #[serde(default)]
    pub currency: String,
}

/// How the database is doing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DbView {
    pub path: String,
    /// The last commit failed, or writes were dropped since: the engine
    /// runs on in memory and the writer retries.
    pub degraded: bool,
    pub written: u64,
    pub dropped: u64,
    pub failures: u64,
}

impl DbView {
    pub fn of(db: &crate::db::Db) -> Self {
        let health = db.health();
        Self {
            path: db.path().display().to_string(),
            degraded: health.degraded(),
            written: health.written(),
            dropped: health.dropped(),
            failures: health.failures(),
        }
    }
}

/// How this instance's cluster is doing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// This instance's name in leases and results.
    pub instance: String,
    /// Where Redis is, without credentials.
    pub redis: String,
    /// Whether the last Redis call got an answer.
    pub reachable: bool,
    /// Why the last call failed, while unreachable.
    pub last_error: Option<String>,
    #[schema(value_type = crate::api::SerdeDuration)]
    pub lease_ttl: Duration,
    pub counts: super::ClusterCounts,
}

/// One session in full, for a detail view.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionDetail {
    pub row: SessionRow,
    pub content: SessionContent,
    pub history: OpMap<Vec<RunRecord>>,
}

/// The process's counters, and the runs in flight among `rows`.
pub(super) fn totals(
    rows: &[SessionRow],
    lifetime: &OpMap<OpCounters>,
    transcripts: u64,
) -> Totals {
    let all = lifetime
        .values()
        .fold(OpCounters::default(), |sum, op| sum.plus(*op));
    let mut totals = Totals {
        transcripts,
        counts: all,
        queued: 0,
        running: 0,
    };
    for row in rows {
        for op in row.ops.values() {
            match op.in_flight.as_ref().map(|r| r.phase) {
                Some(crate::state::Phase::Queued) => totals.queued += 1,
                Some(crate::state::Phase::Running) => totals.running += 1,
                None => {}
            }
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_failed_and_timed_out_runs() {
        let row = OpRow {
            counts: OpCounters {
                failed: 2,
                timed_out: 3,
                cancelled: 7,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(row.failures(), 5, "a cancel is no failure");
    }
}
