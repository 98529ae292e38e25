//! How the API says no: one JSON shape for every refusal
//! (`{"success": false, "error": "..."}`), and the reading of a path's
//! session id and operation into it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::{Operation, SessionId};

/// The body of every refusal.
#[derive(Serialize)]
struct ErrorJson<'a> {
    success: bool,
    error: &'a str,
}

/// A refused request, answered as a JSON error.
pub(super) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorJson {
            success: false,
            error: &self.1,
        };
        (self.0, axum::Json(body)).into_response()
    }
}

/// A JSON error response.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError(status, message.into()).into_response()
}

/// A session id from a path, or 400.
pub(super) fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(raw).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

/// An operation from a path, or 404 naming the defined ones (the path
/// names no resource this server has).
pub(super) fn operation(raw: &str) -> Result<Operation, ApiError> {
    let registry = crate::ops::registry();
    registry.parse(raw).ok_or_else(|| {
        let known = registry.names();
        ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown operation {raw:?}; known: {}", known.join(", ")),
        )
    })
}
