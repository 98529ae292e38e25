//! `GET /api/logs`: the process's newest log lines, for `inflight attach`'s
//! log pane and anyone else, read as a stream by asking for the lines after
//! the last one seen.
//!
//! `?from=N` (lines numbered `N` or later: the last answer's `next`),
//! `level=` (the most verbose level wanted: error, warn, info, debug,
//! trace), `session=ID`, `limit=` (at most [`MAX_LINES`]). `missed` says
//! lines from `N` on were pushed out of the buffer before they were read.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};
use crate::logs::LogLine;

/// Most lines in one answer.
pub const MAX_LINES: usize = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LogParams {
    /// Lines numbered this or later: the last answer's `next`.
    #[param(maximum = 9007199254740991.0)]
    #[serde(default, deserialize_with = "super::errors::query_number")]
    from: Option<u64>,
    /// The most verbose level wanted: `error`, `warn`, `info`, `debug`
    /// or `trace` (all by default).
    #[param(value_type = Option<super::openapi::LogLevel>)]
    level: Option<String>,
    /// Only the lines of this session.
    session: Option<String>,
    /// At most this many lines (1 to 1000).
    #[param(maximum = 9007199254740991.0)]
    #[serde(default, deserialize_with = "super::errors::query_number")]
    limit: Option<u64>,
}

/// One line on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLineJson {
    pub number: u64,
    /// Unix seconds.
    pub at: f64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    pub session: Option<String>,
    pub text: String,
}

impl LogLineJson {
    fn new(line: &LogLine) -> Self {
        Self {
            number: line.number,
            at: crate::state::status::unix_seconds(line.at),
            level: line.level.to_string(),
            session: line.session.clone(),
            text: line.text.clone(),
        }
    }
}

/// One answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogsAnswer {
    pub lines: Vec<LogLineJson>,
    /// Ask with `from=next` for what comes later.
    pub next: u64,
    /// Lines after `after` were pushed out before they could be read.
    pub missed: bool,
}

/// The process's newest log lines, read as a stream: ask again with
/// `from=next`.
#[utoipa::path(get, path = "/api/logs", tag = "logs",
    params(LogParams),
    responses(
        (status = 200, body = LogsAnswer),
        (status = 400, description = "An unknown level", body = super::errors::ErrorJson),
        (status = 404, description = "This process keeps no log lines", body = super::errors::ErrorJson),
    ),
    security(("operator" = []), ("viewer" = [])))]
pub(super) async fn lines(
    State(state): State<ApiState>,
    Query(params): Query<LogParams>,
) -> Result<Response, ApiError> {
    let Some(logs) = &state.logs else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "this process keeps no log lines".into(),
        ));
    };
    let level = match params.level.as_deref() {
        None => tracing::Level::TRACE,
        Some(raw) => raw.parse::<tracing::Level>().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("unknown level {raw:?}; known: error, warn, info, debug, trace"),
            )
        })?,
    };
    let limit = params
        .limit
        .map_or(MAX_LINES, |n| n.clamp(1, MAX_LINES as u64) as usize);
    let from = params.from.unwrap_or(0);
    let page = logs.after(from, limit, |line| {
        line.level <= level
            && params
                .session
                .as_deref()
                .is_none_or(|s| line.session.as_deref() == Some(s))
    });
    Ok(axum::Json(LogsAnswer {
        lines: page.lines.iter().map(LogLineJson::new).collect(),
        next: page.next,
        missed: page.missed,
    })
    .into_response())
}
