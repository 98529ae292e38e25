//! The HTTP and WebSocket API (axum).
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/llm/processing-status/{id}` | the original status JSON |
//! | `GET /api/sessions`, `GET /api/sessions/{id}` | sessions with per-op statistics; one in full |
//! | `GET /api/feeds` | each feed's state and counters, bad frames by kind |
//! | `GET /api/deliveries` | each webhook endpoint's counters and backlog, the newest dead letters |
//! | `POST /api/sessions/{id}/operations/{op}` | 202 started / pending, 409 skipped |
//! | `DELETE /api/sessions/{id}/operations/{op}` | 200 cancelled, 404 when nothing runs |
//! | `GET /api/dashboard?since&epoch` | the rows changed since a version, for `inflight attach` |
//! | `GET /api/dashboard/sessions/{id}` | one session's details in the same form |
//! | `GET /api/logs?from&level&session` | the newest log lines, read as a stream |
//! | `GET /ws?session=ID&since=ID` | `processing_status`, `summary_update`, `mind_map_update` envelopes; resumable |
//! | `POST /api/transcripts` | a batch pushed in (JSON array or NDJSON): counts per session |
//! | `GET /ingest?results=true` | a WebSocket pushing native messages in; statuses (and results) back |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | liveness, never behind the token |
//! | `GET /api/openapi.json` | this API as an OpenAPI 3.1 document (`openapi.rs`) |
//!
//! Loopback by default; any other address needs a bearer token, checked in
//! constant time on every route but `/healthz` and `/readyz`: the
//! operator's (reads, triggers, cancels) or a viewer's (reads only). The
//! two push routes take only the ingest token, which opens nothing else. Web pages are kept out on
//! every route (see `browsers.rs`): foreign `Origin`s, and on loopback foreign
//! `Host`s, get 403.
//!
//! Here: the settings, the router and its guards. The handlers are in
//! `routes.rs` (plain routes), `dashboard.rs`, `logs.rs`, `history.rs` and
//! `ws.rs`; who may do what in `auth.rs`; refusals in `errors.rs`; every
//! answer's typed body in `json.rs`; the OpenAPI document derived from
//! them in `openapi.rs`.

mod auth;
mod browsers;
pub mod client;
pub mod dashboard;
mod errors;
mod history;
pub mod ingest;
pub mod json;
pub mod logs;
mod metrics;
mod openapi;
mod recording;
mod routes;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
pub use errors::ErrorJson;
use errors::{ApiError, error, session_id};
pub use json::BudgetRaisedJson;
pub use metrics::Metrics;
pub use openapi::{SerdeDuration, document_json};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub use auth::Role;
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
    /// The ingest token: may push transcripts only. Without it, pushing
    /// is off.
    pub ingest_token: Option<String>,
    /// How many pushers, and how large a batch.
    pub ingest: ingest::IngestLimits,
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
            ingest_token: None,
            ingest: ingest::IngestLimits::default(),
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
        if !self.addr.ip().is_loopback()
            && no_token
            && self.ingest_token.as_deref().is_some_and(|t| !t.is_empty())
        {
            return Err(format!(
                "refusing to serve the API on {} with only an ingest token: its reads would be \
                 open to anyone; set --api-token too",
                self.addr
            ));
        }
        if !self.addr.ip().is_loopback() && no_token {
            return Err(format!(
                "refusing to serve the API on {} without a token: set --api-token or INFLIGHT_API_TOKEN, or bind a loopback address",
                self.addr
            ));
        }
        Ok(())
    }
}

#[derive(Clone)]
struct ApiState {
    engine: Engine,
    token: Option<Arc<str>>,
    read_token: Option<Arc<str>>,
    ingest_token: Option<Arc<str>>,
    /// Pushing, when the ingest token is configured.
    inbound: Option<Arc<ingest::Inbound>>,
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
    let ingest_token = secret(&config.ingest_token);
    let inbound = ingest_token
        .as_ref()
        .map(|_| Arc::new(ingest::Inbound::new(&engine, config.ingest)));
    let state = ApiState {
        rows: Arc::new(dashboard::RowJournal::new(engine.snapshot())),
        engine,
        token: secret(&config.token),
        read_token: secret(&config.read_token),
        ingest_token,
        inbound,
        metrics,
        ws: Arc::new(ws::Subscribers::new(config.ws)),
        logs: config.logs.clone(),
    };
    let protected = Router::new()
        .route(
            "/api/llm/processing-status/{session_id}",
            get(routes::processing_status),
        )
        .route("/api/sessions", get(routes::list_sessions))
        .route("/api/feeds", get(routes::list_feeds))
        .route("/api/deliveries", get(routes::list_deliveries))
        .route("/api/history", get(history::list))
        .route("/api/sessions/{session_id}", get(routes::session_detail))
        .route(
            "/api/sessions/{session_id}/operations/{op}",
            post(routes::trigger).delete(routes::cancel),
        )
        .route(
            "/api/sessions/{session_id}/budget/lift",
            post(routes::lift_budget),
        )
        .route(
            "/api/sessions/{session_id}/budget/raise",
            post(routes::raise_budget),
        )
        .route("/api/dashboard", get(dashboard::delta))
        .route(
            "/api/dashboard/sessions/{session_id}",
            get(dashboard::detail),
        )
        .route("/api/logs", get(logs::lines))
        .route("/ws", get(ws::upgrade))
        .route("/api/recording", get(recording::upgrade))
        .route("/metrics", get(routes::render_metrics))
        .route("/api/openapi.json", get(openapi::document))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let pushing = Router::new()
        .route(
            "/api/transcripts",
            post(ingest::push_batch).layer(DefaultBodyLimit::max(config.ingest.max_batch)),
        )
        .route("/ingest", get(ingest::upgrade))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_ingest_token,
        ));
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .merge(protected)
        .merge(pushing)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(errors::refusals_as_json))
        .layer(middleware::from_fn_with_state(
            config.ingest.max_batch,
            refuse_large_bodies,
        ))
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

/// No route reads a large body; a request announcing one is refused before
/// anything reads it (`DefaultBodyLimit` covers the extractors that do read).
async fn refuse_large_bodies(
    axum::extract::State(max_batch): axum::extract::State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = match request.uri().path() {
        "/api/transcripts" => max_batch,
        _ => MAX_BODY_BYTES,
    };
    if announced.is_some_and(|n| n > limit as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request bodies here are limited to {limit} bytes"),
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
