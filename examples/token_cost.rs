//! Prompt tokens per meeting: incremental results against re-reading the
//! whole transcript every time (the original system's way), counted by a
//! real tokenizer.
//!
//! ```sh
//! # a llama.cpp server (llama-cpp-python's serves /extras/tokenize/count)
//! cargo run --release --example token_cost -- --tokenizer http://127.0.0.1:8090
//! # previous results written by the model itself (slow: one call per line)
//! cargo run --release --example token_cost -- --tokenizer http://127.0.0.1:8090 \
//!     --model-url http://127.0.0.1:8090 --model smollm2 --meetings 1
//! ```
//!
//! The schedule is the same on both sides: one run of each operation after
//! every final transcript of each embedded demo meeting. The prompts are
//! built by inflight's own prompt code. A full re-read sends everything
//! said so far; an incremental run sends the previous result and the new
//! line. Previous results come from the builtin backend (bounded: at most
//! eight points a summary), or from a real model with `--model-url`.
//! Tokens are those of the messages' text, by the server's tokenizer (the
//! chat template adds the same few tokens a message on both sides).

use std::collections::HashMap;

use clap::Parser;
use inflight::feed::meetings;
use inflight::llm::openai::OpenAiBackend;
use inflight::llm::prompts::Prompts;
use inflight::llm::{Backend, LlmRequest, Progress, Utterance, builtin, mind_map};
use inflight::model::Operation;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// A llama.cpp-python server whose `/extras/tokenize/count` counts tokens.
    #[arg(long)]
    tokenizer: String,
    /// An OpenAI-compatible server that writes the previous results.
    #[arg(long)]
    model_url: Option<String>,
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// The longest answer asked of the model (`--max-tokens`).
    #[arg(long, default_value_t = 1024)]
    max_tokens: u32,
    /// Only the first N demo meetings.
    #[arg(long)]
    meetings: Option<usize>,
    /// Play the meetings one after the other as one long meeting.
    #[arg(long)]
    joined: bool,
}

struct Tokenizer {
    client: reqwest::Client,
    url: String,
    cache: HashMap<String, u64>,
}

impl Tokenizer {
    async fn count(&mut self, text: &str) -> Result<u64, Box<dyn std::error::Error>> {
        if let Some(n) = self.cache.get(text) {
            return Ok(*n);
        }
        let answer: serde_json::Value = self
            .client
            .post(format!("{}/extras/tokenize/count", self.url))
            .json(&json!({"input": text}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let n = answer["count"]
            .as_u64()
            .ok_or_else(|| format!("the tokenizer answered {answer}"))?;
        self.cache.insert(text.to_string(), n);
        Ok(n)
    }

    async fn prompt(
        &mut self,
        prompts: &Prompts,
        request: &LlmRequest,
    ) -> Result<u64, Box<dyn std::error::Error>> {
        let mut total = 0;
        for message in prompts.messages(request) {
            total += self.count(&message.content).await?;
        }
        Ok(total)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    inflight::net::install_crypto();
    let args = Args::parse();
    let mut tokenizer = Tokenizer {
        client: inflight::net::http_client(reqwest::Client::builder())?,
        url: args.tokenizer.trim_end_matches('/').to_string(),
        cache: HashMap::new(),
    };
    let prompts = Prompts::default();
    let model = match &args.model_url {
        Some(url) => Some(
            OpenAiBackend::new(url, &args.model, None, prompts.clone())?.with_limits(
                inflight::llm::http::AnswerLimits {
                    max_tokens: args.max_tokens,
                    ..Default::default()
                },
            ),
        ),
        None => None,
    };
    let mut all = meetings::embedded();
    all.truncate(args.meetings.unwrap_or(all.len()));
    if args.joined
        && let Some(first) = all.first().cloned()
    {
        let lines = all.iter().flat_map(|m| m.lines.clone()).collect();
        all = vec![meetings::Meeting {
            session: first.session,
            lines,
        }];
    }
    let (mut full_total, mut incremental_total, mut never_sent) = (0u64, 0u64, 0u64);
    for meeting in &all {
        let said: Vec<Utterance> = meeting
            .lines
            .iter()
            .map(|t| Utterance::new(t.speaker.as_deref(), &t.text))
            .collect();
        for op in inflight::ops::BUILT_IN {
            let (mut full, mut incremental, mut sent) = (0u64, 0u64, 0usize);
            let mut previous: Option<String> = None;
            for i in 1..=said.len() {
                let whole = LlmRequest::new(meeting.session.clone(), op, said[..i].to_vec());
                full += tokenizer.prompt(&prompts, &whole).await?;
                let mut step =
                    LlmRequest::new(meeting.session.clone(), op, said[i - 1..i].to_vec());
                step.previous = previous.clone();
                incremental += tokenizer.prompt(&prompts, &step).await?;
                sent += step.utterances.len();
                // The next prompt carries this result as the engine would:
                // a summary's text, a mind map as an outline.
                let answer = match &model {
                    Some(model) => match model.generate(step, &Progress::default()).await {
                        Ok(answer) => Some(answer.text),
                        Err(e) => {
                            eprintln!("{} {}: {e}", meeting.session, op.as_str());
                            None
                        }
                    },
                    None if op == Operation::MIND_MAP => Some(serde_json::to_string(
                        &builtin::mind_map_merged(&step.utterances, previous.as_deref()),
                    )?),
                    None => Some(builtin::summarise(&step.utterances, previous.as_deref())),
                };
                let result = answer.and_then(|text| {
                    if op == Operation::MIND_MAP {
                        mind_map::parse_lenient(&text)
                            .ok()
                            .map(|map| mind_map::to_outline(&map))
                    } else {
                        Some(text)
                    }
                });
                // A failed run keeps the previous result, as the engine does.
                if result.is_some() {
                    previous = result;
                }
            }
            never_sent += (said.len() - sent) as u64;
            full_total += full;
            incremental_total += incremental;
            println!(
                "{}",
                json!({
                    "meeting": meeting.session.as_str(),
                    "op": op.as_str(),
                    "lines": said.len(),
                    "full_prompt_tokens": full,
                    "incremental_prompt_tokens": incremental,
                    "ratio": incremental as f64 / full as f64,
                })
            );
        }
    }
    println!(
        "{}",
        json!({
            "meetings": all.len(),
            "results_from": if model.is_some() { "model" } else { "builtin" },
            "full_prompt_tokens": full_total,
            "incremental_prompt_tokens": incremental_total,
            "ratio": incremental_total as f64 / full_total as f64,
            "lines_never_sent": never_sent,
        })
    );
    Ok(())
}
