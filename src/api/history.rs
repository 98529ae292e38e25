//! Past sessions from the database: a page at a time, and one session
//! that memory has forgotten.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState};
use crate::engine::SessionDetail;
use crate::model::SessionId;

/// Most sessions in one page.
pub const MAX_PAGE: usize = 500;
/// Sessions in a page when the request does not say.
pub const DEFAULT_PAGE: usize = 50;

#[derive(Debug, Deserialize)]
pub(super) struct HistoryParams {
    /// Only sessions heard from at or after this time (unix seconds).
    since: Option<f64>,
    /// The page after this one: the `next` of the previous answer.
    before: Option<f64>,
    before_id: Option<String>,
    limit: Option<usize>,
}

fn no_db() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no database: this inflight keeps memory only (--no-db)".into(),
    )
}

fn failed(e: impl std::fmt::Display) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the database: {e}"),
    )
}

/// `GET /api/history`: past sessions, newest first.
pub(super) async fn list(
    State(state): State<ApiState>,
    Query(params): Query<HistoryParams>,
) -> Result<Response, ApiError> {
    let db = state.engine.db().cloned().ok_or_else(no_db)?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let before = match (params.before, params.before_id) {
        (Some(at), Some(id)) => Some((at, id)),
        (Some(at), None) => Some((at, String::from("\u{10FFFF}"))),
        (None, _) => None,
    };
    let since = params.since;
    let page = tokio::task::spawn_blocking(move || db.history(since, before, limit))
        .await
        .map_err(failed)?
        .map_err(failed)?;
    let next = page
        .next
        .map(|(before, before_id)| json!({"before": before, "before_id": before_id}));
    Ok(axum::Json(json!({"sessions": page.sessions, "next": next})).into_response())
}

/// A session that memory no longer holds, read from disk; `None` when the
/// database does not know it either (or there is none).
pub(super) async fn forgotten(
    state: &ApiState,
    session: &SessionId,
) -> Result<Option<SessionDetail>, ApiError> {
    let Some(db) = state.engine.db().cloned() else {
        return Ok(None);
    };
    let id = session.clone();
    let stored = tokio::task::spawn_blocking(move || db.session(&id))
        .await
        .map_err(failed)?
        .map_err(failed)?;
    Ok(stored.map(|s| crate::engine::detail_from_disk(&s, 20)))
}
