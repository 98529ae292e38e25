//! Past sessions from the database: a page at a time, and one session
//! that memory has forgotten.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::engine::SessionDetail;
use crate::model::SessionId;

/// Most sessions in one page.
pub const MAX_PAGE: usize = 500;
/// Sessions in a page when the request does not say.
pub const DEFAULT_PAGE: usize = 50;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryParams {
    /// Only sessions heard from at or after this time (unix seconds).
    since: Option<f64>,
    /// The page after another: that answer's `next`, as it was.
    #[param(pattern = "^[0-9a-f]{16}\\.[A-Za-z0-9._:-]+$")]
    cursor: Option<String>,
    /// Sessions in a page: 1 to 500 (50 when not said).
    #[param(maximum = 9007199254740991.0)]
    #[serde(default, deserialize_with = "super::errors::query_number")]
    limit: Option<u64>,
}

/// A cursor names the last session of a page exactly (its last word's
/// time as the bits of the stored number, and its id), so no client's
/// float parsing can make a page repeat or skip a session.
fn cursor_of((last_seen, id): (f64, String)) -> String {
    format!("{:016x}.{id}", last_seen.to_bits())
}

fn parse_cursor(raw: &str) -> Option<(f64, String)> {
    let (bits, id) = raw.split_once('.')?;
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if bits.len() != 16 || !bits.bytes().all(hex) || SessionId::parse(id).is_err() {
        return None;
    }
    let bits = u64::from_str_radix(bits, 16).ok()?;
    Some((f64::from_bits(bits), id.to_string()))
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

/// `GET /api/history`: past sessions from the database, newest first, a
/// page at a time.
#[utoipa::path(get, path = "/api/history", tag = "sessions",
    params(HistoryParams),
    responses(
        (status = 200, body = HistoryJson),
        (status = 400, description = "A cursor not passed back as it was", body = super::errors::ErrorJson),
        (status = 404, description = "No database (`--no-db`)", body = super::errors::ErrorJson),
        (status = 503, description = "The database failed", body = super::errors::ErrorJson),
    ),
    security(("operator" = []), ("viewer" = [])))]
pub(super) async fn list(
    State(state): State<ApiState>,
    Query(params): Query<HistoryParams>,
) -> Result<Response, ApiError> {
    let db = state.engine.db().cloned().ok_or_else(no_db)?;
    let limit = params
        .limit
        .map_or(DEFAULT_PAGE, |n| n.clamp(1, MAX_PAGE as u64) as usize);
    let before = match params.cursor.as_deref().map(parse_cursor) {
        None => None,
        Some(Some(cursor)) => Some(cursor),
        Some(None) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "cursor: pass back the `next` of an earlier answer as it was".into(),
            ));
        }
    };
    let since = params.since;
    let page = tokio::task::spawn_blocking(move || db.history(since, before, limit))
        .await
        .map_err(failed)?
        .map_err(failed)?;
    let next = page.next.map(cursor_of);
    Ok(axum::Json(HistoryJson {
        sessions: page.sessions,
        next,
    })
    .into_response())
}

/// A page of past sessions, and the cursor of the next (none at the end).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct HistoryJson {
    sessions: Vec<crate::db::PastSession>,
    /// Where the next page starts (`cursor=`); `null` on the last page.
    next: Option<String>,
}

/// A session memory holds, with its newest `recent` lines. With a
/// database the covered ones memory let go are read back from the file, so
/// it runs on a blocking thread; `None` for a session memory does not hold.
pub(super) async fn held(
    state: &ApiState,
    session: &SessionId,
    recent: usize,
) -> Result<Option<SessionDetail>, ApiError> {
    if state.engine.db().is_none() {
        return Ok(state.engine.session_detail(session, recent));
    }
    let (engine, id) = (state.engine.clone(), session.clone());
    tokio::task::spawn_blocking(move || engine.session_detail(&id, recent))
        .await
        .map_err(failed)
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
