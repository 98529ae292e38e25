//! Structured output against scripted servers that answer as real ones were
//! seen to: llama.cpp's Python server refusing `json_schema` with a 500, an
//! empty stream (a role chunk, then `[DONE]`), a mind map cut off mid-JSON,
//! and Ollama answering nothing under a schema. Also the token counts that
//! reach the API.

use crate::common;

use crate::common::scripted;

use std::sync::Arc;
use std::time::Duration;

use common::{final_line, next_matching, sid};
use inflight::engine::{Engine, EngineConfig, ResultBody};
use inflight::events::{Event, Outcome};
use inflight::llm::Backend;
use inflight::llm::ollama::OllamaBackend;
use inflight::llm::openai::OpenAiBackend;
use inflight::model::Operation;
use scripted::{Recorded, Scripted, Step, head, json_response, ollama_stream, send};
use serde_json::{Value, json};

const MAP: &str =
    r#"{"root": {"label": "Launch", "children": [{"label": "Thursday", "children": []}]}}"#;

/// What llama-cpp-python's server answers to `response_format: json_schema`.
fn llama_cpp_refuses_the_schema() -> Vec<Step> {
    json_response(
        "500 Internal Server Error",
        &json!({"error": {
            "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}",
            "type": "internal_server_error", "param": null, "code": null
        }}),
    )
}

/// A llama.cpp-style stream: content chunks, a finish chunk, `[DONE]`, and
/// (unlike llama-cpp-python) a usage chunk when `usage` is given.
fn llama_cpp_stream(pieces: &[&str], usage: Option<(u64, u64)>) -> Vec<Step> {
    let chunk = |delta: Value, finish: Value| {
        json!({"model": "smollm2", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut steps = vec![
        head("200 OK", "text/event-stream", &[]),
        send(&format!(
            "data: {}\n\n",
            chunk(json!({"role": "assistant"}), Value::Null)
        )),
    ];
    for piece in pieces {
        steps.push(send(&format!(
            "data: {}\n\n",
            chunk(json!({"content": piece}), Value::Null)
        )));
    }
    steps.push(send(&format!(
        "data: {}\n\n",
        chunk(json!({}), json!("stop"))
    )));
    if let Some((prompt, completion)) = usage {
        steps.push(send(&format!(
            "data: {}\n\n",
            json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
        )));
    }
    steps.push(send("data: [DONE]\n\n"));
    steps
}

/// What llama-cpp-python's server streams to concurrent requests: a role
/// chunk and `[DONE]`, nothing else.
fn empty_stream() -> Vec<Step> {
    vec![
        head("200 OK", "text/event-stream", &[]),
        send(&format!(
            "data: {}\n\n",
            json!({"model": "smollm2", "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}]})
        )),
        send("data: [DONE]\n\n"),
    ]
}

fn openai(server: &Scripted) -> Arc<dyn Backend> {
    Arc::new(OpenAiBackend::new(&server.url(), "smollm2", None, Default::default()).unwrap())
}

fn ollama(server: &Scripted) -> Arc<dyn Backend> {
    Arc::new(OllamaBackend::new(Some(&server.url()), "smollm2", Default::default()).unwrap())
}

fn engine(backend: Arc<dyn Backend>) -> Engine {
    let config = EngineConfig {
        automatic_ops: Vec::new(),
        ..Default::default()
    };
    Engine::new(config, backend)
}

/// Runs `op` once on session `s1` (one line said first); how it ended.
async fn run(engine: &Engine, op: Operation, seq: u64) -> (Outcome, Option<String>) {
    let mut events = engine.subscribe();
    engine.ingest(final_line("s1", seq, "We ship on Thursday."), None);
    engine.request(&sid("s1"), op);
    next_matching(&mut events, Duration::from_secs(20), |e| match e {
        Event::OpFinished { outcome, error, .. } => Some((*outcome, error.clone())),
        _ => None,
    })
    .await
}

fn format_of(request: &Recorded) -> Value {
    request.body["response_format"]["type"].clone()
}

fn mind_map_label(engine: &Engine) -> String {
    match engine
        .result(&sid("s1"), Operation::MIND_MAP)
        .map(|r| r.body)
    {
        Some(ResultBody::Tree(map)) => map.to_tree().root.label,
        other => panic!("no mind map: {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_refuses_json_schema_gets_json_object_from_then_on() {
    let server = scripted::start(Arc::new(|_, r| match format_of(r).as_str() {
        Some("json_schema") => llama_cpp_refuses_the_schema(),
        _ => llama_cpp_stream(&[MAP], None),
    }))
    .await;
    let backend = openai(&server);
    let engine = engine(backend.clone());
    assert_eq!(
        engine.backend_info().structured_output,
        Some("json_schema"),
        "it starts at the top"
    );
    assert_eq!(
        run(&engine, Operation::MIND_MAP, 1).await,
        (Outcome::Ok, None)
    );
    assert_eq!(mind_map_label(&engine), "Launch");
    assert_eq!(
        (0..2)
            .map(|i| format_of(&server.request(i)))
            .collect::<Vec<_>>(),
        [json!("json_schema"), json!("json_object")]
    );
    assert_eq!(engine.backend_info().structured_output, Some("json_object"));
    // Remembered: the next mind map asks with json_object at once.
    assert_eq!(
        run(&engine, Operation::MIND_MAP, 2).await,
        (Outcome::Ok, None)
    );
    assert_eq!(server.request_count(), 3);
    assert_eq!(format_of(&server.request(2)), json!("json_object"));
    // Summaries never carried a format.
    assert_eq!(
        run(&engine, Operation::SUMMARY, 3).await,
        (Outcome::Ok, None)
    );
    assert_eq!(format_of(&server.request(3)), Value::Null);
}

#[tokio::test]
async fn an_error_on_every_rung_fails_with_the_first_and_learns_nothing() {
    let server = scripted::start(Arc::new(|_, _| {
        json_response(
            "500 Internal Server Error",
            &json!({"error": {"message": "CUDA out of memory"}}),
        )
    }))
    .await;
    let engine = engine(openai(&server));
    let (outcome, error) = run(&engine, Operation::MIND_MAP, 1).await;
    assert_eq!(outcome, Outcome::Failed);
    assert!(error.unwrap().contains("CUDA out of memory"));
    assert_eq!(server.request_count(), 3, "one try per rung");
    assert_eq!(engine.backend_info().structured_output, Some("json_schema"));
}

#[tokio::test]
async fn an_empty_stream_is_asked_again_once_then_fails_saying_so() {
    // First request empty, its repair good: the run succeeds.
    let server = scripted::start(Arc::new(|i, _| {
        if i == 0 {
            empty_stream()
        } else {
            llama_cpp_stream(&["We ship on Thursday."], Some((120, 7)))
        }
    }))
    .await;
    let rescued = engine(openai(&server));
    assert_eq!(
        run(&rescued, Operation::SUMMARY, 1).await,
        (Outcome::Ok, None)
    );
    let repair = server.request(1);
    let messages = repair.body["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        4,
        "system, user, the empty answer, the repair"
    );
    assert_eq!(messages[2]["role"], "assistant");
    assert!(
        messages[3]["content"]
            .as_str()
            .unwrap()
            .contains("the answer was empty")
    );

    // Empty every time: one retry, then a failure that says why.
    let server = scripted::start(Arc::new(|_, _| empty_stream())).await;
    let silent = engine(openai(&server));
    let (outcome, error) = run(&silent, Operation::SUMMARY, 1).await;
    assert_eq!(outcome, Outcome::Failed);
    let error = error.unwrap();
    assert!(error.starts_with("the answer was empty"), "{error}");
    assert!(error.contains("repair"), "{error}");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_mind_map_cut_off_mid_json_is_repaired_with_the_cut_answer_shown() {
    let cut = r#"{"root": {"label": "Launch", "children": [{"label": "Thurs"#;
    let server = scripted::start(Arc::new(move |i, _| {
        if i == 0 {
            llama_cpp_stream(&[cut], None)
        } else {
            llama_cpp_stream(&[MAP], None)
        }
    }))
    .await;
    let engine = engine(openai(&server));
    assert_eq!(
        run(&engine, Operation::MIND_MAP, 1).await,
        (Outcome::Ok, None)
    );
    assert_eq!(mind_map_label(&engine), "Launch");
    let repair = server.request(1);
    assert_eq!(repair.body["messages"][2]["content"], cut);
    assert!(
        repair.body["messages"][3]["content"]
            .as_str()
            .unwrap()
            .contains("no mind-map JSON")
    );
    assert_eq!(
        format_of(&repair),
        json!("json_schema"),
        "an unreadable (not empty) answer is repaired on the same rung"
    );
}

#[tokio::test]
async fn ollama_silent_under_a_schema_is_repaired_in_json_mode_and_then_stays_there() {
    let server = scripted::start(Arc::new(|_, r| {
        if r.body["format"].is_object() {
            ollama_stream(&[])
        } else {
            ollama_stream(&[MAP])
        }
    }))
    .await;
    let engine = engine(ollama(&server));
    for seq in 1..=3 {
        assert_eq!(
            run(&engine, Operation::MIND_MAP, seq).await,
            (Outcome::Ok, None)
        );
    }
    let formats: Vec<Value> = (0..6)
        .map(|i| server.request(i).body["format"].clone())
        .map(|f| if f.is_object() { json!("schema") } else { f })
        .collect();
    let expected: Vec<Value> = (0..6)
        .map(|i| json!(if i % 2 == 0 { "schema" } else { "json" }))
        .collect();
    assert_eq!(formats, expected);
    assert_eq!(engine.backend_info().structured_output, Some("json_object"));
    assert_eq!(
        run(&engine, Operation::MIND_MAP, 4).await,
        (Outcome::Ok, None)
    );
    assert_eq!(server.request_count(), 7, "one call: json mode at once");
    assert_eq!(server.request(6).body["format"], "json");
}

#[tokio::test]
async fn tokens_are_counted_per_run_and_summed_per_session_and_operation() {
    let server = scripted::start(Arc::new(|i, _| {
        if i == 0 {
            // llama-cpp-python streams no usage: estimated from the text.
            llama_cpp_stream(&["Thursday."], None)
        } else {
            llama_cpp_stream(&["We ship Thursday."], Some((300, 12)))
        }
    }))
    .await;
    let engine = engine(openai(&server));
    assert_eq!(
        run(&engine, Operation::SUMMARY, 1).await,
        (Outcome::Ok, None)
    );
    let first = engine.session_detail(&sid("s1"), 0).unwrap();
    let estimated = first.row.ops[Operation::SUMMARY].counts.usage();
    assert!(estimated.prompt_tokens > 20, "{estimated:?}");
    assert_eq!(estimated.completion_tokens, 1, "one streamed piece");
    assert_eq!(
        run(&engine, Operation::SUMMARY, 2).await,
        (Outcome::Ok, None)
    );
    let detail = engine.session_detail(&sid("s1"), 0).unwrap();
    let usage = detail.row.ops[Operation::SUMMARY].counts.usage();
    assert_eq!(usage.prompt_tokens, estimated.prompt_tokens + 300);
    assert_eq!(usage.completion_tokens, 1 + 12);
    let history = &detail.history[Operation::SUMMARY];
    assert_eq!(history.last().unwrap().usage.prompt_tokens, 300);
    let lifetime = engine.snapshot().lifetime[Operation::SUMMARY];
    assert_eq!(lifetime.prompt_tokens, usage.prompt_tokens);
    assert_eq!(
        engine.snapshot().lifetime[Operation::MIND_MAP].prompt_tokens,
        0
    );
}
