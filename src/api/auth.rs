//! Who may do what: the bearer tokens (the operator's, a viewer's, the
//! ingest token) and the role each request gets from them, checked in
//! constant time. The ingest token pushes transcripts and does nothing
//! else; the others never push.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::ApiState;
use super::errors::error;

/// What a request's token lets it do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads, triggers and cancels (`--api-token`, or no token configured).
    Operator,
    /// Reads only (`--api-read-token`): triggers and cancels answer 403.
    Viewer,
}

/// Compares without stopping at the first difference.
pub(super) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, b) in expected.iter().enumerate() {
        diff |= (given.get(i).copied().unwrap_or(0) ^ b) as usize;
    }
    diff == 0
}

/// Finds the request's role from its token: the operator's, a viewer's,
/// or none at all when no token is configured. A viewer may only read.
pub(super) async fn require_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    mut request: Request,
    next: Next,
) -> Response {
    let given = bearer(&headers);
    let matches = |token: &Option<Arc<str>>| is(given, token);
    let open = state.token.is_none() && state.read_token.is_none();
    let role = if matches(&state.ingest_token) {
        return error(
            StatusCode::FORBIDDEN,
            "the ingest token pushes transcripts and does nothing else",
        );
    } else if open || matches(&state.token) {
        Role::Operator
    } else if matches(&state.read_token) {
        Role::Viewer
    } else {
        return unauthorized();
    };
    let reads = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if role == Role::Viewer && !reads {
        return error(
            StatusCode::FORBIDDEN,
            "a read-only token: triggers and cancels need the operator's token",
        );
    }
    request.extensions_mut().insert(role);
    next.run(request).await
}

/// Lets through only requests carrying the ingest token: pushing needs
/// it, and no other token pushes.
pub(super) async fn require_ingest_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let given = bearer(&headers);
    let matches = |token: &Option<Arc<str>>| is(given, token);
    if state.ingest_token.is_none() {
        return error(
            StatusCode::FORBIDDEN,
            "pushing is off: no ingest token is configured (--api-ingest-token)",
        );
    }
    if matches(&state.ingest_token) {
        return next.run(request).await;
    }
    if matches(&state.token) || matches(&state.read_token) {
        return error(
            StatusCode::FORBIDDEN,
            "pushing needs the ingest token; the operator's and viewers' tokens cannot push",
        );
    }
    unauthorized()
}

/// Whether `given` is the configured `token`.
fn is(given: &str, token: &Option<Arc<str>>) -> bool {
    token
        .as_ref()
        .is_some_and(|t| same_secret(given.as_bytes(), t.as_bytes()))
}

/// The request's bearer token, or nothing.
fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

fn unauthorized() -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"abcd", b"abc"));
        assert!(!same_secret(b"", b"abc"));
    }
}
