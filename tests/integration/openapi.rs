//! The API's OpenAPI document as a contract the real binary keeps: the
//! document a build prints is the one it serves and the one kept in
//! `docs/openapi.json`; it names every route the router has; a busy
//! server's real answers, refusals and `/ws` messages fit its schemas; and
//! schemathesis, fuzzing the server against it as each role, finds
//! nothing wrong (`scripts/fuzz-api.sh`).

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::blocking;
use crate::common::child::{Logged, field, fresh_dir, inflight as bin};

const OPERATOR: &str = "op-secret";
const VIEWER: &str = "view-secret";
const INGEST: &str = "ingest-secret";

fn kept_in_docs() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
        .expect("docs/openapi.json is there")
}

fn printed() -> String {
    let out = bin()
        .arg("openapi")
        .output()
        .expect("inflight openapi runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The paths the router serves, read from where it is built.
fn routed_paths() -> BTreeSet<String> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/mod.rs"))
        .expect("the router's source");
    source
        .split(".route(")
        .skip(1)
        .filter_map(|call| {
            let start = call.find('"')? + 1;
            let end = start + call[start..].find('"')?;
            Some(call[start..end].to_string())
        })
        .collect()
}

/// A busy `serve` with a database and all three tokens.
fn busy_server(name: &str) -> (Logged, String) {
    let dir = fresh_dir("openapi", name);
    let mut serve = Logged::spawn(
        bin()
            .args(["serve", "--api", "127.0.0.1:0", "--db"])
            .arg(dir.join("inflight.db"))
            .args(["--api-token", OPERATOR, "--api-read-token", VIEWER])
            .args(["--api-ingest-token", INGEST])
            .args(["--demo-speed", "8", "--simulate-latency", "50ms..150ms"]),
    );
    let api = field(&serve.wait_for("API listening"), "bound");
    (serve, format!("http://{api}"))
}

#[test]
fn the_document_printed_served_and_kept_in_docs_is_one() {
    let printed = printed();
    assert!(
        printed == kept_in_docs(),
        "docs/openapi.json is not this build's document: write it again with \
         `cargo run -q -- openapi > docs/openapi.json`"
    );
    let doc: Value = serde_json::from_str(&printed).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let (_serve, base) = busy_server("served");
    let served = call(
        "GET",
        &format!("{base}/api/openapi.json"),
        Some(VIEWER),
        None,
    );
    assert_eq!(served.0, 200);
    assert_eq!(served.1, printed, "the served document is the printed one");
    // Behind a token, as every read.
    assert_eq!(
        call("GET", &format!("{base}/api/openapi.json"), None, None).0,
        401
    );

    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        documented,
        routed_paths(),
        "every route, and only routes, are documented"
    );
    // Every operation says who may call it, and how it is refused.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let answers = operation["responses"].as_object().unwrap();
            assert!(
                operation["security"].is_array(),
                "{method} {path}: no security"
            );
            assert!(answers.contains_key("403"), "{method} {path}: no 403");
            let open = operation["security"] == json!([{}]);
            assert_eq!(!open, answers.contains_key("401"), "{method} {path}: 401");
        }
    }
}

/// `method url` as `token`, with `body`: its status and body.
fn call(method: &str, url: &str, token: Option<&str>, body: Option<(&str, &str)>) -> (u16, String) {
    blocking::call(method, url, token, body).unwrap_or_else(|| panic!("{method} {url}: no answer"))
}

/// Checks `body` against the document's schema at `pointer` (a JSON
/// pointer into the document), naming what does not fit.
fn fits(doc: &Value, pointer: &str, body: &Value, what: &str) {
    assert!(
        doc.pointer(pointer).is_some(),
        "{what}: the document has no {pointer}"
    );
    let mut root = doc.clone();
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    root["$ref"] = Value::String(format!("#{fragment}"));
    let validator = jsonschema::validator_for(&root).expect("the document is a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not fit {pointer}: {errors:#?}\n{body:#}"
    );
}

/// The pointer to the JSON body schema of `method path` answering `status`.
fn answer_schema(path: &str, method: &str, status: u16) -> String {
    let path = path.replace('~', "~0").replace('/', "~1");
    format!("/paths/{path}/{method}/responses/{status}/content/application~1json/schema")
}

/// A request: method, documented path, real path, token, and a
/// `(content type, body)`.
type Case<'a> = (
    &'a str,
    &'a str,
    String,
    Option<&'a str>,
    Option<(&'a str, &'a str)>,
);

#[test]
fn a_busy_servers_answers_and_refusals_fit_the_document() {
    let doc: Value = serde_json::from_str(&printed()).unwrap();
    let (mut serve, base) = busy_server("answers");
    serve.wait_for_nth("processing finished", 4);
    let (_, listed) = call("GET", &format!("{base}/api/sessions"), Some(VIEWER), None);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let id = listed["sessions"][0]["session_id"]
        .as_str()
        .expect("a session")
        .to_string();

    let long_id = "x".repeat(200);
    let cases: Vec<Case> = vec![
        (
            "get",
            "/api/sessions",
            "/api/sessions".into(),
            Some(VIEWER),
            None,
        ),
        ("get", "/api/feeds", "/api/feeds".into(), Some(VIEWER), None),
        (
            "get",
            "/api/deliveries",
            "/api/deliveries".into(),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/history",
            "/api/history?limit=2".into(),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/history",
            "/api/history?cursor=nope".into(),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/sessions/{session_id}",
            format!("/api/sessions/{id}"),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/sessions/{session_id}",
            "/api/sessions/nobody".into(),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/sessions/{session_id}",
            format!("/api/sessions/{long_id}"),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/llm/processing-status/{session_id}",
            format!("/api/llm/processing-status/{id}"),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/dashboard",
            "/api/dashboard".into(),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/dashboard",
            "/api/dashboard?since=-1".into(),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/dashboard/sessions/{session_id}",
            format!("/api/dashboard/sessions/{id}"),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/logs",
            "/api/logs?level=info&limit=5".into(),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/logs",
            "/api/logs?level=loud".into(),
            Some(VIEWER),
            None,
        ),
        ("get", "/readyz", "/readyz".into(), None, None),
        ("get", "/api/sessions", "/api/sessions".into(), None, None),
        (
            "get",
            "/api/sessions",
            "/api/sessions".into(),
            Some(INGEST),
            None,
        ),
        (
            "post",
            "/api/sessions/{session_id}/operations/{op}",
            format!("/api/sessions/{id}/operations/summary"),
            Some(OPERATOR),
            None,
        ),
        (
            "post",
            "/api/sessions/{session_id}/operations/{op}",
            format!("/api/sessions/{id}/operations/summary"),
            Some(OPERATOR),
            None,
        ),
        (
            "post",
            "/api/sessions/{session_id}/operations/{op}",
            format!("/api/sessions/{id}/operations/summary"),
            Some(VIEWER),
            None,
        ),
        (
            "post",
            "/api/sessions/{session_id}/operations/{op}",
            format!("/api/sessions/{id}/operations/no_such_op"),
            Some(OPERATOR),
            None,
        ),
        (
            "delete",
            "/api/sessions/{session_id}/operations/{op}",
            format!("/api/sessions/{id}/operations/summary"),
            Some(OPERATOR),
            None,
        ),
        (
            "delete",
            "/api/sessions/{session_id}/operations/{op}",
            format!("/api/sessions/{id}/operations/summary"),
            Some(OPERATOR),
            None,
        ),
        (
            "post",
            "/api/sessions/{session_id}/budget/lift",
            format!("/api/sessions/{id}/budget/lift"),
            Some(OPERATOR),
            None,
        ),
        (
            "post",
            "/api/sessions/{session_id}/budget/raise",
            format!("/api/sessions/{id}/budget/raise"),
            Some(OPERATOR),
            Some(("application/json", "{\"tokens\": 5}")),
        ),
        (
            "post",
            "/api/sessions/{session_id}/budget/raise",
            format!("/api/sessions/{id}/budget/raise"),
            Some(OPERATOR),
            Some(("application/json", "{\"tokens\": -5}")),
        ),
        // Counts past 2^53 - 1, a cursor the server never wrote, and JSON's
        // ways of writing a whole number or nothing.
        (
            "get",
            "/api/logs",
            "/api/logs?from=9007199254740992".into(),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/logs",
            "/api/logs?from=9007199254740991".into(),
            Some(VIEWER),
            None,
        ),
        (
            "get",
            "/api/history",
            "/api/history?cursor=0.5".into(),
            Some(VIEWER),
            None,
        ),
        (
            "post",
            "/api/sessions/{session_id}/budget/raise",
            format!("/api/sessions/{id}/budget/raise"),
            Some(OPERATOR),
            Some(("application/json", "{\"tokens\": 2.0}")),
        ),
        (
            "post",
            "/api/sessions/{session_id}/budget/raise",
            format!("/api/sessions/{id}/budget/raise"),
            Some(OPERATOR),
            Some(("application/json", "null")),
        ),
        (
            "post",
            "/api/transcripts",
            "/api/transcripts".into(),
            Some(INGEST),
            Some((
                "application/json",
                r#"[{"type":"transcript","session_id":"pushed-1","seq":1,"text":"hello","is_final":true}, 7]"#,
            )),
        ),
        (
            "post",
            "/api/transcripts",
            "/api/transcripts".into(),
            Some(INGEST),
            Some(("application/json", "not json")),
        ),
        (
            "post",
            "/api/transcripts",
            "/api/transcripts".into(),
            Some(OPERATOR),
            Some(("application/x-ndjson", "{}")),
        ),
    ];
    let mut statuses = BTreeSet::new();
    let mut answered = Vec::new();
    for (method, path, real, token, body) in cases {
        let (status, text) = call(
            &method.to_uppercase(),
            &format!("{base}{real}"),
            token,
            body,
        );
        let what = format!("{} {real} -> {status}", method.to_uppercase());
        statuses.insert(status);
        answered.push((real.clone(), body.map(|(_, b)| b.to_string()), status));
        if real.ends_with("since=-1") {
            // axum's own refusal, in the API's shape with its words kept.
            assert!(text.contains("since"), "{what}: {text}");
        }
        let answers = &doc["paths"][path][method]["responses"];
        assert!(
            answers.get(status.to_string()).is_some(),
            "{what}: an undocumented status\n{text}"
        );
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
        fits(&doc, &answer_schema(path, method, status), &body, &what);
    }
    // What each of those was meant to get.
    let got = |real: &str, body: Option<&str>| {
        answered
            .iter()
            .find(|(r, b, _)| r.ends_with(real) && b.as_deref() == body)
            .map(|(_, _, status)| *status)
    };
    assert_eq!(got("/api/logs?from=9007199254740992", None), Some(400));
    assert_eq!(got("/api/logs?from=9007199254740991", None), Some(200));
    assert_eq!(got("/api/history?cursor=0.5", None), Some(400));
    assert_eq!(got("/api/history?limit=2", None), Some(200));
    // Read as raises, then refused for what they ask: no session budget.
    assert_eq!(got("/budget/raise", Some("{\"tokens\": 2.0}")), Some(409));
    assert_eq!(got("/budget/raise", Some("null")), Some(409));
    assert_eq!(got("/budget/raise", Some("{\"tokens\": -5}")), Some(400));
    assert_eq!(got("/api/transcripts", Some("not json")), Some(400));
    // The check does bite: a session count that is no number fails it.
    let mut wrong = listed.clone();
    wrong["sessions"][0]["transcripts"] = json!("many");
    let pointer = answer_schema("/api/sessions", "get", 200);
    assert!(std::panic::catch_unwind(|| fits(&doc, &pointer, &wrong, "a wrong list")).is_err());
    // The cases reach the answers they are meant to, refusals included.
    for status in [200, 202, 400, 401, 403, 404, 409] {
        assert!(
            statuses.contains(&status),
            "no case answered {status}: {statuses:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_messages_fit_the_documents_schemas() {
    let doc: Value =
        serde_json::from_str(&tokio::task::spawn_blocking(printed).await.unwrap()).unwrap();
    let (serve, base) = tokio::task::spawn_blocking(|| busy_server("ws"))
        .await
        .unwrap();
    let ws = base.replacen("http", "ws", 1);
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "{ws}/ws?since=0"
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {VIEWER}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("a WebSocket");
    let mut kinds: BTreeSet<String> = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !(kinds.contains("resume")
        && kinds.contains("processing_status")
        && kinds.iter().any(|k| k.ends_with("_update")))
    {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("resume, statuses and a result within a minute")
            .expect("the stream goes on")
            .expect("a message");
        let Message::Text(text) = message else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).expect("JSON");
        fits(
            &doc,
            "/components/schemas/WsMessage",
            &message,
            "a /ws message",
        );
        kinds.insert(message["type"].as_str().unwrap_or("?").to_string());
    }
    // The schema does bite: a message of no documented shape fails it.
    let mut root = doc.clone();
    root["$ref"] = json!("#/components/schemas/WsMessage");
    let validator = jsonschema::validator_for(&root).unwrap();
    assert!(!validator.is_valid(&json!({"type": "summary_update", "data": {}})));
    drop(serve);
}

#[test]
fn schemathesis_finds_nothing_wrong_as_any_role() {
    // A short pass; docs/TESTING.md records a long one.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fuzz-api.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(["5", env!("CARGO_BIN_EXE_inflight")])
        .stdin(Stdio::null())
        .output()
        .expect("the fuzz script runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found something:\n{said}"
    );
    for role in ["operator", "viewer", "none"] {
        assert!(
            said.contains(&format!("pass: {role}")),
            "no {role} pass:\n{said}"
        );
    }
    assert!(said.matches(" passed").count() >= 3, "{said}");
}
