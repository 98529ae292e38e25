//! JSON views of sessions for the HTTP API (the status JSON itself is the
//! original one, in `state::status`).

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::engine::{OpRow, SessionDetail, SessionRow};
use crate::model::{Operation, SessionId};
use crate::state::Phase;

#[derive(Serialize)]
pub struct OperationJson {
    /// `idle`, `queued` or `running`.
    pub state: &'static str,
    pub run_id: Option<u64>,
    /// Since admission (the original start time), waiting included.
    pub in_flight_seconds: Option<f64>,
    /// Of those, spent waiting for an LLM permit.
    pub waiting_seconds: Option<f64>,
    /// Since the current LLM call began (running only); `--op-timeout`
    /// counts from there.
    pub call_seconds: Option<f64>,
    pub pending: bool,
    /// With several instances: the one running it (this one's own name
    /// once it holds the lease).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub tokens: Option<u64>,
    pub tokens_per_second: Option<f64>,
    /// `runs`, `ok`, `failed`, `timed_out`, `cancelled`, `skipped`,
    /// `follow_ups`, `prompt_tokens`, `completion_tokens` (every run of
    /// the operation, in all) and `permit_wait_seconds` (time its runs
    /// waited for an LLM permit, in all).
    #[serde(flatten)]
    pub counts: crate::state::OpCounters,
    pub last_duration_seconds: Option<f64>,
    pub mean_duration_seconds: Option<f64>,
    pub p95_duration_seconds: Option<f64>,
    pub last_error: Option<String>,
    pub covered_generation: Option<u64>,
    /// For a retry of a failed run: which one (it waits as `queued`).
    pub retry: Option<u32>,
    /// Failed past its retries with transcripts no result covers: nothing
    /// more runs until a new transcript or a trigger.
    pub stale: bool,
    /// About when its result will next cover every transcript: 0 when it
    /// does, `null` when unknown or when nothing is coming.
    pub fresh_in_seconds: Option<f64>,
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

impl OperationJson {
    fn new(op: &OpRow, transcripts: u64, now: Instant) -> Self {
        let run = op.in_flight.as_ref();
        Self {
            state: match run.map(|r| r.phase) {
                None => "idle",
                Some(Phase::Queued) => "queued",
                Some(Phase::Running) => "running",
            },
            run_id: run.map(|r| r.run_id),
            in_flight_seconds: run.map(|r| now.saturating_duration_since(r.admitted).as_secs_f64()),
            waiting_seconds: run.map(|r| r.waited_until(now).as_secs_f64()),
            call_seconds: run
                .and_then(|r| r.started)
                .map(|at| now.saturating_duration_since(at).as_secs_f64()),
            pending: run.is_some_and(|r| r.pending),
            instance: run.and_then(|r| r.instance.clone()),
            tokens: op.tokens.map(|(n, _)| n),
            tokens_per_second: op.tokens.map(|(_, rate)| rate),
            counts: op.counts,
            last_duration_seconds: secs(op.last_duration),
            mean_duration_seconds: secs(op.mean_duration),
            p95_duration_seconds: secs(op.p95_duration),
            last_error: op.last_error.clone(),
            covered_generation: op.covered_generation,
            retry: run.and_then(|r| r.retry),
            stale: op.is_stale(transcripts),
            fresh_in_seconds: op.fresh.seconds(),
        }
    }
}

/// Values keyed by operation name, in the registry's order: an object
/// whose keys are the defined operations (`summary`, `mind_map`, then the
/// config file's).
pub struct ByOperation<T>(pub Vec<(Operation, T)>);

impl<T> ByOperation<T> {
    /// One value per defined operation.
    pub fn defined(mut f: impl FnMut(Operation) -> T) -> Self {
        Self(crate::ops::registry().ops().map(|op| (op, f(op))).collect())
    }
}

impl<T: Serialize> Serialize for ByOperation<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (op, value) in &self.0 {
            map.serialize_entry(op.as_str(), value)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
pub struct SessionJson {
    pub session_id: SessionId,
    pub feed: Option<usize>,
    pub transcripts: u64,
    pub ended: bool,
    pub last_transcript_age_seconds: Option<f64>,
    /// Transcripts dropped before any result covered them (a backlog past
    /// what a session holds): never sent to the model.
    pub lost_transcripts: u64,
    pub operations: ByOperation<OperationJson>,
    /// What every operation's calls cost, in the prices' currency.
    #[serde(with = "crate::spend::units")]
    pub cost: crate::spend::Cost,
    /// The budget that stopped the session's runs (its config key), until
    /// a run is admitted again; `null` when none did.
    pub over_budget: Option<crate::spend::Budget>,
    /// An operator lifted the session's own budget.
    pub budget_lifted: bool,
    /// Why the session needs a look, if it does (the dashboard's `!`).
    pub attention: Vec<crate::engine::Attention>,
}

impl SessionJson {
    pub fn new(row: &SessionRow, now: Instant, op_timeout: std::time::Duration) -> Self {
        Self {
            session_id: row.id.clone(),
            feed: row.feed,
            transcripts: row.transcripts,
            ended: row.ended,
            last_transcript_age_seconds: row
                .last_transcript_at
                .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            lost_transcripts: row.lost,
            operations: ByOperation::defined(|op| {
                OperationJson::new(row.op(op), row.transcripts, now)
            }),
            cost: row.cost(),
            over_budget: row.over_budget,
            budget_lifted: row.budget_lifted,
            attention: crate::engine::attention(row, now, op_timeout),
        }
    }
}

#[derive(Serialize)]
pub struct SessionsJson {
    /// Which LLM answers (`simulated` is true for the builtin backend).
    pub backend: crate::llm::BackendInfo,
    /// The most sessions held at once, and new ones refused for that.
    pub max_sessions: usize,
    pub refused_sessions: u64,
    /// The currency costs are in; `null` without a price table.
    pub currency: Option<String>,
    /// The cluster, with `--redis`: this instance, Redis, and what the
    /// leases did here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::engine::ClusterView>,
    pub sessions: Vec<SessionJson>,
}

#[derive(Serialize)]
pub struct ResultJson {
    /// Text as a string, a tree or JSON as JSON.
    pub value: crate::ops::output::Wire,
    /// The run it came from, numbered here (its webhook revision without
    /// a cluster).
    pub run_id: u64,
    pub covered_generation: u64,
    pub model: String,
    pub processing_time: f64,
    /// The server cut the answer at the token limit: `value` is its start.
    pub truncated: bool,
}

#[derive(Serialize)]
pub struct TranscriptJson {
    pub generation: u64,
    pub speaker: Option<String>,
    pub text: String,
    pub start: Option<f64>,
}

#[derive(Serialize)]
pub struct SessionDetailJson {
    #[serde(flatten)]
    pub session: SessionJson,
    /// Each defined operation's latest result, under its name (`summary`,
    /// `mind_map`, …), `null` before the first.
    #[serde(flatten)]
    pub results: ByOperation<Option<ResultJson>>,
    pub recent_transcripts: Vec<TranscriptJson>,
    pub partial: Option<String>,
    /// The last answers that could not be read, by operation.
    pub rejected_answers: ByOperation<Option<String>>,
}

impl SessionDetailJson {
    pub fn new(detail: SessionDetail, now: Instant, op_timeout: std::time::Duration) -> Self {
        let rejected =
            ByOperation::defined(|op| detail.content.rejected.get(op).cloned().flatten());
        let results = ByOperation::defined(|op| {
            let result = detail.content.results.get(op)?.as_ref()?;
            Some(ResultJson {
                value: result.body.wire(),
                run_id: result.run_id,
                covered_generation: result.covered_generation,
                model: result.model.clone(),
                processing_time: result.processing_time.as_secs_f64(),
                truncated: result.truncated,
            })
        });
        Self {
            session: SessionJson::new(&detail.row, now, op_timeout),
            results,
            recent_transcripts: detail
                .content
                .recent
                .into_iter()
                .map(|t| TranscriptJson {
                    generation: t.generation,
                    speaker: t.speaker,
                    text: t.text,
                    start: t.start,
                })
                .collect(),
            partial: detail.content.partial,
            rejected_answers: rejected,
        }
    }
}

/// `GET /api/feeds`.
#[derive(Serialize)]
pub struct FeedsJson {
    pub feeds: Vec<FeedJson>,
}

/// One feed: its state, counters and refused frames by kind.
#[derive(Serialize)]
pub struct FeedJson {
    pub feed: usize,
    pub url: String,
    pub state: &'static str,
    /// `out`: a feed inflight dials; `in`: transcripts pushed to it.
    pub direction: &'static str,
    pub messages: u64,
    pub transcripts: u64,
    pub duplicates: u64,
    pub refused_sessions: u64,
    pub connects: u64,
    pub last_message_age_seconds: Option<f64>,
    pub bad_frames: std::collections::BTreeMap<&'static str, u64>,
    /// Tokens and cost of its sessions' LLM calls, in all and per
    /// operation (`cost` in the prices' currency).
    pub spend: crate::llm::Usage,
    pub spend_by_op: std::collections::BTreeMap<&'static str, crate::llm::Usage>,
}

impl FeedJson {
    pub fn new(feed: &crate::engine::FeedStatus, now: Instant) -> Self {
        let view = feed.view();
        let spend = view.spend();
        let spend_by_op = view
            .by_op
            .iter()
            .map(|(op, usage)| (op.as_str(), *usage))
            .collect();
        Self {
            feed: view.index,
            url: view.url,
            direction: if view.inbound { "in" } else { "out" },
            state: view.state.word(),
            messages: view.messages,
            transcripts: view.transcripts,
            duplicates: view.duplicates,
            refused_sessions: view.refused_sessions,
            connects: view.connects,
            last_message_age_seconds: view
                .last_message_at
                .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            bad_frames: crate::engine::feeds::BadFrame::ALL
                .iter()
                .map(|kind| (kind.as_str(), feed.bad(*kind)))
                .collect(),
            spend,
            spend_by_op,
        }
    }
}

/// The answer to a trigger: started, or a run in flight left a follow-up
/// (`pending`) or dropped the request (`skipped`).
#[derive(Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TriggerJson {
    Started {
        run_id: u64,
    },
    Pending {
        running_run_id: u64,
        running_since: f64,
    },
    Skipped {
        running_run_id: u64,
        running_since: f64,
    },
    /// A budget that covers the session is spent (`budget`: its config
    /// key): nothing started.
    OverBudget {
        budget: crate::spend::Budget,
    },
}

impl From<crate::engine::TriggerAnswer> for TriggerJson {
    fn from(answer: crate::engine::TriggerAnswer) -> Self {
        use crate::engine::TriggerAnswer;
        use crate::state::status::unix_seconds;
        match answer {
            TriggerAnswer::Started { run_id } => Self::Started { run_id },
            TriggerAnswer::Pending {
                running_run_id,
                since,
            } => Self::Pending {
                running_run_id,
                running_since: unix_seconds(since),
            },
            TriggerAnswer::Skipped {
                running_run_id,
                since,
            } => Self::Skipped {
                running_run_id,
                running_since: unix_seconds(since),
            },
            TriggerAnswer::OverBudget { budget } => Self::OverBudget { budget },
        }
    }
}

/// The answer to a cancel.
#[derive(Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CancelJson {
    Cancelled { run_id: u64 },
    None { error: &'static str },
}

/// A session only the database still has.
#[derive(Serialize)]
pub struct StoredDetailJson {
    #[serde(flatten)]
    pub detail: SessionDetailJson,
    pub from_disk: bool,
}

/// `GET /api/deliveries`.
#[derive(Serialize)]
pub struct DeliveriesJson {
    pub endpoints: Vec<crate::webhooks::EndpointView>,
    /// Newest first.
    pub dead_letters: Vec<DeadLetterJson>,
}

/// A given-up delivery, with its endpoint's URL (secrets hidden).
#[derive(Serialize)]
pub struct DeadLetterJson {
    pub endpoint: String,
    #[serde(flatten)]
    pub letter: crate::webhooks::DeadLetter,
}

/// `POST /api/sessions/{id}/budget/raise`: what the session's own budget
/// was raised by in all.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BudgetRaisedJson {
    pub raised_tokens: u64,
    /// In the prices' currency.
    pub raised_cost: f64,
}
