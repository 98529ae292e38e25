//! The API's OpenAPI 3.1 document, derived by `utoipa` from the handlers'
//! `#[utoipa::path]` attributes and the answer types of `json.rs` and its
//! neighbours, so that it changes when they do. Served at
//! `GET /api/openapi.json`, printed by `inflight openapi`, and kept in
//! `docs/openapi.json`, which a test compares with it.
//!
//! Also here: the schemas of the `/ws` messages, which are written by hand
//! in `wire.rs` (the original envelope), and of the refusals' shared
//! shape; and the bearer tokens as security schemes, one per role.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{self, Components};
use utoipa::{Modify, OpenApi, ToSchema};

use super::errors::ErrorJson;
use super::{dashboard, history, ingest, json, logs, recording, routes, ws};
use crate::state::status::ProcessingStatus;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "inflight",
        description = "The HTTP and WebSocket API of an inflight server: its sessions, their \
operations' runs, feeds, webhooks, logs and metrics; triggers, cancels and budgets; \
transcripts pushed in.\n\nRoles: on a loopback address with no token configured, every \
route but the push routes is open. Otherwise a request carries `Authorization: Bearer \
TOKEN`: the operator's token (`--api-token`) reads and writes, a viewer's \
(`--api-read-token`) only reads (writes answer 403), and the ingest token \
(`--api-ingest-token`) only pushes transcripts. `/healthz` and `/readyz` take none. Web \
pages from other origins get 403 on every route.\n\nOperation names in paths and keys are \
the server's own: `summary`, `mind_map`, then its config file's.",
        license(name = "MIT"),
    ),
    paths(
        routes::processing_status,
        routes::list_sessions,
        routes::session_detail,
        routes::trigger,
        routes::cancel,
        routes::lift_budget,
        routes::raise_budget,
        routes::list_feeds,
        routes::list_deliveries,
        routes::render_metrics,
        routes::healthz,
        routes::readyz,
        history::list,
        dashboard::delta,
        dashboard::detail,
        logs::lines,
        ws::upgrade,
        recording::upgrade,
        ingest::push_batch,
        ingest::upgrade,
        document,
    ),
    components(schemas(
        json::OperationJson,
        json::ResultJson,
        LogLevel,
        FeedBatch,
        WsMessage,
        WsProcessingStatus,
        WsResultUpdate,
        ws::ResumeJson,
    )),
    modifiers(&Roles, &Refusals, &Links),
    tags(
        (name = "sessions", description = "Sessions, their statuses and details, past sessions"),
        (name = "operations", description = "Triggering and cancelling runs"),
        (name = "budgets", description = "A session's own spend budget"),
        (name = "feeds", description = "The feeds transcripts come from"),
        (name = "webhooks", description = "Deliveries to webhook endpoints"),
        (name = "dashboard", description = "What `inflight attach` draws"),
        (name = "logs", description = "The process's log lines"),
        (name = "streams", description = "WebSockets of statuses, results and records"),
        (name = "ingest", description = "Transcripts pushed in"),
        (name = "health", description = "Liveness, readiness and metrics"),
    ),
)]
struct ApiDoc;

/// The bearer tokens, one scheme per role.
struct Roles;

impl Modify for Roles {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Components::new);
        for (name, who) in [
            (
                "operator",
                "The operator's token (`--api-token`): reads, triggers, cancels",
            ),
            (
                "viewer",
                "A viewer's token (`--api-read-token`): reads only",
            ),
            (
                "ingest",
                "The ingest token (`--api-ingest-token`): pushes transcripts only",
            ),
        ] {
            let scheme = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(who))
                .build();
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
}

/// The refusals every route can give, added to each rather than written
/// on each: 400 for a query, path or body that cannot be read, 401 for a missing or wrong token where one is needed, 403 for
/// a token of the wrong role or a web page of another origin, and 413 for
/// a body past the limit where a route takes one.
struct Refusals;

impl Modify for Refusals {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        use openapi::path::HttpMethod;
        use openapi::{ContentBuilder, Ref, ResponseBuilder};
        let refusal = |why: &str| {
            ResponseBuilder::new()
                .description(why)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorJson")))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            for method in [HttpMethod::Get, HttpMethod::Post, HttpMethod::Delete] {
                let operation = match method {
                    HttpMethod::Get => item.get.as_mut(),
                    HttpMethod::Post => item.post.as_mut(),
                    _ => item.delete.as_mut(),
                };
                let Some(operation) = operation else { continue };
                let needs_token = operation.security.as_ref().is_some_and(|all| {
                    all.iter().any(|one| {
                        serde_json::to_value(one).is_ok_and(|v| v != serde_json::json!({}))
                    })
                });
                let reads_input = operation.parameters.as_ref().is_some_and(|p| !p.is_empty())
                    || operation.request_body.is_some();
                let answers = &mut operation.responses.responses;
                if reads_input {
                    answers.entry("400".into()).or_insert_with(|| {
                        refusal("A query, path or body that cannot be read").into()
                    });
                }
                if needs_token {
                    answers.entry("401".into()).or_insert_with(|| {
                        refusal("No token, or a wrong one (with `WWW-Authenticate: Bearer`)").into()
                    });
                }
                answers.entry("403".into()).or_insert_with(|| {
                    refusal(if needs_token {
                        "A token of a role that may not do this, or a web page of another origin"
                    } else {
                        "A web page of another origin"
                    })
                    .into()
                });
                if method == HttpMethod::Post {
                    answers
                        .entry("413".into())
                        .or_insert_with(|| refusal("A body past the limit").into());
                }
            }
        }
    }
}

/// Where a session's id comes from for the routes that take one: the
/// sessions list. Clients and fuzzers follow these from one answer to the
/// next request.
struct Links;

impl Modify for Links {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        use openapi::link::LinkBuilder;
        let Some(listed) = doc
            .paths
            .paths
            .get_mut("/api/sessions")
            .and_then(|item| item.get.as_mut())
            .and_then(|op| op.responses.responses.get_mut("200"))
        else {
            return;
        };
        let openapi::RefOr::T(listed) = listed else {
            return;
        };
        let first = "$response.body#/sessions/0/session_id";
        for (name, operation, op) in [
            ("status", "processing_status", None),
            ("details", "session_detail", None),
            ("dashboard_details", "detail", None),
            ("trigger_summary", "trigger", Some("summary")),
            ("cancel_summary", "cancel", Some("summary")),
            ("lift_budget", "lift_budget", None),
            ("raise_budget", "raise_budget", None),
        ] {
            let mut link = LinkBuilder::new()
                .operation_id(operation)
                .parameter("session_id", first)
                .description("The first session listed");
            if let Some(op) = op {
                link = link.parameter("op", op);
            }
            listed.links.insert(name.to_string(), link.build().into());
        }
    }
}

/// The document, as this build's handlers and types describe it.
pub fn document_of_this_build() -> openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The document as pretty JSON, as `docs/openapi.json` holds it: built
/// once, as it cannot change while the process runs.
pub fn document_json() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let mut doc = serde_json::to_value(document_of_this_build()).unwrap_or_default();
        unsigned_formats(&mut doc);
        link_field_names(&mut doc);
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        text
    })
}

/// `utoipa` writes a link's fields in snake case (`operation_id`); the
/// specification spells them `operationId`, `operationRef`, `requestBody`.
fn link_field_names(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.to_string(), value);
            }
        }
    }
}

/// `utoipa` writes unsigned formats as `u-int64`; the name in use
/// elsewhere is `uint64`.
fn unsigned_formats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(format)) = map.get_mut("format")
                && let Some(bits) = format.strip_prefix("u-int")
            {
                *format = format!("uint{bits}");
            }
            map.values_mut().for_each(unsigned_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unsigned_formats),
        _ => {}
    }
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health",
    responses((status = 200, description = "This document", content_type = "application/json")),
    security(("operator" = []), ("viewer" = [])))]
pub(super) async fn document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
        .into_response()
}

/// The headers of a WebSocket handshake (RFC 6455), which the WebSocket
/// routes need; without them they answer 400.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct Handshake {
    #[serde(rename = "Connection")]
    #[param(pattern = "^[Uu]pgrade$")]
    connection: String,
    #[serde(rename = "Upgrade")]
    #[param(pattern = "^websocket$")]
    upgrade: String,
    #[serde(rename = "Sec-WebSocket-Version")]
    #[param(pattern = "^13$")]
    version: String,
    /// 16 random bytes in base64.
    #[serde(rename = "Sec-WebSocket-Key")]
    #[param(pattern = "^[A-Za-z0-9+/]{22}==$")]
    key: String,
}

/// A batch pushed as JSON: an array of at least one feed message, or one
/// message alone. An item that is no feed message is counted in the
/// answer's `unreadable`, not refused with the batch; an empty batch is
/// refused (400).
pub struct FeedBatch;

impl utoipa::PartialSchema for FeedBatch {
    fn schema() -> openapi::RefOr<openapi::schema::Schema> {
        use openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, SchemaType, Type};
        let anything = ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .build();
        let array = ArrayBuilder::new().items(anything).min_items(Some(1));
        let alone = ObjectBuilder::new().schema_type(SchemaType::from_iter([
            Type::Object,
            Type::String,
            Type::Number,
            Type::Integer,
            Type::Boolean,
            Type::Null,
        ]));
        AnyOfBuilder::new()
            .item(array)
            .item(alone)
            .description(Some(
                "Feed messages (`transcript`, `session_end`, …) in an array, or one alone; an \
                 item that is none is counted unreadable",
            ))
            .into()
    }
}

impl ToSchema for FeedBatch {}

/// A batch pushed as NDJSON: feed messages, one a line; at least one line
/// that is not blank.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "\\S")]
#[allow(dead_code)]
pub struct FeedLines(String);

/// A log level, the most verbose wanted.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The duration of a cluster's lease, as serde writes a `Duration`.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
pub struct SerdeDuration {
    secs: u64,
    nanos: u32,
}

/// A text message of `/ws`.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum WsMessage {
    ProcessingStatus(WsProcessingStatus),
    ResultUpdate(WsResultUpdate),
    Resume(ws::ResumeJson),
}

/// `processing_status`: sent on every start, finish and skip of a run.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
pub struct WsProcessingStatus {
    /// `processing_status`.
    #[serde(rename = "type")]
    #[schema(pattern = "^processing_status$")]
    kind: String,
    data: ProcessingStatus,
    /// RFC 3339, UTC, whole seconds.
    timestamp: String,
    #[serde(rename = "sessionId")]
    session_id: crate::model::SessionId,
    /// The event's number, on a stream opened with `since`.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
}

/// `{op}_update` (`summary_update`, `mind_map_update`, …): a result was
/// stored.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
pub struct WsResultUpdate {
    /// `{op}_update`.
    #[serde(rename = "type")]
    #[schema(pattern = "^[a-z][a-z0-9_]*_update$")]
    kind: String,
    data: WsResultData,
    /// RFC 3339, UTC, whole seconds.
    timestamp: String,
    #[serde(rename = "sessionId")]
    session_id: crate::model::SessionId,
    /// The event's number, on a stream opened with `since`.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
}

/// A result: `session_id`, then the result itself under the operation's
/// name (text as a string, a tree or JSON as JSON), then how it was made.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
pub struct WsResultData {
    session_id: crate::model::SessionId,
    covered_generation: u64,
    model: String,
    /// Seconds the call took.
    processing_time: f64,
}

/// A cancel's 404: nothing in flight, or no such operation.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum CancelRefused {
    Nothing(json::CancelJson),
    Refused(ErrorJson<'static>),
}
