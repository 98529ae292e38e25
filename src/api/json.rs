//! The API's answers as types: the server writes them, `inflight status`
//! and `inflight attach` read them, and the OpenAPI document is derived
//! from them (`openapi.rs`). The status JSON itself is the original one,
//! in `state::status`.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::engine::{OpRow, SessionDetail, SessionRow};
use crate::model::{Operation, SessionId};
use crate::state::Phase;

/// Where an operation's run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    /// Nothing in flight.
    Idle,
    /// Admitted, waiting for an LLM permit (or a retry's wait).
    Queued,
    /// Its LLM call is under way.
    Running,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OperationJson {
    pub state: OpState,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
                None => OpState::Idle,
                Some(Phase::Queued) => OpState::Queued,
                Some(Phase::Running) => OpState::Running,
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

/// Values keyed by operation name, in the server's order: an object
/// whose keys are the operations it runs (`summary`, `mind_map`, then its
/// config file's). A client keeps the names as they came: they are the
/// server's, not its own.
#[derive(Debug, Clone)]
pub struct ByOperation<T>(pub Vec<(Cow<'static, str>, T)>);

impl<T> ByOperation<T> {
    /// One value per defined operation.
    pub fn defined(mut f: impl FnMut(Operation) -> T) -> Self {
        Self(
            crate::ops::registry()
                .ops()
                .map(|op| (Cow::Borrowed(op.as_str()), f(op)))
                .collect(),
        )
    }

    /// The value of the operation named `name`.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The operations' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_ref())
    }
}

impl<T: Serialize> Serialize for ByOperation<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (op, value) in &self.0 {
            map.serialize_entry(op.as_ref(), value)?;
        }
        map.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ByOperation<T> {
    /// In the order the server wrote them.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Entries<T> {
            type Value = ByOperation<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object keyed by operation name")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, T>()? {
                    entries.push((Cow::Owned(name), value));
                }
                Ok(ByOperation(entries))
            }
        }
        d.deserialize_map(Entries(std::marker::PhantomData))
    }
}

/// The schema of a [`ByOperation`] whose values are `values`.
fn by_operation(
    values: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
) -> utoipa::openapi::schema::Object {
    use utoipa::PartialSchema;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(Operation::schema()))
        .additional_properties(Some(values))
        .description(Some(
            "One entry per operation the server runs, keyed by its name, in the server's order",
        ))
        .build()
}

fn operations_schema() -> utoipa::openapi::schema::Object {
    by_operation(utoipa::openapi::Ref::from_schema_name("OperationJson").into())
}

fn rejected_answers_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let text_or_null =
        ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]));
    by_operation(text_or_null.into())
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionJson {
    pub session_id: SessionId,
    pub feed: Option<usize>,
    pub transcripts: u64,
    pub ended: bool,
    pub last_transcript_age_seconds: Option<f64>,
    /// Transcripts dropped before any result covered them (a backlog past
    /// what a session holds): never sent to the model.
    pub lost_transcripts: u64,
    #[schema(schema_with = operations_schema)]
    pub operations: ByOperation<OperationJson>,
    /// What every operation's calls cost, in the prices' currency.
    #[serde(with = "crate::spend::units")]
    #[schema(value_type = f64)]
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

/// `GET /api/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::engine::ClusterView>,
    pub sessions: Vec<SessionJson>,
}

#[derive(Serialize, ToSchema)]
pub struct ResultJson {
    /// Text as a string, a tree or JSON as JSON.
    #[schema(value_type = Value)]
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

#[derive(Serialize, ToSchema)]
pub struct TranscriptJson {
    pub generation: u64,
    pub speaker: Option<String>,
    pub text: String,
    pub start: Option<f64>,
}

/// `GET /api/sessions/{id}`: a session's row, and beside its fields each
/// operation's latest result under the operation's name.
#[derive(Serialize, ToSchema)]
pub struct SessionDetailJson {
    #[serde(flatten)]
    pub session: SessionJson,
    /// Each defined operation's latest result, under its name (`summary`,
    /// `mind_map`, …), `null` before the first.
    #[serde(flatten)]
    #[schema(value_type = ResultsByName)]
    pub results: ByOperation<Option<ResultJson>>,
    pub recent_transcripts: Vec<TranscriptJson>,
    pub partial: Option<String>,
    /// The last answers that could not be read, by operation.
    #[schema(schema_with = rejected_answers_schema)]
    pub rejected_answers: ByOperation<Option<String>>,
}

/// Beside a session's fields, one more per operation: its latest result
/// ([`ResultJson`]) under its name, `null` before the first. (Their
/// names are the server's operations, so no schema can list them; and a
/// schema limiting the other keys would limit the session's too.)
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ResultsByName {}

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
#[derive(Serialize, ToSchema)]
pub struct FeedsJson {
    pub feeds: Vec<FeedJson>,
}

/// One feed: its state, counters and refused frames by kind.
#[derive(Serialize, ToSchema)]
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
    /// Times it stopped reading because the database's writer was behind
    /// (it reads on once the writer takes its next batch).
    pub database_waits: u64,
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
            database_waits: view.database_waits,
            spend,
            spend_by_op,
        }
    }
}

/// The answer to a trigger: started, or a run in flight left a follow-up
/// (`pending`) or dropped the request (`skipped`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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

impl From<TriggerJson> for crate::engine::TriggerAnswer {
    /// As a client reads it back (`running_since` as a time again).
    fn from(answer: TriggerJson) -> Self {
        use crate::engine::TriggerAnswer;
        let at = |since: f64| {
            std::time::SystemTime::UNIX_EPOCH
                + Duration::try_from_secs_f64(since).unwrap_or_default()
        };
        match answer {
            TriggerJson::Started { run_id } => TriggerAnswer::Started { run_id },
            TriggerJson::Pending {
                running_run_id,
                running_since,
            } => TriggerAnswer::Pending {
                running_run_id,
                since: at(running_since),
            },
            TriggerJson::Skipped {
                running_run_id,
                running_since,
            } => TriggerAnswer::Skipped {
                running_run_id,
                since: at(running_since),
            },
            TriggerJson::OverBudget { budget } => TriggerAnswer::OverBudget { budget },
        }
    }
}

/// The answer to a cancel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CancelJson {
    Cancelled { run_id: u64 },
    None { error: Cow<'static, str> },
}

/// A session only the database still has.
#[derive(Serialize, ToSchema)]
pub struct StoredDetailJson {
    #[serde(flatten)]
    pub detail: SessionDetailJson,
    pub from_disk: bool,
}

/// `GET /api/deliveries`.
#[derive(Serialize, ToSchema)]
pub struct DeliveriesJson {
    pub endpoints: Vec<crate::webhooks::EndpointView>,
    /// Newest first.
    pub dead_letters: Vec<DeadLetterJson>,
}

/// A given-up delivery, with its endpoint's URL (secrets hidden).
#[derive(Serialize, ToSchema)]
pub struct DeadLetterJson {
    pub endpoint: String,
    #[serde(flatten)]
    pub letter: crate::webhooks::DeadLetter,
}

/// `POST /api/sessions/{id}/budget/lift`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LiftedJson {
    /// Always `true`.
    pub lifted: bool,
}

/// `POST /api/sessions/{id}/budget/raise`: what the session's own budget
/// was raised by in all.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetRaisedJson {
    pub raised_tokens: u64,
    /// In the prices' currency.
    pub raised_cost: f64,
}
