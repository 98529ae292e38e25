//! Who may do what: the bearer tokens (the operator's, a viewer's) and the
//! role each request gets from them, checked in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::ApiState;
use super::errors::error;

/// What a request's token lets it do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let matches = |token: &Option<Arc<str>>| {
        token
            .as_ref()
            .is_some_and(|t| same_secret(given.as_bytes(), t.as_bytes()))
    };
    let open = state.token.is_none() && state.read_token.is_none();
    let role = if open || matches(&state.token) {
        Role::Operator
    } else if matches(&state.read_token) {
        Role::Viewer
    } else {
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
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
