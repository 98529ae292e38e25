//! A scripted HTTP/1.1 server on loopback: it records each request and
//! answers with a script of writes, pauses and hangs, so tests can play a
//! real LLM server's good and bad days byte for byte.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub enum Step {
    Send(Vec<u8>),
    Sleep(Duration),
    /// Keep the connection open, sending nothing, until the client leaves.
    Hang,
    /// Send these bytes again and again until the client leaves.
    Forever(Vec<u8>),
}

pub type Script = Arc<dyn Fn(usize, &Recorded) -> Vec<Step> + Send + Sync>;

pub struct Scripted {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub max_open: Arc<AtomicUsize>,
    /// One message per connection the client closed before the script ended.
    pub disconnects: mpsc::UnboundedReceiver<()>,
    /// The index of each request, as it arrives.
    pub received: mpsc::UnboundedReceiver<usize>,
}

impl Scripted {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn request(&self, i: usize) -> Recorded {
        self.requests.lock().unwrap()[i].clone()
    }
}

pub async fn start(script: Script) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let open = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let (gone, disconnects) = mpsc::unbounded_channel();
    let (arrived, received) = mpsc::unbounded_channel();
    {
        let (requests, max_open) = (requests.clone(), max_open.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (script, requests, open, max_open, gone, arrived) = (
                    script.clone(),
                    requests.clone(),
                    open.clone(),
                    max_open.clone(),
                    gone.clone(),
                    arrived.clone(),
                );
                tokio::spawn(async move {
                    let Some((mut stream, recorded)) = read_request(stream).await else {
                        return;
                    };
                    let index = {
                        let mut all = requests.lock().unwrap();
                        all.push(recorded.clone());
                        all.len() - 1
                    };
                    let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                    max_open.fetch_max(now_open, Ordering::SeqCst);
                    let _ = arrived.send(index);
                    let finished = play(&mut stream, script(index, &recorded)).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                    if !finished {
                        let _ = gone.send(());
                    }
                });
            }
        });
    }
    Scripted {
        addr,
        requests,
        max_open,
        disconnects,
        received,
    }
}

async fn read_request(mut owned: TcpStream) -> Option<(TcpStream, Recorded)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = owned.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = owned.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    Some((
        owned,
        Recorded {
            method,
            path,
            headers,
            body,
        },
    ))
}

/// Plays the steps; false when the client went away first.
async fn play(stream: &mut TcpStream, steps: Vec<Step>) -> bool {
    for step in steps {
        match step {
            Step::Send(bytes) => {
                if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
                    return false;
                }
            }
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::Forever(bytes) => loop {
                if stream.write_all(&bytes).await.is_err() {
                    return false;
                }
            },
            Step::Hang => {
                let mut byte = [0u8; 1];
                // Returns when the client closes its side.
                let _ = stream.read(&mut byte).await;
                return false;
            }
        }
    }
    let _ = stream.shutdown().await;
    true
}

/// A response head with no length: the body ends when the connection closes.
pub fn head(status: &str, content_type: &str, extra: &[(&str, &str)]) -> Step {
    let mut text =
        format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nConnection: close\r\n");
    for (k, v) in extra {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    Step::Send(text.into_bytes())
}

/// A whole response with a JSON body.
pub fn json_response(status: &str, body: &Value) -> Vec<Step> {
    let body = body.to_string();
    vec![Step::Send(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )]
}

pub fn send(text: &str) -> Step {
    Step::Send(text.as_bytes().to_vec())
}

/// Ollama's streamed answer: one NDJSON line per piece, then `done`.
pub fn ollama_stream(pieces: &[&str]) -> Vec<Step> {
    let mut steps = vec![head("200 OK", "application/x-ndjson", &[])];
    for piece in pieces {
        steps.push(send(&format!(
            "{}\n",
            serde_json::json!({"message": {"role": "assistant", "content": piece}, "done": false})
        )));
    }
    steps.push(send(&format!("{}\n", serde_json::json!({"message": {"role": "assistant", "content": ""}, "done": true, "eval_count": pieces.len() + 10}))));
    steps
}

/// An OpenAI-style SSE answer.
pub fn sse_stream(pieces: &[&str], done: bool) -> Vec<Step> {
    let mut steps = vec![
        head("200 OK", "text/event-stream", &[]),
        send(": keep-alive\n\n"),
    ];
    for (i, piece) in pieces.iter().enumerate() {
        let data = serde_json::json!({"model": "served-model", "choices": [{"index": 0, "delta": {"content": piece}}]});
        // Alternate "data:" with and without the space.
        let prefix = if i % 2 == 0 { "data: " } else { "data:" };
        steps.push(send(&format!("{prefix}{data}\n\n")));
    }
    if done {
        steps.push(send(&format!(
            "data: {}\n\n",
            serde_json::json!({"choices": [], "usage": {"completion_tokens": 99}})
        )));
        steps.push(send("data: [DONE]\n\n"));
    }
    steps
}

/// A response head for a chunked body on a keep-alive connection, as
/// uvicorn (llama-cpp-python) and llama.cpp's server send a stream. The
/// scripted server still closes the connection when the script ends: the
/// client's pooled connection is then gone before its next request, as
/// seen with those servers.
pub fn chunked_head(status: &str, content_type: &str) -> Step {
    send(&format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
    ))
}

/// One chunk of a chunked body.
pub fn chunk(data: &str) -> Step {
    send(&format!("{:x}\r\n{data}\r\n", data.len()))
}

/// The end of a chunked body.
pub fn last_chunk() -> Step {
    send("0\r\n\r\n")
}

/// What a real OpenAI-compatible stream looks like on the wire: chunked,
/// keep-alive, the first token after `first_token` (a model reading its
/// prompt), every JSON line split across two chunks, and the last chunk
/// carrying `finish_reason` and the usage together.
pub fn realistic_sse(
    pieces: &[&str],
    first_token: Duration,
    finish_reason: &str,
    usage: (u64, u64),
) -> Vec<Step> {
    let mut steps = vec![chunked_head("200 OK", "text/event-stream; charset=utf-8")];
    steps.push(Step::Sleep(first_token));
    let mut events: Vec<String> = vec![
        serde_json::json!({"model": "served-model", "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
            .to_string(),
    ];
    events.extend(pieces.iter().map(|piece| {
        serde_json::json!({"model": "served-model", "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]})
            .to_string()
    }));
    events.push(
        serde_json::json!({
            "model": "served-model",
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1},
        })
        .to_string(),
    );
    for event in events {
        let line = format!("data: {event}\r\n\r\n");
        let (a, b) = line.split_at(line.len() / 2);
        steps.push(chunk(a));
        steps.push(chunk(b));
    }
    steps.push(chunk("data: [DONE]\r\n\r\n"));
    steps.push(last_chunk());
    steps
}

/// Characters of a chat request's messages.
pub fn message_chars(body: &Value) -> usize {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_str())
        .map(|c| c.chars().count())
        .sum()
}
