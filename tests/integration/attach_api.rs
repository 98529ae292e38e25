//! The API `inflight attach` reads, with real clients over loopback: roles,
//! the log stream, resumable events, and the rows sent as changes.

use crate::common;

use crate::common::api_server;

use api_server::{http, server, server_with};
use futures_util::StreamExt;
use inflight::api::ApiConfig;
use inflight::api::Role;
use inflight::api::dashboard::{DashboardDelta, RowJournal};
use inflight::api::logs::LogsAnswer;
use inflight::logs::LogBuffer;
use inflight::model::Operation;
use inflight::state::Policy;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn with_token(method: reqwest::Method, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_viewer_token_reads_and_may_not_trigger_or_cancel() {
    let s = server_with(
        Policy::Coalesce,
        ApiConfig {
            token: Some("op".into()),
            read_token: Some("view".into()),
            ..Default::default()
        },
    )
    .await;
    let session = common::open_session(&s.engine, "s1");
    let dashboard = format!("{}/api/dashboard", s.base);
    let trigger = format!("{}/api/sessions/s1/operations/summary", s.base);

    let (code, _) = with_token(reqwest::Method::GET, &dashboard, None).await;
    assert_eq!(code, 401);
    let (code, body) = with_token(reqwest::Method::GET, &dashboard, Some("view")).await;
    assert_eq!((code, body["role"].as_str()), (200, Some("viewer")));
    let (code, body) = with_token(reqwest::Method::GET, &dashboard, Some("op")).await;
    assert_eq!((code, body["role"].as_str()), (200, Some("operator")));

    let (code, body) = with_token(reqwest::Method::POST, &trigger, Some("view")).await;
    assert_eq!(code, 403);
    assert!(
        body["error"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    assert!(
        !s.engine.status(&session).summary_processing,
        "a refused trigger starts nothing"
    );
    let (code, _) = with_token(reqwest::Method::POST, &trigger, Some("op")).await;
    assert_eq!(code, 202);
    let (code, _) = with_token(reqwest::Method::DELETE, &trigger, Some("view")).await;
    assert_eq!(code, 403);
    assert!(
        s.engine.status(&session).summary_processing,
        "still running"
    );
    let (code, _) = with_token(reqwest::Method::DELETE, &trigger, Some("op")).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn the_log_stream_filters_by_level_and_session_and_pages_on() {
    let logs = LogBuffer::new();
    let s = server_with(
        Policy::Coalesce,
        ApiConfig {
            logs: Some(logs.clone()),
            ..Default::default()
        },
    )
    .await;
    let now = std::time::SystemTime::now();
    logs.push(
        now,
        tracing::Level::DEBUG,
        Some("a".into()),
        "a debug".into(),
    );
    logs.push(now, tracing::Level::INFO, Some("a".into()), "a info".into());
    logs.push(now, tracing::Level::WARN, Some("b".into()), "b warn".into());
    logs.push(now, tracing::Level::INFO, None, "no session".into());
    let get = |query: &str| {
        let url = format!("{}/api/logs?{query}", s.base);
        async move {
            let answer: LogsAnswer = http().get(url).send().await.unwrap().json().await.unwrap();
            answer
        }
    };
    let texts = |a: &LogsAnswer| a.lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>();

    let all = get("").await;
    assert_eq!(texts(&all), ["a debug", "a info", "b warn", "no session"]);
    assert_eq!(all.next, 4);
    assert_eq!(
        texts(&get("level=info").await),
        ["a info", "b warn", "no session"]
    );
    assert_eq!(texts(&get("level=info&session=a").await), ["a info"]);
    let first = get("limit=2").await;
    assert_eq!(texts(&first), ["a debug", "a info"]);
    let rest = get(&format!("from={}", first.next)).await;
    assert_eq!(texts(&rest), ["b warn", "no session"]);
    assert!(get("from=4").await.lines.is_empty(), "nothing new");
    let (code, _) = with_token(
        reqwest::Method::GET,
        &format!("{}/api/logs?level=loud", s.base),
        None,
    )
    .await;
    assert_eq!(code, 400);

    // A reader that fell behind the buffer is told it missed lines.
    for i in 0..inflight::logs::LOG_CAPACITY {
        logs.push(now, tracing::Level::INFO, None, format!("line {i}"));
    }
    let behind = get("from=1&limit=1").await;
    assert!(behind.missed);
}

async fn connect(base: &str, query: &str) -> Socket {
    let url = format!("{}/ws{query}", base.replacen("http://", "ws://", 1));
    tokio_tungstenite::connect_async(url).await.expect("/ws").0
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

#[tokio::test]
async fn events_resume_after_the_last_seen_with_no_gap_and_no_duplicate() {
    let s = server(Policy::Coalesce, None).await;
    common::open_session(&s.engine, "s1");
    let session = common::sid("s1");

    // The original stream carries no ids.
    let mut plain = connect(&s.base, "").await;
    let mut resumable = connect(&s.base, "?since=0").await;
    let hello = next_json(&mut resumable).await;
    assert_eq!(hello["type"], "resume");
    assert_eq!(hello["too_old"], false);
    // A second resumable client that never goes away: the witness.
    let mut witness = connect(&s.base, "?since=0").await;
    assert_eq!(next_json(&mut witness).await["type"], "resume");
    s.engine.request(&session, Operation::SUMMARY);
    let message = next_json(&mut plain).await;
    assert_eq!(message["type"], "processing_status");
    assert!(message.get("id").is_none(), "{message}");
    let first = next_json(&mut resumable).await;
    assert_eq!(first["type"], "processing_status");
    let mut seen = first["id"].as_u64().expect("an id");
    assert_eq!(
        seen,
        hello["next_id"].as_u64().unwrap(),
        "the first id is next_id"
    );
    let first_id = seen;
    drop(resumable);

    // Away: a cancel and a new run happen.
    let mut events = s.engine.subscribe();
    s.engine.cancel(&session, Operation::SUMMARY);
    s.engine.request(&session, Operation::MIND_MAP);
    common::next_matching(&mut events, std::time::Duration::from_secs(10), |e| {
        matches!(
            e,
            inflight::events::Event::OpFinished {
                op: Operation::SUMMARY,
                ..
            }
        )
        .then_some(())
    })
    .await;

    let mut back = connect(&s.base, &format!("?since={seen}")).await;
    let hello = next_json(&mut back).await;
    assert_eq!(hello["too_old"], false);
    let next_id = hello["next_id"].as_u64().unwrap();
    let replayed = hello["replayed"].as_u64().unwrap();
    assert!(replayed >= 2, "the cancel and the new run: {hello}");
    assert_eq!(
        replayed,
        next_id - 1 - seen,
        "everything after {seen}: {hello}"
    );
    let mut got = Vec::new();
    for _ in 0..replayed {
        let message = next_json(&mut back).await;
        let id = message["id"].as_u64().unwrap();
        assert_eq!(id, seen + 1, "each id the one after the last: {message}");
        seen = id;
        got.push((id, message["type"].as_str().unwrap().to_string()));
    }
    // What the witness, connected all along, got for the same ids.
    let mut expected = Vec::new();
    while expected.last().is_none_or(|(id, _)| *id < seen) {
        let message = next_json(&mut witness).await;
        let id = message["id"].as_u64().unwrap();
        if id > first_id {
            expected.push((id, message["type"].as_str().unwrap().to_string()));
        }
    }
    assert_eq!(got, expected, "the replay is what a client that stayed got");
    assert_eq!(got[0].1, "processing_status", "the cancel: {got:?}");
    assert!(
        got.iter()
            .filter(|(_, kind)| kind == "processing_status")
            .count()
            >= 2,
        "the cancel and the mind map's admission: {got:?}"
    );
    // Live again: the next event follows on.
    s.engine.cancel(&session, Operation::MIND_MAP);
    let live = next_json(&mut back).await;
    assert_eq!(live["id"].as_u64().unwrap(), seen + 1, "{live}");

    // An id this server never gave (another process's): too old, reload.
    let mut stranger = connect(&s.base, "?since=999999999").await;
    let hello = next_json(&mut stranger).await;
    assert_eq!(hello["too_old"], true);
}

#[tokio::test]
async fn dashboard_answers_are_full_at_first_and_for_another_epoch() {
    let s = server(Policy::Coalesce, None).await;
    common::open_session(&s.engine, "s1");
    common::open_session(&s.engine, "s2");
    let get = |query: String| {
        let url = format!("{}/api/dashboard{query}", s.base);
        async move {
            let body: Value = http().get(url).send().await.unwrap().json().await.unwrap();
            let now = body["now"].as_i64().unwrap();
            let delta: DashboardDelta =
                inflight::monotime::decoding_with(now, || serde_json::from_value(body)).unwrap();
            delta
        }
    };
    let first = get(String::new()).await;
    assert!(first.full);
    assert_eq!(first.role, Role::Operator);
    let ids: Vec<&str> = first
        .snapshot
        .sessions
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids, ["s1", "s2"]);
    let other = get(format!(
        "?since={}&epoch={}",
        first.version,
        first.epoch ^ 1
    ))
    .await;
    assert!(other.full, "another server process: everything again");
    assert_eq!(other.snapshot.sessions.len(), 2);
    let ahead = get(format!(
        "?since={}&epoch={}",
        first.version + 100,
        first.epoch
    ))
    .await;
    assert!(ahead.full, "a version this journal never had");
}

fn journal_fixture() -> inflight::engine::Snapshot {
    // A server with two quiet sessions, as the engine reports them.
    let engine = inflight::engine::Engine::new(
        Default::default(),
        std::sync::Arc::new(inflight::llm::builtin::BuiltinBackend::new(
            inflight::llm::LatencyRange::ZERO,
        )),
    );
    common::open_session(&engine, "s1");
    common::open_session(&engine, "s2");
    common::open_session(&engine, "s3");
    engine.snapshot()
}

#[tokio::test(start_paused = true)]
async fn the_row_journal_sends_only_the_rows_that_changed() {
    let mut snapshot = journal_fixture();
    let journal = RowJournal::new(snapshot.clone());
    let ids = |d: &DashboardDelta| {
        d.snapshot
            .sessions
            .iter()
            .map(|r| r.id.as_str().to_string())
            .collect::<Vec<_>>()
    };
    let first = journal.delta(|| snapshot.clone(), None, None, Role::Operator);
    assert!(first.full);
    assert_eq!(ids(&first), ["s1", "s2", "s3"]);

    // Later, nothing changed: the header alone.
    tokio::time::advance(inflight::api::dashboard::REBUILD_EVERY).await;
    let idle = journal.delta(
        || snapshot.clone(),
        Some(first.version),
        Some(first.epoch),
        Role::Operator,
    );
    assert!(!idle.full);
    assert!(ids(&idle).is_empty() && idle.removed.is_empty());

    // One row changes, one session goes.
    snapshot.sessions[0].transcripts += 1;
    let gone = snapshot.sessions.remove(1).id;
    tokio::time::advance(inflight::api::dashboard::REBUILD_EVERY).await;
    let busy = journal.delta(
        || snapshot.clone(),
        Some(idle.version),
        Some(idle.epoch),
        Role::Viewer,
    );
    assert_eq!(ids(&busy), ["s1"]);
    assert_eq!(busy.removed, [gone]);
    assert_eq!(busy.role, Role::Viewer);

    // Asked again at once: the same build answers, no new snapshot.
    let again = journal.delta(
        || panic!("rebuilt within REBUILD_EVERY"),
        Some(idle.version),
        Some(idle.epoch),
        Role::Operator,
    );
    assert_eq!(ids(&again), ["s1"]);
    // A client that already has it gets nothing more.
    let caught_up = journal.delta(
        || panic!("rebuilt within REBUILD_EVERY"),
        Some(busy.version),
        Some(busy.epoch),
        Role::Operator,
    );
    assert!(ids(&caught_up).is_empty() && caught_up.removed.is_empty());
}

/// Every summary fails; mind maps are never asked for.
struct Failing;

impl inflight::llm::Backend for Failing {
    fn info(&self) -> inflight::llm::BackendInfo {
        inflight::llm::BackendInfo::simulated("failing", "none")
    }

    fn generate<'a>(
        &'a self,
        _request: inflight::llm::LlmRequest,
        _progress: &'a inflight::llm::Progress,
    ) -> inflight::llm::BoxFuture<'a, Result<inflight::llm::LlmResponse, inflight::llm::LlmError>>
    {
        Box::pin(async { Err(inflight::llm::LlmError::other("the server said no")) })
    }
}

#[tokio::test]
async fn the_api_and_status_show_the_engines_attention_value() {
    let engine = inflight::engine::Engine::new(
        inflight::engine::EngineConfig {
            automatic_ops: vec![Operation::SUMMARY],
            ..Default::default()
        },
        std::sync::Arc::new(Failing),
    );
    let mut events = engine.subscribe();
    let session = common::sid("s1");
    for seq in 1..=2 {
        engine.ingest(common::final_line("s1", seq, "We ship on Friday."), None);
        common::next_matching(&mut events, std::time::Duration::from_secs(10), |e| {
            matches!(e, inflight::events::Event::OpFinished { .. }).then_some(())
        })
        .await;
    }
    let s = api_server::serving(engine.clone(), ApiConfig::default()).await;
    let body: Value = http()
        .get(format!("{}/api/sessions", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["sessions"][0]["attention"],
        serde_json::json!([{"kind": "failing_in_a_row", "op": "summary", "failures": 2}])
    );
    let dashboard_rows = engine.snapshot();
    let row = &dashboard_rows.sessions[0];
    assert_eq!(row.id, session);
    let words: Vec<String> =
        inflight::engine::attention(row, tokio::time::Instant::now(), engine.op_timeout())
            .iter()
            .map(|a| a.describe())
            .collect();
    assert_eq!(words, ["summary failed 2 times in a row"]);
    let status = inflight::api::client::status(&s.base, None, false, None)
        .await
        .unwrap();
    let line = status.lines().find(|l| l.starts_with("s1 ")).unwrap();
    assert!(
        line.ends_with("summary failed 2 times in a row"),
        "{status}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_behind_the_removals_kept_reads_everything_again() {
    let mut snapshot = journal_fixture();
    let journal = RowJournal::keeping(snapshot.clone(), 1);
    let first = journal.delta(|| snapshot.clone(), None, None, Role::Operator);
    // Two sessions go, one build apart: the journal keeps one removal.
    snapshot.sessions.remove(0);
    tokio::time::advance(inflight::api::dashboard::REBUILD_EVERY).await;
    let second = journal.delta(
        || snapshot.clone(),
        Some(first.version),
        Some(first.epoch),
        Role::Operator,
    );
    assert_eq!(second.removed, [common::sid("s1")]);
    snapshot.sessions.remove(0);
    tokio::time::advance(inflight::api::dashboard::REBUILD_EVERY).await;
    let recent = journal.delta(
        || snapshot.clone(),
        Some(second.version),
        Some(second.epoch),
        Role::Operator,
    );
    assert!(!recent.full);
    assert_eq!(recent.removed, [common::sid("s2")]);
    // A client still at the first version missed a removal no longer kept.
    let behind = journal.delta(
        || snapshot.clone(),
        Some(first.version),
        Some(first.epoch),
        Role::Operator,
    );
    assert!(behind.full);
    assert_eq!(behind.snapshot.sessions.len(), 1);
}

#[tokio::test]
async fn one_sessions_details_come_in_the_dashboards_form() {
    let s = server(Policy::Coalesce, None).await;
    common::open_session(&s.engine, "s1");
    let response = http()
        .get(format!("{}/api/dashboard/sessions/s1", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    let now = body["now"].as_i64().unwrap();
    let answer: inflight::api::dashboard::DetailAnswer =
        inflight::monotime::decoding_with(now, || serde_json::from_value(body)).unwrap();
    assert_eq!(answer.detail.row.id, common::sid("s1"));
    assert!(!answer.from_disk);
    assert_eq!(answer.detail.content.partial.as_deref(), Some("…"));
    let missing = http()
        .get(format!("{}/api/dashboard/sessions/nobody", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}
