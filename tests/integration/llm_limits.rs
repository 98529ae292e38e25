//! The model server's limits, learnt and kept: its context window (from
//! what it says of itself, or from its refusals, in each server's words),
//! its slots, answers cut at the token limit, and `Retry-After` as a date.
//! The fakes answer as the real servers were seen to: chunked keep-alive
//! streams with split lines, usage on the finish chunk, a slow first token,
//! and each server's own refusal.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::scripted::{
    self, Recorded, Step, json_response, message_chars, ollama_stream, realistic_sse,
};
use crate::common::{final_line, sid, wait_until};
use inflight::engine::{Engine, EngineConfig};
use inflight::llm::context::{ContextInfo, Source};
use inflight::llm::http::AnswerLimits;
use inflight::llm::ollama::OllamaBackend;
use inflight::llm::openai::OpenAiBackend;
use inflight::llm::{Backend, LlmErrorKind, LlmRequest, Progress, Utterance};
use inflight::model::Operation;
use serde_json::json;

/// The fakes' tokenizer: four characters a token.
fn tokens_of(chars: usize) -> u64 {
    (chars / 4) as u64
}

/// Tokens a chat request's prompt takes at the fake, its template included.
fn prompt_tokens(body: &serde_json::Value) -> u64 {
    tokens_of(message_chars(body)) + 12
}

fn not_found() -> Vec<Step> {
    json_response("404 Not Found", &json!({"detail": "Not Found"}))
}

fn limits(max_tokens: u32) -> AnswerLimits {
    AnswerLimits {
        max_tokens,
        ..Default::default()
    }
}

fn long_request(lines: usize) -> LlmRequest {
    LlmRequest::new(
        sid("s1"),
        Operation::SUMMARY,
        (0..lines)
            .map(|i| {
                Utterance::new(
                    Some("ana"),
                    &format!("line {i:04} {}", "budget ".repeat(13)),
                )
            })
            .collect(),
    )
}

/// Asks `backend` for a summary of `lines` lines.
async fn ask(
    backend: &dyn Backend,
    lines: usize,
) -> Result<inflight::llm::LlmResponse, inflight::llm::LlmError> {
    backend
        .generate(long_request(lines), &Progress::default())
        .await
}

fn window(tokens: u32, source: Source) -> Option<ContextInfo> {
    Some(ContextInfo { tokens, source })
}

fn chat_requests(server: &scripted::Scripted) -> Vec<Recorded> {
    server
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions" || r.path == "/api/chat")
        .cloned()
        .collect()
}

/// llama-cpp-python with `--n_ctx 1024`: no `/props`, a tokenizer at
/// `/extras/tokenize/count`; a streamed prompt over the window gets a 200
/// and then a dropped connection, the same prompt unstreamed a 400 in
/// OpenAI's words. What it answered, and the largest prompt it took once
/// a refusal had taught the window.
struct LlamaCppPython {
    window: u64,
    refused_streams: AtomicUsize,
    probes: AtomicUsize,
    largest_answered: Mutex<u64>,
}

impl LlamaCppPython {
    fn answer(&self, r: &Recorded) -> Vec<Step> {
        match r.path.as_str() {
            "/v1/models" => json_response(
                "200 OK",
                &json!({"object": "list", "data": [{"id": "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "object": "model"}]}),
            ),
            "/extras/tokenize/count" => {
                let text = r.body["input"].as_str().unwrap_or_default();
                json_response(
                    "200 OK",
                    &json!({"count": tokens_of(text.chars().count()) + 12}),
                )
            }
            "/v1/chat/completions" => {
                let tokens = prompt_tokens(&r.body);
                let streamed = r.body["stream"] == true;
                if tokens >= self.window {
                    if streamed {
                        self.refused_streams.fetch_add(1, Ordering::SeqCst);
                        // The 200 went out before the check; then the
                        // server raises, and the body ends empty.
                        return vec![
                            scripted::chunked_head("200 OK", "text/event-stream; charset=utf-8"),
                            scripted::last_chunk(),
                        ];
                    }
                    self.probes.fetch_add(1, Ordering::SeqCst);
                    let asked = r.body["max_tokens"].as_u64().unwrap_or(0);
                    return json_response(
                        "400 Bad Request",
                        &json!({"error": {
                            "message": format!(
                                "This model's maximum context length is {} tokens. However, you requested {} tokens ({tokens} in the messages, {asked} in the completion). Please reduce the length of the messages or completion.",
                                self.window, tokens + asked
                            ),
                            "type": "invalid_request_error",
                            "param": "messages",
                            "code": "context_length_exceeded",
                        }}),
                    );
                }
                if !streamed {
                    self.probes.fetch_add(1, Ordering::SeqCst);
                    return json_response(
                        "200 OK",
                        &json!({"choices": [{"message": {"content": "A"}, "finish_reason": "length"}]}),
                    );
                }
                // Once the window is known (the first refusal taught it):
                // before, the first prompt's size depends on how many
                // lines came in before its run read them.
                if self.refused_streams.load(Ordering::SeqCst) > 0 {
                    let mut largest = self.largest_answered.lock().unwrap();
                    *largest = (*largest).max(tokens + r.body["max_tokens"].as_u64().unwrap_or(0));
                }
                let last = r.body["messages"][1]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .find_map(|l| l.strip_prefix("ana: line "))
                    .map(|l| l[..4].to_string())
                    .unwrap_or_default();
                realistic_sse(
                    &["Covered ", "up to ", &last],
                    Duration::from_millis(30),
                    "stop",
                    (tokens, 3),
                )
            }
            _ => not_found(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_on_a_small_window_is_covered_with_every_prompt_inside_it() {
    let fake = Arc::new(LlamaCppPython {
        window: 1024,
        refused_streams: AtomicUsize::new(0),
        probes: AtomicUsize::new(0),
        largest_answered: Mutex::new(0),
    });
    let server = {
        let fake = fake.clone();
        scripted::start(Arc::new(move |_, r| fake.answer(r))).await
    };
    let backend = Arc::new(
        OpenAiBackend::new(&server.url(), "smollm2", None, Default::default())
            .unwrap()
            .with_limits(limits(256)),
    );
    backend.check().await.expect("the fake serves models");
    assert_eq!(backend.info().context, None, "this server does not say");
    let config = EngineConfig {
        automatic_ops: vec![Operation::SUMMARY],
        llm_concurrency: 1,
        ..Default::default()
    };
    let engine = Engine::new(config, backend.clone());
    let mut events = engine.subscribe();
    // 300 lines of about 110 characters at once: some 8 000 tokens.
    for seq in 1..=300 {
        let text = format!("line {seq:04} {}", "budget ".repeat(14));
        let mut line = final_line("s1", seq, &text);
        line.speaker = Some("ana".into());
        engine.ingest(line, None);
    }
    let covered = || {
        engine
            .result(&sid("s1"), Operation::SUMMARY)
            .is_some_and(|r| r.covered_generation == 300)
            && engine.is_idle()
    };
    wait_until(
        &mut events,
        Duration::from_secs(60),
        "the backlog covered",
        covered,
    )
    .await;
    let result = engine.result(&sid("s1"), Operation::SUMMARY).unwrap();
    assert!(
        matches!(&result.body, inflight::engine::ResultBody::Text(t) if t.ends_with("0300")),
        "the last step read the last line: {:?}",
        result.body
    );
    assert_eq!(
        backend.info().context,
        window(1024, Source::Refusal),
        "learnt from the refusal"
    );
    assert_eq!(
        fake.refused_streams.load(Ordering::SeqCst),
        1,
        "only the first prompt, before the window was known, went over it"
    );
    assert_eq!(fake.probes.load(Ordering::SeqCst), 1);
    let largest = *fake.largest_answered.lock().unwrap();
    assert!(
        largest <= 1024,
        "every prompt with its answer fits the window: {largest}"
    );
    let row = engine.session_detail(&sid("s1"), 0).unwrap().row;
    let summary = &row.ops[Operation::SUMMARY];
    assert_eq!(summary.counts.failed, 0, "no run failed: {summary:?}");
    assert_eq!(summary.covered_generation, Some(300));
    // Few steps wasted: the window's room is used, not a sliver of it.
    let steps = chat_requests(&server).len();
    assert!(steps <= 40, "{steps} calls for 300 lines");
}

/// llama.cpp's `llama-server`: `/props` names the slot's window and the
/// slots, `/tokenize` counts; a prompt that would not fit is not sent.
#[tokio::test]
async fn llama_server_says_its_window_and_slots_and_a_prompt_too_long_is_not_sent() {
    let server = scripted::start(Arc::new(|_, r| match r.path.as_str() {
        "/props" => json_response(
            "200 OK",
            &json!({"default_generation_settings": {"n_ctx": 2048}, "total_slots": 1}),
        ),
        "/v1/models" => json_response("200 OK", &json!({"data": [{"id": "qwen"}]})),
        "/tokenize" => {
            let text = r.body["content"].as_str().unwrap_or_default();
            let tokens = vec![1; tokens_of(text.chars().count()) as usize];
            json_response("200 OK", &json!({"tokens": tokens}))
        }
        "/v1/chat/completions" => realistic_sse(&["ok"], Duration::ZERO, "stop", (10, 1)),
        _ => not_found(),
    }))
    .await;
    let backend = OpenAiBackend::new(&server.url(), "qwen", None, Default::default())
        .unwrap()
        .with_limits(limits(512));
    backend.check().await.unwrap();
    let info = backend.info();
    assert_eq!(info.context, window(2048, Source::Server));
    assert_eq!(info.slots, Some(1));
    // About 1 000 tokens fit with a 512-token answer; 200 lines do not.
    let error = ask(&backend, 200).await.unwrap_err();
    assert!(
        matches!(
            error.kind,
            LlmErrorKind::ContextExceeded {
                window: Some(2048),
                requested: Some(_)
            }
        ),
        "{error:?}"
    );
    assert!(error.message.contains("not sent"), "{error}");
    assert!(chat_requests(&server).is_empty(), "no call was made");
    // Counted by the server's tokenizer, not guessed.
    assert!(
        server
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.path == "/tokenize")
    );
    // A prompt that fits goes, with the answer's tokens asked for.
    let answer = ask(&backend, 10).await.unwrap();
    assert_eq!(answer.text, "ok");
    assert_eq!(chat_requests(&server)[0].body["max_tokens"], 512);
}

/// The other way llama-cpp-python was seen to refuse a streamed prompt:
/// the 200, then the connection dropped with no body.
#[tokio::test]
async fn a_stream_dropped_after_its_200_is_asked_why_and_read_as_a_refusal() {
    let server = scripted::start(Arc::new(|_, r| {
        if r.body["stream"] == true {
            vec![scripted::chunked_head("200 OK", "text/event-stream")]
        } else {
            json_response(
                "400 Bad Request",
                &json!({"error": {"message": "This model's maximum context length is 1024 tokens. However, you requested 3001 tokens (3000 in the messages, 1 in the completion).", "code": "context_length_exceeded"}}),
            )
        }
    }))
    .await;
    let backend = OpenAiBackend::new(&server.url(), "qwen", None, Default::default())
        .unwrap()
        .with_limits(limits(256));
    let error = ask(&backend, 40).await.unwrap_err();
    assert_eq!(
        error.kind,
        LlmErrorKind::ContextExceeded {
            window: Some(1024),
            // The call's answer, not the probe's one token.
            requested: Some(3000 + 256)
        },
        "{error}"
    );
    assert_eq!(backend.info().context, window(1024, Source::Refusal));
    let probe = chat_requests(&server)
        .into_iter()
        .find(|r| r.body["stream"] == false)
        .expect("the prompt was asked once more, unstreamed");
    assert_eq!(probe.body["max_tokens"], 1);
}

/// llama.cpp's own refusal names its numbers as fields.
#[tokio::test]
async fn llama_servers_refusal_teaches_the_window() {
    let server = scripted::start(Arc::new(|_, r| match r.path.as_str() {
        "/v1/chat/completions" => json_response(
            "400 Bad Request",
            &json!({"error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 3000,
                "n_ctx": 1536,
            }}),
        ),
        _ => not_found(),
    }))
    .await;
    let backend = OpenAiBackend::new(&server.url(), "qwen", None, Default::default()).unwrap();
    let error = ask(&backend, 40).await.unwrap_err();
    assert_eq!(
        error.kind,
        LlmErrorKind::ContextExceeded {
            window: Some(1536),
            requested: Some(3000)
        }
    );
    assert_eq!(backend.info().context, window(1536, Source::Refusal));
    assert_eq!(
        chat_requests(&server).len(),
        1,
        "a refusal is not retried as busy"
    );
}

/// vLLM names each model's window in its list, and counts at `/tokenize`
/// with `prompt`; its refusal is a 400 in OpenAI's words.
#[tokio::test]
async fn vllm_says_its_window_in_the_model_list_and_counts_prompts() {
    let server = scripted::start(Arc::new(|_, r| match r.path.as_str() {
        "/v1/models" => json_response(
            "200 OK",
            &json!({"data": [{"id": "qwen", "max_model_len": 4096}, {"id": "other", "max_model_len": 32768}]}),
        ),
        "/tokenize" => {
            let text = r.body["prompt"].as_str().unwrap_or_default();
            // A tokenizer denser than the estimate: two characters a token.
            json_response(
                "200 OK",
                &json!({"count": text.chars().count() / 2, "max_model_len": 4096}),
            )
        }
        "/v1/chat/completions" => json_response(
            "400 Bad Request",
            &json!({"object": "error", "message": "This model's maximum context length is 4096 tokens. However, your request has 5000 input tokens.", "type": "BadRequestError", "code": 400}),
        ),
        _ => not_found(),
    }))
    .await;
    let backend = OpenAiBackend::new(&server.url(), "qwen", None, Default::default()).unwrap();
    backend.check().await.unwrap();
    assert_eq!(
        backend.info().context,
        window(4096, Source::Server),
        "the served model's window, not another's"
    );
    // By the estimate this fits; by the server's count it does not.
    let error = ask(&backend, 70).await.unwrap_err();
    assert!(
        matches!(error.kind, LlmErrorKind::ContextExceeded { .. }),
        "{error:?}"
    );
    assert!(chat_requests(&server).is_empty(), "not sent");
}

/// vLLM's refusal, read when the window was not known before.
#[tokio::test]
async fn a_refusal_in_openais_words_is_its_own_kind() {
    let server = scripted::start(Arc::new(|_, _| {
        json_response(
            "400 Bad Request",
            &json!({"object": "error", "message": "This model's maximum context length is 2048 tokens. However, you requested 2600 tokens (1600 in the messages, 1000 in the completion).", "code": 400}),
        )
    }))
    .await;
    let backend = OpenAiBackend::new(&server.url(), "qwen", None, Default::default()).unwrap();
    let error = ask(&backend, 5).await.unwrap_err();
    assert_eq!(
        error.kind,
        LlmErrorKind::ContextExceeded {
            window: Some(2048),
            requested: Some(2600)
        }
    );
    assert_eq!(backend.info().context.map(|c| c.tokens), Some(2048));
}

/// Ollama cuts a prompt at `num_ctx` without a word: the window is what
/// inflight asks for, or the model's own when smaller, and a prompt over
/// it is not sent.
#[tokio::test]
async fn ollama_prompts_are_sized_to_the_models_window_and_num_ctx() {
    let server = scripted::start(Arc::new(|_, r| match r.path.as_str() {
        "/api/show" => json_response(
            "200 OK",
            &json!({"model_info": {"general.architecture": "llama", "llama.context_length": 2048}}),
        ),
        "/api/tags" => json_response("200 OK", &json!({"models": [{"name": "llama3.2:latest"}]})),
        "/api/chat" => {
            let mut steps = ollama_stream(&["Cut "]);
            steps.pop();
            steps.push(scripted::send(&format!(
                "{}\n",
                json!({"message": {"content": ""}, "done": true, "done_reason": "length", "eval_count": 1024, "prompt_eval_count": 30})
            )));
            steps
        }
        _ => not_found(),
    }))
    .await;
    let backend = OllamaBackend::new(Some(&server.url()), "llama3.2", Default::default()).unwrap();
    assert_eq!(
        backend.info().context.map(|c| c.tokens),
        Some(inflight::llm::ollama::NUM_CTX),
        "what inflight asks for, known from the start"
    );
    backend.check().await.unwrap();
    assert_eq!(backend.info().context, window(2048, Source::Server));
    let answer = ask(&backend, 3).await.unwrap();
    assert!(answer.truncated, "done_reason length: cut");
    let sent = &chat_requests(&server)[0].body;
    assert_eq!(sent["options"]["num_ctx"], 2048);
    assert_eq!(
        sent["options"]["num_predict"], 512,
        "a quarter of the window at most"
    );
    let error = ask(&backend, 120).await.unwrap_err();
    assert!(
        matches!(
            error.kind,
            LlmErrorKind::ContextExceeded {
                window: Some(2048),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(chat_requests(&server).len(), 1, "the long one was not sent");
}

/// An answer cut at `max_tokens` is kept, marked, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cut_at_the_token_limit_is_kept_marked_truncated() {
    let server = scripted::start(Arc::new(|_, r| match r.path.as_str() {
        "/v1/chat/completions" => {
            realistic_sse(&["We ship ", "on"], Duration::ZERO, "length", (40, 2))
        }
        _ => not_found(),
    }))
    .await;
    let backend =
        Arc::new(OpenAiBackend::new(&server.url(), "qwen", None, Default::default()).unwrap());
    let config = EngineConfig {
        automatic_ops: vec![Operation::SUMMARY],
        ..Default::default()
    };
    let engine = Engine::new(config, backend);
    let mut events = engine.subscribe();
    engine.ingest(final_line("s1", 1, "We ship on Friday."), None);
    wait_until(&mut events, Duration::from_secs(20), "a summary", || {
        engine.result(&sid("s1"), Operation::SUMMARY).is_some() && engine.is_idle()
    })
    .await;
    let result = engine.result(&sid("s1"), Operation::SUMMARY).unwrap();
    assert!(result.truncated);
    assert_eq!(result.covered_generation, 1);
    let row = engine.session_detail(&sid("s1"), 0).unwrap().row;
    let counts = row.ops[Operation::SUMMARY].counts;
    assert_eq!((counts.ok, counts.truncated), (1, 1));
}

/// `Retry-After` as an HTTP date, a few seconds ahead, is waited for.
#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let server = scripted::start(Arc::new(|n, _| {
        if n == 0 {
            let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
            vec![scripted::send(&format!(
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {at}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ))]
        } else {
            realistic_sse(&["ok"], Duration::ZERO, "stop", (5, 1))
        }
    }))
    .await;
    let backend = OpenAiBackend::new(&server.url(), "qwen", None, Default::default()).unwrap();
    let started = std::time::Instant::now();
    let answer = ask(&backend, 1).await.unwrap();
    assert_eq!(answer.text, "ok");
    // The date has a one-second grain: at least one second was waited,
    // where the backoff alone waits a quarter of one.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}
