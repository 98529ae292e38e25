//! The handlers of the plain routes: the original status, sessions, feeds,
//! details, triggers, cancels, metrics, liveness and readiness. Each
//! answers a typed body (`json.rs`).

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::errors::{ApiError, ErrorJson, error, operation, session_id};
use super::{ApiState, history, json};
use crate::engine::{BudgetChange, TriggerAnswer};
use crate::llm::Usage;
use crate::model::SessionId;
use crate::spend::Cost;

/// The original processing status of one session (idle for a session
/// the server does not hold).
#[utoipa::path(get, path = "/api/llm/processing-status/{session_id}", tag = "sessions",
    params(("session_id" = SessionId, Path, description = "The session")),
    responses(
        (status = 200, description = "The status, with `success: true`", body = crate::state::status::StatusResponse),
        (status = 400, description = "Not a session id", body = ErrorJson),
    ),
    security(("operator" = []), ("viewer" = [])))]
pub(super) async fn processing_status(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let session = session_id(&raw)?;
    Ok(axum::Json(state.engine.status(&session).into_response()).into_response())
}

/// Every session held, with each operation's state and statistics.
#[utoipa::path(get, path = "/api/sessions", tag = "sessions",
    responses((status = 200, body = json::SessionsJson)),
    security(("operator" = []), ("viewer" = [])))]
pub(super) async fn list_sessions(State(state): State<ApiState>) -> Response {
    let snapshot = state.engine.snapshot();
    let now = Instant::now();
    axum::Json(json::SessionsJson {
        backend: snapshot.backend.clone(),
        max_sessions: snapshot.max_sessions,
        refused_sessions: snapshot.refused_sessions,
        currency: Some(snapshot.currency.clone()).filter(|c| !c.is_empty()),
        cluster: snapshot.cluster.clone(),
        sessions: snapshot
            .sessions
            .iter()
            .map(|row| json::SessionJson::new(row, now, snapshot.op_timeout))
            .collect(),
    })
    .into_response()
}

/// Each feed's state and counters, refused frames by kind, and spend.
#[utoipa::path(get, path = "/api/feeds", tag = "feeds",
    responses((status = 200, body = json::FeedsJson)),
    security(("operator" = []), ("viewer" = [])))]
pub(super) async fn list_feeds(State(state): State<ApiState>) -> Response {
    let now = Instant::now();
    let feeds = state
        .engine
        .feeds()
        .statuses()
        .iter()
        .map(|feed| json::FeedJson::new(feed, now))
        .collect();
    axum::Json(json::FeedsJson { feeds }).into_response()
}

/// `GET /api/deliveries`: each webhook endpoint's counters and what waits
/// for it, and the newest dead letters.
#[utoipa::path(get, path = "/api/deliveries", tag = "webhooks",
    responses((status = 200, body = json::DeliveriesJson)),
    security(("operator" = []), ("viewer" = [])))]
pub(super) async fn list_deliveries(State(state): State<ApiState>) -> Response {
    let endpoints = state.engine.webhook_views();
    let dead_letters = state
        .engine
        .webhooks()
        .map(|w| {
            w.outbox
                .dead_letters()
                .into_iter()
                .rev()
                .map(|letter| json::DeadLetterJson {
                    endpoint: endpoints
                        .get(letter.endpoint)
                        .map(|e| e.url.clone())
                        .unwrap_or_default(),
                    letter,
                })
                .collect()
        })
        .unwrap_or_default();
    axum::Json(json::DeliveriesJson {
        endpoints,
        dead_letters,
    })
    .into_response()
}

/// Liveness: 200 while the process runs; the body says `degraded` when
/// the database cannot write (the engine goes on in memory).
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "`ok`, or a `degraded: …` line per part that is", body = String, content_type = "text/plain")),
    security(()))]
pub(super) async fn healthz(State(state): State<ApiState>) -> String {
    let mut said = Vec::new();
    if let Some(db) = state.engine.db().filter(|db| db.health().degraded()) {
        said.push(format!(
            "degraded: the database {} cannot write ({} failed commits, {} writes dropped); running in memory",
            db.path().display(),
            db.health().failures(),
            db.health().dropped()
        ));
    }
    if let Some(cluster) = state.engine.cluster_view().filter(|c| !c.reachable) {
        said.push(format!(
            "degraded: Redis {} is unreachable ({}); no run starts until it answers",
            cluster.redis,
            cluster.last_error.as_deref().unwrap_or("no answer")
        ));
    }
    if said.is_empty() {
        "ok".into()
    } else {
        said.join("\n")
    }
}

/// Readiness: 200 when the engine can do its job, 503 otherwise, with a
/// JSON body naming what is not ready.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = crate::engine::Readiness),
        (status = 503, description = "Not ready: `not_ready` says why", body = crate::engine::Readiness),
    ),
    security(()))]
pub(super) async fn readyz(State(state): State<ApiState>) -> Response {
    let readiness = state.engine.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

/// One session in full: its row, each operation's latest result under the
/// operation's name, and its recent transcripts. A session memory has
/// forgotten comes from the database, with `from_disk: true`.
#[utoipa::path(get, path = "/api/sessions/{session_id}", tag = "sessions",
    params(("session_id" = SessionId, Path, description = "The session")),
    responses(
        (status = 200, body = json::SessionDetailJson),
        (status = 400, description = "Not a session id", body = ErrorJson),
        (status = 404, description = "No such session, in memory or in the database", body = ErrorJson),
    ),
    security(("operator" = []), ("viewer" = [])))]
pub(super) async fn session_detail(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let session = session_id(&raw)?;
    if let Some(detail) = history::held(&state, &session, 20).await? {
        return Ok(axum::Json(json::SessionDetailJson::new(
            detail,
            Instant::now(),
            state.engine.op_timeout(),
        ))
        .into_response());
    }
    // Forgotten by memory: the database may still have it.
    match history::forgotten(&state, &session).await? {
        Some(detail) => Ok(axum::Json(json::StoredDetailJson {
            detail: json::SessionDetailJson::new(detail, Instant::now(), state.engine.op_timeout()),
            from_disk: true,
        })
        .into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no session {session}"),
        )),
    }
}

/// Asks for a run now: it starts, leaves a follow-up on the run in flight,
/// or is skipped (the run in flight has one already).
#[utoipa::path(post, path = "/api/sessions/{session_id}/operations/{op}", tag = "operations",
    params(("session_id" = SessionId, Path, description = "The session"),
           ("op" = crate::model::Operation, Path, description = "The operation")),
    responses(
        (status = 202, description = "`started` or `pending`", body = json::TriggerJson),
        (status = 409, description = "`skipped`: a run is in flight and already has a follow-up", body = json::TriggerJson),
        (status = 429, description = "`over_budget`: a budget covering the session is spent", body = json::TriggerJson),
        (status = 400, description = "Not a session id", body = ErrorJson),
        (status = 404, description = "No such session, or no such operation", body = ErrorJson),
    ),
    security(("operator" = [])))]
pub(super) async fn trigger(
    State(state): State<ApiState>,
    Path((raw, op)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (session, op) = (session_id(&raw)?, operation(&op)?);
    let Some(answer) = state.engine.request(&session, op) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no session {session}"),
        ));
    };
    let body = json::TriggerJson::from(answer);
    let status = match answer {
        TriggerAnswer::Skipped { .. } => StatusCode::CONFLICT,
        TriggerAnswer::OverBudget { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, axum::Json(body)).into_response())
}

/// Cancels the operation's run in flight.
#[utoipa::path(delete, path = "/api/sessions/{session_id}/operations/{op}", tag = "operations",
    params(("session_id" = SessionId, Path, description = "The session"),
           ("op" = crate::model::Operation, Path, description = "The operation")),
    responses(
        (status = 200, description = "`cancelled`", body = json::CancelJson),
        (status = 400, description = "Not a session id", body = ErrorJson),
        (status = 404, description = "Nothing in flight (`outcome: none`), or no such operation", body = super::openapi::CancelRefused),
    ),
    security(("operator" = [])))]
pub(super) async fn cancel(
    State(state): State<ApiState>,
    Path((raw, op)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (session, op) = (session_id(&raw)?, operation(&op)?);
    Ok(match state.engine.cancel(&session, op) {
        Some(run_id) => axum::Json(json::CancelJson::Cancelled { run_id }).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json::CancelJson::None {
                error: "no run in flight".into(),
            }),
        )
            .into_response(),
    })
}

/// The answer to an operator's change the engine refused.
fn budget_refused(session: &SessionId, why: BudgetChange) -> ApiError {
    match why {
        BudgetChange::NoSession => ApiError(StatusCode::NOT_FOUND, format!("no session {session}")),
        BudgetChange::NoSessionBudget => ApiError(
            StatusCode::CONFLICT,
            "no budget is set per session (--budget-session-tokens, --budget-session-cost)".into(),
        ),
    }
}

/// `POST /api/sessions/{id}/budget/lift`: the session's own budget no
/// longer applies (operators only, as every write).
#[utoipa::path(post, path = "/api/sessions/{session_id}/budget/lift", tag = "budgets",
    params(("session_id" = SessionId, Path, description = "The session")),
    responses(
        (status = 200, body = json::LiftedJson),
        (status = 400, description = "Not a session id", body = ErrorJson),
        (status = 404, description = "No such session", body = ErrorJson),
        (status = 409, description = "No budget is set per session", body = ErrorJson),
    ),
    security(("operator" = [])))]
pub(super) async fn lift_budget(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let session = session_id(&raw)?;
    state
        .engine
        .lift_budget(&session)
        .map_err(|why| budget_refused(&session, why))?;
    Ok(axum::Json(json::LiftedJson { lifted: true }).into_response())
}

/// What a raise asks for: tokens, money, or (neither) one more of each
/// session budget set.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RaiseBody {
    /// Tokens to add to the session's token budget (a whole number; JSON
    /// may write it `2.0`).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(maximum = 9007199254740991.0)]
    tokens: Option<u64>,
    /// Money to add to its cost budget, in the prices' currency.
    #[schema(minimum = 0.0)]
    cost: Option<f64>,
}

/// A count that JSON may write as `2` or `2.0`: the same number.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::Deserialize;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(whole) = n.as_u64() {
        return Ok(Some(whole));
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "tokens are a whole number of at least 0, not {n}"
        ))),
    }
}

/// `POST /api/sessions/{id}/budget/raise`: the session's own budget grows
/// by `{"tokens": N}` and/or `{"cost": X}` (in the prices' currency), or,
/// with no body, by one more of itself.
#[utoipa::path(post, path = "/api/sessions/{session_id}/budget/raise", tag = "budgets",
    params(("session_id" = SessionId, Path, description = "The session")),
    request_body(content = Option<RaiseBody>, description = "What to add; no body adds one more of each session budget set", content_type = "application/json"),
    responses(
        (status = 200, body = json::BudgetRaisedJson),
        (status = 400, description = "Not a session id, or not a raise", body = ErrorJson),
        (status = 404, description = "No such session", body = ErrorJson),
        (status = 409, description = "No budget is set per session", body = ErrorJson),
    ),
    security(("operator" = [])))]
pub(super) async fn raise_budget(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let session = session_id(&raw)?;
    // No body, or `null`: one more of each session budget set.
    let asked: RaiseBody = if body.iter().all(u8::is_ascii_whitespace) {
        RaiseBody::default()
    } else {
        serde_json::from_slice::<Option<RaiseBody>>(&body)
            .map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not a raise ({{\"tokens\": N, \"cost\": X}}): {e}"),
                )
            })?
            .unwrap_or_default()
    };
    if let Some(cost) = asked.cost
        && !(cost.is_finite() && cost >= 0.0)
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("a raise's cost is a sum of money, not {cost}"),
        ));
    }
    let by = (asked.tokens.is_some() || asked.cost.is_some()).then(|| Usage {
        cost: asked.cost.map(Cost::from_units).unwrap_or_default(),
        ..Usage::tokens(asked.tokens.unwrap_or(0), 0)
    });
    let raised = state
        .engine
        .raise_budget(&session, by)
        .map_err(|why| budget_refused(&session, why))?;
    Ok(axum::Json(json::BudgetRaisedJson {
        raised_tokens: raised.prompt_tokens,
        raised_cost: raised.cost.units(),
    })
    .into_response())
}

/// Prometheus' text format: counters, gauges and histograms of runs,
/// feeds, permits, the database, the cluster, webhooks and budgets.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8")),
    security(("operator" = []), ("viewer" = [])))]
pub(super) async fn render_metrics(State(state): State<ApiState>) -> Response {
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode metrics",
        ),
    }
}
