//! How the API says no: one JSON shape for every refusal
//! (`{"success": false, "error": "..."}`), axum's own refusals turned into
//! it, and the reading of a path's session id and operation, and of a
//! query's counts, with it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::{Operation, SessionId};

/// The body of every refusal, as the server writes it and clients read it.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorJson<'a> {
    /// Always `false`.
    pub success: bool,
    /// What was wrong, in words.
    #[serde(borrow)]
    pub error: std::borrow::Cow<'a, str>,
}

/// A refused request, answered as a JSON error.
pub(super) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorJson {
            success: false,
            error: self.1.as_str().into(),
        };
        (self.0, axum::Json(body)).into_response()
    }
}

/// Gives axum's own refusals (a query, path or WebSocket handshake it
/// could not read: 4xx in plain text) the shape of every other refusal,
/// so that a client reads one shape whatever refused it.
pub(super) async fn refusals_as_json(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(response.status().is_client_error() && plain) {
        return response;
    }
    let status = response.status();
    let text = axum::body::to_bytes(response.into_body(), 16 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|_| status.canonical_reason().unwrap_or("refused").to_string());
    ApiError(status, text).into_response()
}

/// The largest count a query takes: every JSON number up to it is exact,
/// in every client's language.
pub const MAX_QUERY_NUMBER: u64 = (1 << 53) - 1;

/// A count from a query, at most [`MAX_QUERY_NUMBER`]; a larger one is
/// refused (400), as the API's document says.
pub(super) fn query_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    use serde::Deserialize;
    match Option::<u64>::deserialize(d)? {
        Some(n) if n > MAX_QUERY_NUMBER => Err(serde::de::Error::custom(format!(
            "{n} is past the largest number taken here ({MAX_QUERY_NUMBER})"
        ))),
        n => Ok(n),
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
