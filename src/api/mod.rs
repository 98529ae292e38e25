//! The HTTP and WebSocket API (axum).
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/llm/processing-status/{id}` | the seed's status JSON |
//! | `GET /api/sessions`, `GET /api/sessions/{id}` | sessions with per-op statistics; one in full |
//! | `GET /api/feeds` | each feed's state and counters, bad frames by kind |
//! | `POST /api/sessions/{id}/operations/{op}` | 202 started / pending, 409 skipped |
//! | `DELETE /api/sessions/{id}/operations/{op}` | 200 cancelled, 404 when nothing runs |
//! | `GET /api/dashboard?since&epoch` | the rows changed since a version, for `inflight attach` |
//! | `GET /api/dashboard/sessions/{id}` | one session's details in the same form |
//! | `GET /api/logs?from&level&session` | the newest log lines, read as a stream |
//! | `GET /ws?session=ID&since=ID` | `processing_status`, `summary_update`, `mind_map_update` envelopes; resumable |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | liveness, never behind the token |
//!
//! Loopback by default; any other address needs a bearer token, checked in
//! constant time on every route but `/healthz` and `/readyz`: the
//! operator's (reads, triggers, cancels) or a viewer's (reads only). Web pages are kept out on
//! every route (see `browsers.rs`): foreign `Origin`s, and on loopback foreign
//! `Host`s, get 403.

mod browsers;
pub mod client;
pub mod dashboard;
mod history;
mod json;
pub mod logs;
mod metrics;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, TriggerAnswer};
use crate::model::{Operation, SessionId};
pub use metrics::Metrics;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub use browsers::BrowserPolicy;
pub use ws::WsLimits;

/// Where and how the API listens.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub addr: SocketAddr,
    /// The operator's token: may read, trigger and cancel.
    pub token: Option<String>,
    /// A viewer's token: may read only.
    pub read_token: Option<String>,
    /// The process's log lines, for `/api/logs`.
    pub logs: Option<crate::logs::LogBuffer>,
    /// Origins whose web pages may call the API (none by default).
    pub allowed_origins: Vec<String>,
    /// Host names accepted besides loopback ones, when bound to loopback.
    pub allowed_hosts: Vec<String>,
    pub ws: WsLimits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8787)),
            token: None,
            read_token: None,
            logs: None,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            ws: WsLimits::default(),
        }
    }
}

impl ApiConfig {
    /// Refuses a non-loopback address without a token.
    pub fn check(&self) -> Result<(), String> {
        let no_token = self.token.as_deref().is_none_or(str::is_empty)
            && self.read_token.as_deref().is_none_or(str::is_empty);
        if !self.addr.ip().is_loopback() && no_token {
            return Err(format!(
                "refusing to serve the API on {} without a token: set --api-token or INFLIGHT_API_TOKEN, or bind a loopback address",
                self.addr
            ));
        }
        Ok(())
    }
}

/// What a request's token lets it do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads, triggers and cancels (`--api-token`, or no token configured).
    Operator,
    /// Reads only (`--api-read-token`): triggers and cancels answer 403.
    Viewer,
}

#[derive(Clone)]
struct ApiState {
    engine: Engine,
    token: Option<Arc<str>>,
    read_token: Option<Arc<str>>,
    metrics: Arc<Metrics>,
    ws: Arc<ws::Subscribers>,
    rows: Arc<dashboard::RowJournal>,
    logs: Option<crate::logs::LogBuffer>,
}

/// The router, for tests and for [`serve`].
pub fn router(engine: Engine, config: &ApiConfig) -> Router {
    let metrics = Metrics::new(engine.clone());
    tokio::spawn(metrics.clone().record_events(engine.clone()));
    let browsers = Arc::new(BrowserPolicy {
        allowed_origins: config.allowed_origins.clone(),
        check_host: config.addr.ip().is_loopback(),
        allowed_hosts: config.allowed_hosts.clone(),
    });
    let secret = |token: &Option<String>| token.clone().filter(|t| !t.is_empty()).map(Arc::from);
    let state = ApiState {
        rows: Arc::new(dashboard::RowJournal::new(engine.snapshot())),
        engine,
        token: secret(&config.token),
        read_token: secret(&config.read_token),
        metrics,
        ws: Arc::new(ws::Subscribers::new(config.ws)),
        logs: config.logs.clone(),
    };
    let protected = Router::new()
        .route(
            "/api/llm/processing-status/{session_id}",
            get(processing_status),
        )
        .route("/api/sessions", get(list_sessions))
        .route("/api/feeds", get(list_feeds))
        .route("/api/history", get(history::list))
        .route("/api/sessions/{session_id}", get(session_detail))
        .route(
            "/api/sessions/{session_id}/operations/{op}",
            post(trigger).delete(cancel),
        )
        .route("/api/dashboard", get(dashboard::delta))
        .route(
            "/api/dashboard/sessions/{session_id}",
            get(dashboard::detail),
        )
        .route("/api/logs", get(logs::lines))
        .route("/ws", get(ws::upgrade))
        .route("/metrics", get(render_metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(protected)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(refuse_large_bodies))
        .layer(middleware::from_fn_with_state(
            browsers,
            browsers::refuse_web_pages,
        ))
        .with_state(state)
}

/// Binds and serves until `shutdown`; returns the bound address.
pub async fn serve(
    engine: Engine,
    config: ApiConfig,
    shutdown: CancellationToken,
) -> Result<SocketAddr, String> {
    start(engine, config, shutdown).await.map(|(addr, _)| addr)
}

/// Binds and serves until `shutdown`; returns the bound address and the
/// server's task, which ends once the requests in flight have been answered.
pub async fn start(
    engine: Engine,
    config: ApiConfig,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    config.check()?;
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = router(engine, &config);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!("API server stopped: {e}");
        }
    });
    Ok((addr, task))
}

/// A JSON error: `{"success": false, "error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError(status, message.into()).into_response()
}

/// A refused request, answered as a JSON error.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            axum::Json(json!({"success": false, "error": self.1})),
        )
            .into_response()
    }
}

/// Compares without stopping at the first difference.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, b) in expected.iter().enumerate() {
        diff |= (given.get(i).copied().unwrap_or(0) ^ b) as usize;
    }
    diff == 0
}

/// No route reads a large body; a request announcing one is refused before
/// anything reads it (`DefaultBodyLimit` covers the extractors that do read).
async fn refuse_large_bodies(request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        );
    }
    next.run(request).await
}

/// Finds the request's role from its token: the operator's, a viewer's,
/// or none at all when no token is configured. A viewer may only read.
async fn require_token(
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

fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(raw).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

fn operation(raw: &str) -> Result<Operation, ApiError> {
    Operation::parse(raw).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("unknown operation {raw:?}; known: summary, mind_map"),
        )
    })
}

async fn processing_status(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let session = session_id(&raw)?;
    Ok(axum::Json(state.engine.status(&session).into_response()).into_response())
}

async fn list_sessions(State(state): State<ApiState>) -> Response {
    let snapshot = state.engine.snapshot();
    let now = Instant::now();
    axum::Json(json::SessionsJson {
        backend: snapshot.backend.clone(),
        max_sessions: snapshot.max_sessions,
        refused_sessions: snapshot.refused_sessions,
        cluster: snapshot.cluster.clone(),
        sessions: snapshot
            .sessions
            .iter()
            .map(|row| json::SessionJson::new(row, now, snapshot.op_timeout))
            .collect(),
    })
    .into_response()
}

async fn list_feeds(State(state): State<ApiState>) -> Response {
    let now = Instant::now();
    let feeds: Vec<serde_json::Value> = state
        .engine
        .feeds()
        .statuses()
        .iter()
        .map(|feed| {
            let view = feed.view();
            let bad: serde_json::Map<String, serde_json::Value> = crate::engine::feeds::BadFrame::ALL
                .iter()
                .map(|kind| (kind.as_str().to_string(), feed.bad(*kind).into()))
                .collect();
            json!({
                "feed": view.index,
                "url": view.url,
                "state": view.state.word(),
                "messages": view.messages,
                "transcripts": view.transcripts,
                "duplicates": view.duplicates,
                "refused_sessions": view.refused_sessions,
                "connects": view.connects,
                "last_message_age_seconds": view.last_message_at.map(|t| now.saturating_duration_since(t).as_secs_f64()),
                "bad_frames": bad,
            })
        })
        .collect();
    axum::Json(json!({"feeds": feeds})).into_response()
}

/// Liveness: 200 while the process runs; the body says `degraded` when
/// the database cannot write (the engine goes on in memory).
async fn healthz(State(state): State<ApiState>) -> String {
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
async fn readyz(State(state): State<ApiState>) -> Response {
    let readiness = state.engine.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

async fn session_detail(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let session = session_id(&raw)?;
    if let Some(detail) = state.engine.session_detail(&session, 20) {
        return Ok(axum::Json(json::SessionDetailJson::new(
            detail,
            Instant::now(),
            state.engine.op_timeout(),
        ))
        .into_response());
    }
    // Forgotten by memory: the database may still have it.
    match history::forgotten(&state, &session).await? {
        Some(detail) => {
            let mut body = serde_json::to_value(json::SessionDetailJson::new(
                detail,
                Instant::now(),
                state.engine.op_timeout(),
            ))
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            body["from_disk"] = serde_json::Value::Bool(true);
            Ok(axum::Json(body).into_response())
        }
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no session {session}"),
        )),
    }
}

async fn trigger(
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
    let body = match answer {
        TriggerAnswer::Started { run_id } => json!({"outcome": "started", "run_id": run_id}),
        TriggerAnswer::Pending {
            running_run_id,
            since,
        } => json!({
            "outcome": "pending",
            "running_run_id": running_run_id,
            "running_since": crate::state::status::unix_seconds(since),
        }),
        TriggerAnswer::Skipped {
            running_run_id,
            since,
        } => json!({
            "outcome": "skipped",
            "running_run_id": running_run_id,
            "running_since": crate::state::status::unix_seconds(since),
        }),
    };
    let status = match answer {
        TriggerAnswer::Skipped { .. } => StatusCode::CONFLICT,
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, axum::Json(body)).into_response())
}

async fn cancel(
    State(state): State<ApiState>,
    Path((raw, op)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (session, op) = (session_id(&raw)?, operation(&op)?);
    Ok(match state.engine.cancel(&session, op) {
        Some(run_id) => {
            axum::Json(json!({"outcome": "cancelled", "run_id": run_id})).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"outcome": "none", "error": "no run in flight"})),
        )
            .into_response(),
    })
}

async fn render_metrics(State(state): State<ApiState>) -> Response {
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

    #[test]
    fn public_addresses_need_a_token() {
        let open = ApiConfig {
            addr: "0.0.0.0:8787".parse().unwrap(),
            ..Default::default()
        };
        assert!(open.check().unwrap_err().contains("--api-token"));
        let with_token = ApiConfig {
            token: Some("s3cret".into()),
            ..open.clone()
        };
        assert!(with_token.check().is_ok());
        let loopback = ApiConfig {
            addr: "127.0.0.1:8787".parse().unwrap(),
            ..Default::default()
        };
        assert!(loopback.check().is_ok());
        let v6 = ApiConfig {
            addr: "[::1]:8787".parse().unwrap(),
            ..Default::default()
        };
        assert!(v6.check().is_ok());
    }
}
