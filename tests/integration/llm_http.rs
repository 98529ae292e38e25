//! The Ollama and OpenAI-compatible backends against scripted HTTP servers
//! on loopback that speak each protocol, good days and bad.

use crate::common;

use crate::common::scripted;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{final_line, next_matching, sid};
use inflight::engine::{Engine, EngineConfig, ResultBody};
use inflight::events::{Event, Outcome};
use inflight::llm::Backend;
use inflight::llm::http::AnswerLimits;
use inflight::llm::ollama::OllamaBackend;
use inflight::llm::openai::OpenAiBackend;
use inflight::model::Operation;
use inflight::state::StateConfig;
use scripted::{Scripted, Step, head, json_response, ollama_stream, send, sse_stream};
use serde_json::json;

fn ollama(server: &Scripted) -> Arc<dyn Backend> {
    Arc::new(OllamaBackend::new(Some(&server.url()), "llama3.2", Default::default()).unwrap())
}

fn openai(server: &Scripted, with_v1: bool) -> Arc<dyn Backend> {
    let url = if with_v1 {
        format!("{}/v1/", server.url())
    } else {
        server.url()
    };
    Arc::new(OpenAiBackend::new(&url, "qwen", Some("sk-test".into()), Default::default()).unwrap())
}

/// No run retries: these tests count the backend's own requests.
fn engine(backend: Arc<dyn Backend>, timeout: Duration, concurrency: usize) -> Engine {
    let config = EngineConfig {
        state: StateConfig {
            op_timeout: timeout,
            retries: 0,
            ..Default::default()
        },
        llm_concurrency: concurrency,
        automatic_ops: Vec::new(),
        ..Default::default()
    };
    Engine::new(config, backend)
}

/// Runs one op on a one-line session; returns how it ended.
async fn run_one(engine: &Engine, op: Operation) -> (Outcome, Option<String>) {
    let mut events = engine.subscribe();
    engine.ingest(final_line("s1", 1, "We ship the release on Friday."), None);
    engine.request(&sid("s1"), op);
    next_matching(&mut events, Duration::from_secs(20), |e| match e {
        Event::OpFinished { outcome, error, .. } => Some((*outcome, error.clone())),
        _ => None,
    })
    .await
}

fn summary_text(engine: &Engine) -> String {
    match engine
        .result(&sid("s1"), Operation::SUMMARY)
        .map(|r| r.body)
    {
        Some(ResultBody::Text(text)) => text,
        other => panic!("no summary: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_streams_a_summary_and_asks_for_the_schema_on_mind_maps() {
    let server = scripted::start(Arc::new(|_, r| match r.body["format"].is_object() {
        false => ollama_stream(&["We ", "ship ", "Friday."]),
        true => ollama_stream(&["{\"root\": {\"label\": \"Release\", ", "\"children\": []}}"]),
    }))
    .await;
    let engine = engine(ollama(&server), Duration::from_secs(10), 4);
    assert_eq!(
        run_one(&engine, Operation::SUMMARY).await,
        (Outcome::Ok, None)
    );
    assert_eq!(summary_text(&engine), "We ship Friday.");
    let request = server.request(0);
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/api/chat")
    );
    assert_eq!(
        request.body["model"], "llama3.2:latest",
        "no tag means :latest"
    );
    assert_eq!(request.body["stream"], true);
    assert!(request.body["options"]["num_ctx"].as_u64().unwrap() >= 4096);
    assert!(
        request.body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("We ship the release on Friday.")
    );
    assert!(request.body.get("format").is_none());

    let mut events = engine.subscribe();
    engine.request(&sid("s1"), Operation::MIND_MAP);
    let outcome = next_matching(&mut events, Duration::from_secs(10), |e| match e {
        Event::OpFinished { outcome, .. } => Some(*outcome),
        _ => None,
    })
    .await;
    assert_eq!(outcome, Outcome::Ok);
    assert_eq!(
        server.request(1).body["format"]["required"],
        json!(["root"])
    );
    let Some(ResultBody::Tree(map)) = engine
        .result(&sid("s1"), Operation::MIND_MAP)
        .map(|r| r.body)
    else {
        panic!("no mind map")
    };
    assert_eq!(map.to_tree().root.label, "Release");
}

#[tokio::test]
async fn openai_streams_over_sse_with_or_without_v1() {
    for with_v1 in [false, true] {
        let server = scripted::start(Arc::new(|_, _| {
            sse_stream(&["Ship ", "on ", "Friday."], true)
        }))
        .await;
        let engine = engine(openai(&server, with_v1), Duration::from_secs(10), 4);
        assert_eq!(
            run_one(&engine, Operation::SUMMARY).await,
            (Outcome::Ok, None)
        );
        assert_eq!(summary_text(&engine), "Ship on Friday.");
        let request = server.request(0);
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(request.body["stream"], true);
        assert_eq!(request.body["stream_options"]["include_usage"], true);
        assert!(
            request
                .headers
                .iter()
                .any(|(k, v)| k == "authorization" && v == "Bearer sk-test")
        );
        assert_eq!(
            engine.result(&sid("s1"), Operation::SUMMARY).unwrap().model,
            "served-model"
        );
    }
}

#[tokio::test]
async fn openai_without_done_or_usage_still_ends_well_and_mind_maps_use_response_format() {
    let server = scripted::start(Arc::new(|_, r| {
        if r.body["response_format"]["type"] == "json_schema" {
            sse_stream(&["Here is your map: ```json\n{\"root\": {\"label\": \"Budget\", \"children\": [{\"label\": \"Q3\"}]}}\n``` Enjoy!"], false)
        } else {
            sse_stream(&["No ", "DONE."], false)
        }
    }))
    .await;
    let engine = engine(openai(&server, false), Duration::from_secs(10), 4);
    assert_eq!(
        run_one(&engine, Operation::SUMMARY).await,
        (Outcome::Ok, None)
    );
    assert_eq!(summary_text(&engine), "No DONE.");
    assert_eq!(
        run_one(&engine, Operation::MIND_MAP).await,
        (Outcome::Ok, None)
    );
    let Some(ResultBody::Tree(map)) = engine
        .result(&sid("s1"), Operation::MIND_MAP)
        .map(|r| r.body)
    else {
        panic!("no mind map")
    };
    let map = map.to_tree();
    assert_eq!(map.root.label, "Budget");
    assert_eq!(map.root.children[0].label, "Q3");
}

#[tokio::test]
async fn a_mid_stream_error_fails_the_run_with_its_message() {
    let server = scripted::start(Arc::new(|_, _| {
        vec![
            head("200 OK", "application/x-ndjson", &[]),
            send("{\"message\":{\"content\":\"We \"},\"done\":false}\n"),
            send("{\"error\":\"model runner has unexpectedly stopped\"}\n"),
        ]
    }))
    .await;
    let engine = engine(ollama(&server), Duration::from_secs(10), 4);
    let (outcome, error) = run_one(&engine, Operation::SUMMARY).await;
    assert_eq!(outcome, Outcome::Failed);
    assert!(
        error
            .unwrap()
            .contains("model runner has unexpectedly stopped")
    );
    assert!(engine.result(&sid("s1"), Operation::SUMMARY).is_none());
}

#[tokio::test]
async fn busy_servers_are_retried_honouring_retry_after() {
    let server = scripted::start(Arc::new(|i, _| match i {
        0 => vec![Step::Send(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        )],
        1 => json_response("429 Too Many Requests", &json!({"error": "slow down"})),
        _ => ollama_stream(&["fine"]),
    }))
    .await;
    let engine = engine(ollama(&server), Duration::from_secs(20), 4);
    let started = std::time::Instant::now();
    assert_eq!(
        run_one(&engine, Operation::SUMMARY).await,
        (Outcome::Ok, None)
    );
    assert_eq!(server.request_count(), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(summary_text(&engine), "fine");
}

#[tokio::test]
async fn a_400_is_not_retried_and_says_why() {
    let server = scripted::start(Arc::new(|_, _| {
        json_response("400 Bad Request", &json!({"error": {"message": "model 'qwen' not found", "type": "invalid_request_error"}}))
    }))
    .await;
    let engine = engine(openai(&server, false), Duration::from_secs(10), 4);
    let (outcome, error) = run_one(&engine, Operation::SUMMARY).await;
    assert_eq!(outcome, Outcome::Failed);
    let error = error.unwrap();
    assert!(
        error.contains("400") && error.contains("model 'qwen' not found"),
        "{error}"
    );
    assert_eq!(
        server.request_count(),
        1,
        "no retry on a 4xx other than 429"
    );
}

#[tokio::test]
async fn a_server_that_hangs_after_its_headers_times_out_and_frees_the_slot() {
    let mut server = scripted::start(Arc::new(|_, _| {
        vec![head("200 OK", "application/x-ndjson", &[]), Step::Hang]
    }))
    .await;
    let engine = engine(ollama(&server), Duration::from_millis(500), 4);
    let (outcome, _) = run_one(&engine, Operation::SUMMARY).await;
    assert_eq!(outcome, Outcome::TimedOut);
    assert!(!engine.status(&sid("s1")).any_processing);
    tokio::time::timeout(Duration::from_secs(5), server.disconnects.recv())
        .await
        .expect("the HTTP stream is dropped at the deadline");
}

#[tokio::test]
async fn an_operator_cancel_drops_a_slow_drip_at_once() {
    let mut server = scripted::start(Arc::new(|_, _| {
        let mut steps = vec![head("200 OK", "application/x-ndjson", &[])];
        for _ in 0..600 {
            steps.push(send(
                "{\"message\":{\"content\":\"word \"},\"done\":false}\n",
            ));
            steps.push(Step::Sleep(Duration::from_millis(50)));
        }
        steps
    }))
    .await;
    let engine = engine(ollama(&server), Duration::from_secs(60), 4);
    engine.ingest(final_line("s1", 1, "hello"), None);
    engine.request(&sid("s1"), Operation::SUMMARY);
    // The server has the request and is dripping its answer.
    tokio::time::timeout(Duration::from_secs(5), server.received.recv())
        .await
        .expect("the request arrives");
    // The slot is free as soon as the cancel returns, before the stream ends.
    assert!(engine.cancel(&sid("s1"), Operation::SUMMARY).is_some());
    assert!(!engine.status(&sid("s1")).any_processing);
    tokio::time::timeout(Duration::from_secs(2), server.disconnects.recv())
        .await
        .expect("the server sees the stream dropped");
}

#[tokio::test]
async fn malformed_lines_are_skipped() {
    let server = scripted::start(Arc::new(|_, _| {
        vec![
            head("200 OK", "application/x-ndjson", &[]),
            send("{\"message\":{\"content\":\"Kept \"},\"done\":false}\n"),
            send("this is not json\n"),
            send("\n{\"message\":\n"),
            send("{\"message\":{\"content\":\"going.\"},\"done\":false}\r\n"),
            send("{\"done\":true}\n"),
        ]
    }))
    .await;
    let engine = engine(ollama(&server), Duration::from_secs(10), 4);
    assert_eq!(
        run_one(&engine, Operation::SUMMARY).await,
        (Outcome::Ok, None)
    );
    assert_eq!(summary_text(&engine), "Kept going.");
}

#[tokio::test]
async fn an_answer_that_never_ends_is_cut_off_at_the_byte_cap() {
    let line = format!(
        "{}\n",
        json!({"message": {"role": "assistant", "content": "and so on "}, "done": false})
    );
    let mut server = scripted::start(Arc::new(move |_, _| {
        vec![
            head("200 OK", "application/x-ndjson", &[]),
            Step::Forever(line.clone().into_bytes()),
        ]
    }))
    .await;
    let limits = AnswerLimits {
        max_tokens: 77,
        max_answer_bytes: 64 * 1024,
        context: None,
    };
    let backend = OllamaBackend::new(Some(&server.url()), "llama3.2", Default::default())
        .unwrap()
        .with_limits(limits);
    let engine = engine(Arc::new(backend), Duration::from_secs(60), 4);
    let (outcome, error) = run_one(&engine, Operation::SUMMARY).await;
    assert_eq!(outcome, Outcome::Failed);
    let error = error.unwrap();
    assert!(error.contains("passed 65536 bytes"), "{error}");
    assert_eq!(
        server.request(0).body["options"]["num_predict"],
        77,
        "--max-tokens is sent"
    );
    tokio::time::timeout(Duration::from_secs(5), server.disconnects.recv())
        .await
        .expect("the endless stream is dropped");
    assert!(engine.result(&sid("s1"), Operation::SUMMARY).is_none());
}

#[tokio::test]
async fn a_huge_error_body_is_read_only_in_part_and_shown_clean() {
    // 8 MB of error: more than the socket buffers hold, so the server only
    // finishes if the client reads it all.
    let body = format!(
        "{{\"error\": \"\u{1b}[31mout of memory{}\"}}",
        "!".repeat(8 << 20)
    );
    let mut server = scripted::start(Arc::new(move |_, _| {
        vec![
            Step::Send(
                format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes(),
            ),
            Step::Send(body.clone().into_bytes()),
        ]
    }))
    .await;
    let engine = engine(openai(&server, false), Duration::from_secs(60), 4);
    let (outcome, error) = run_one(&engine, Operation::SUMMARY).await;
    assert_eq!(outcome, Outcome::Failed);
    let error = error.unwrap();
    assert!(error.contains("500"), "{error}");
    assert!(
        error.len() < 600,
        "the message is cut: {} bytes",
        error.len()
    );
    assert!(!error.contains('\u{1b}'), "{error:?}");
    assert_eq!(server.request(0).body["max_tokens"], 1024);
    tokio::time::timeout(Duration::from_secs(5), server.disconnects.recv())
        .await
        .expect("the client stopped reading the body and hung up");
}

#[tokio::test]
async fn an_error_in_the_middle_of_a_stream_is_shown_clean_and_cut() {
    let server = scripted::start(Arc::new(|_, _| {
        let error = format!("\u{1b}]0;pwned\u{7}model crashed{}", "?".repeat(5000));
        vec![
            head("200 OK", "application/x-ndjson", &[]),
            send(&format!(
                "{}\n",
                json!({"message": {"content": "Half"}, "done": false})
            )),
            send(&format!("{}\n", json!({"error": error}))),
        ]
    }))
    .await;
    let engine = engine(ollama(&server), Duration::from_secs(10), 4);
    let (outcome, error) = run_one(&engine, Operation::SUMMARY).await;
    assert_eq!(outcome, Outcome::Failed);
    let error = error.unwrap();
    assert!(error.starts_with("Ollama: model crashed"), "{error:?}");
    assert!(error.chars().count() <= 320, "{}", error.len());
}

#[tokio::test]
async fn a_rejected_answer_is_kept_without_control_characters() {
    let server = scripted::start(Arc::new(|_, _| {
        ollama_stream(&["\u{1b}[2J\u{1b}]0;pwned\u{7}No map.\nSorry."])
    }))
    .await;
    let engine = engine(ollama(&server), Duration::from_secs(10), 4);
    let (outcome, _) = run_one(&engine, Operation::MIND_MAP).await;
    assert_eq!(outcome, Outcome::Failed);
    let detail = engine.session_detail(&sid("s1"), 5).unwrap();
    assert_eq!(
        detail.content.rejected[Operation::MIND_MAP].as_deref(),
        Some("No map.\nSorry.")
    );
}

#[tokio::test]
async fn an_unreadable_mind_map_fails_and_keeps_the_raw_answer() {
    let server = scripted::start(Arc::new(|_, _| {
        ollama_stream(&["I cannot draw maps, sorry."])
    }))
    .await;
    let engine = engine(ollama(&server), Duration::from_secs(10), 4);
    let (outcome, error) = run_one(&engine, Operation::MIND_MAP).await;
    assert_eq!(outcome, Outcome::Failed);
    let error = error.unwrap();
    assert!(error.contains("no mind-map JSON"), "{error}");
    assert!(
        error.ends_with(r#"the answer began: "I cannot draw maps, sorry.""#),
        "the start of the answer is shown: {error}"
    );
    let detail = engine.session_detail(&sid("s1"), 5).unwrap();
    assert_eq!(
        detail.content.rejected[Operation::MIND_MAP].as_deref(),
        Some("I cannot draw maps, sorry.")
    );
}

#[tokio::test]
async fn the_llm_concurrency_cap_holds_at_the_server() {
    let server = scripted::start(Arc::new(|_, _| {
        let mut steps = vec![head("200 OK", "application/x-ndjson", &[])];
        steps.push(Step::Sleep(Duration::from_millis(150)));
        steps.extend(ollama_stream(&["ok"]).into_iter().skip(1));
        steps
    }))
    .await;
    let engine = engine(ollama(&server), Duration::from_secs(30), 3);
    let mut events = engine.subscribe();
    for i in 0..20 {
        let name = format!("busy-{i}");
        engine.ingest(final_line(&name, 1, "status update"), None);
        engine.request(&sid(&name), Operation::SUMMARY);
    }
    common::wait_until(&mut events, Duration::from_secs(30), "all 20 runs", || {
        engine.is_idle() && engine.snapshot().totals.counts.ok == 20
    })
    .await;
    assert_eq!(server.request_count(), 20);
    assert_eq!(
        server.max_open.load(Ordering::SeqCst),
        3,
        "never more than 3 open requests, and the cap is used"
    );
}

#[tokio::test]
async fn the_check_says_clearly_when_the_server_is_down_or_the_model_missing() {
    let down =
        OllamaBackend::new(Some("http://127.0.0.1:9"), "llama3.2", Default::default()).unwrap();
    let error = down.check().await.unwrap_err();
    assert!(
        error.contains("not reachable at http://127.0.0.1:9"),
        "{error}"
    );
    assert!(!down.info().reachable);

    let server = scripted::start(Arc::new(|_, _| {
        json_response("200 OK", &json!({"models": [{"name": "mistral:latest"}]}))
    }))
    .await;
    let missing = OllamaBackend::new(Some(&server.url()), "llama3.2", Default::default()).unwrap();
    let error = missing.check().await.unwrap_err();
    assert!(
        error.contains("no model llama3.2:latest") && error.contains("mistral:latest"),
        "{error}"
    );
    let present = OllamaBackend::new(Some(&server.url()), "mistral", Default::default()).unwrap();
    present.check().await.unwrap();
    assert!(present.info().reachable);
}

/// A server that takes the model-list request and never answers: the check
/// gives up after its timeout (10 s, on a paused clock) instead of hanging.
#[tokio::test(start_paused = true)]
async fn a_model_list_that_never_comes_times_out() {
    let server = scripted::start(Arc::new(|_, _| vec![Step::Hang])).await;
    let backend = OpenAiBackend::new(&server.url(), "qwen", None, Default::default()).unwrap();
    let started = tokio::time::Instant::now();
    let error = backend.check().await.unwrap_err();
    assert!(error.contains("not reachable"), "{error}");
    assert!(
        error.to_lowercase().contains("timed out"),
        "the cause is the timeout: {error}"
    );
    assert!(started.elapsed() >= inflight::llm::http::MODEL_LIST_TIMEOUT);
    assert!(!backend.info().reachable);
}

/// One call straight to the backend, and its error.
async fn failing_call(backend: &Arc<dyn Backend>, op: Operation) -> inflight::llm::LlmError {
    let request = inflight::llm::LlmRequest::new(
        sid("s1"),
        op,
        vec![inflight::llm::Utterance::new(None, "We ship on Friday.")],
    );
    let progress = inflight::llm::Progress::default();
    backend
        .generate(request, &progress)
        .await
        .expect_err("the call fails")
}

#[tokio::test]
async fn errors_say_their_kind_for_callers_to_branch_on() {
    use inflight::llm::LlmErrorKind;
    let refusing = scripted::start(Arc::new(|_, _| {
        json_response("400 Bad Request", &json!({"error": "no such model"}))
    }))
    .await;
    let error = failing_call(&openai(&refusing, false), Operation::SUMMARY).await;
    assert_eq!(error.kind, LlmErrorKind::Refused { status: 400 }, "{error}");

    // Accepts, then closes without a word, twice: the server was there
    // and dropped the request, which is not "unreachable".
    let closing = scripted::start(Arc::new(|_, _| Vec::new())).await;
    let error = failing_call(&ollama(&closing), Operation::SUMMARY).await;
    assert_eq!(error.kind, LlmErrorKind::Dropped, "{error}");
    assert!(
        error
            .message
            .contains("closed the connection before answering"),
        "{error}"
    );
    assert_eq!(closing.request_count(), 2, "sent once more, then given up");
    assert_eq!(inflight::engine::short_cause(&error.message), "dropped");

    // Closed once (a pooled connection gone stale), then answered: the
    // request is sent again at once and the call succeeds.
    let once = scripted::start(Arc::new(|n, _| {
        if n == 0 {
            Vec::new()
        } else {
            vec![
                head("200 OK", "application/x-ndjson", &[]),
                send("{\"message\":{\"content\":\"ok\"},\"done\":true}\n"),
            ]
        }
    }))
    .await;
    let backend = ollama(&once);
    let request = inflight::llm::LlmRequest::new(
        sid("s1"),
        Operation::SUMMARY,
        vec![inflight::llm::Utterance::new(None, "hello")],
    );
    let answer = backend
        .generate(request, &inflight::llm::Progress::default())
        .await
        .expect("the second send is answered");
    assert_eq!(answer.text, "ok");
    assert_eq!(once.request_count(), 2);

    let stream_error = scripted::start(Arc::new(|_, _| {
        vec![
            head("200 OK", "application/x-ndjson", &[]),
            send("{\"error\":\"model runner has unexpectedly stopped\"}\n"),
        ]
    }))
    .await;
    let error = failing_call(&ollama(&stream_error), Operation::SUMMARY).await;
    assert_eq!(error.kind, LlmErrorKind::Other, "{error}");

    // A mind map that is no map, twice (the repair retry included).
    let mapless = scripted::start(Arc::new(|_, _| ollama_stream(&["I cannot draw maps."]))).await;
    let error = failing_call(&ollama(&mapless), Operation::MIND_MAP).await;
    assert!(
        matches!(&error.kind, LlmErrorKind::BadAnswer { answer } if answer == "I cannot draw maps."),
        "{error:?}"
    );
}

/// No `--model`: the one model the server lists is the one asked for, as
/// llama-cpp-python lists the file it loaded; a server listing several
/// asks to be told which.
#[tokio::test]
async fn without_a_model_the_one_the_server_lists_is_asked_for() {
    let one = scripted::start(Arc::new(|_, request| {
        if request.path.ends_with("/v1/models") {
            json_response(
                "200 OK",
                &json!({"data": [{"id": "/models/SmolLM2-135M-Instruct.Q4_1.gguf"}]}),
            )
        } else {
            sse_stream(&["We ship."], true)
        }
    }))
    .await;
    let backend: Arc<dyn Backend> =
        Arc::new(OpenAiBackend::new(&one.url(), "", None, Default::default()).unwrap());
    backend.check().await.unwrap();
    assert_eq!(
        backend.info().model,
        "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    );
    let request = inflight::llm::LlmRequest::new(
        sid("s1"),
        Operation::SUMMARY,
        vec![inflight::llm::Utterance::new(None, "We ship on Friday.")],
    );
    backend
        .generate(request, &inflight::llm::Progress::default())
        .await
        .unwrap();
    let asked = one.request(one.request_count() - 1);
    assert_eq!(
        asked.body["model"],
        "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    );

    let several = scripted::start(Arc::new(|_, _| {
        json_response("200 OK", &json!({"data": [{"id": "a"}, {"id": "b"}]}))
    }))
    .await;
    let backend = OpenAiBackend::new(&several.url(), "", None, Default::default()).unwrap();
    let error = backend.check().await.unwrap_err();
    assert!(
        error.contains("serves several models (a, b): choose one with --model"),
        "{error}"
    );
}
