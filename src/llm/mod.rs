//! LLM backends: what a run asks, what it gets back, and who answers.
//!
//! A [`Backend`] takes an [`LlmRequest`] (the operation, the session's new
//! utterances, the previous result) and returns text plus [`Usage`],
//! reporting tokens as they stream through [`Progress`]. The HTTP backends
//! make sure the text is usable (see `structured.rs`: the output-format
//! ladder and the one repair retry); the engine parses it (mind maps
//! leniently, see [`mind_map`]) and owns deadlines and cancellation. A
//! backend only has to be cancel-safe (dropping its future stops the work).

pub mod builtin;
pub mod context;
pub mod http;
pub mod mind_map;
pub mod ollama;
pub mod openai;
pub mod probe;
pub mod prompts;
pub(crate) mod structured;
pub mod tokenize;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::model::{Operation, SessionId};

/// A future returned by a backend.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One utterance as the prompt sees it: the speaker's name, when there is
/// one, and the text, in one allocation. A run holds one a line it sends,
/// and a thousand runs at once hold tens of thousands.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    said: Box<str>,
    /// How many bytes of `said` are the speaker's name; [`NO_SPEAKER`]
    /// when there is none.
    speaker_len: usize,
}

const NO_SPEAKER: usize = usize::MAX;

impl Utterance {
    pub fn new(speaker: Option<&str>, text: &str) -> Self {
        let name = speaker.unwrap_or("");
        let mut said = String::with_capacity(name.len() + text.len());
        said.push_str(name);
        said.push_str(text);
        Self {
            said: said.into_boxed_str(),
            speaker_len: speaker.map_or(NO_SPEAKER, str::len),
        }
    }

    pub fn speaker(&self) -> Option<&str> {
        (self.speaker_len != NO_SPEAKER).then(|| &self.said[..self.speaker_len])
    }

    pub fn text(&self) -> &str {
        match self.speaker_len {
            NO_SPEAKER => &self.said,
            n => &self.said[n..],
        }
    }
}

/// What a run asks of the model.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    pub session: SessionId,
    pub op: Operation,
    /// The utterances to read: those after the previous result (incremental),
    /// or from the start (full), never more than one prompt window.
    pub utterances: Vec<Utterance>,
    /// The result the new one builds on: the previous summary's text, or
    /// the previous mind map as an outline (`mind_map::to_outline`).
    pub previous: Option<String>,
    /// Set on the one retry after an answer that could not be used.
    pub repair: Option<Repair>,
}

impl LlmRequest {
    pub fn new(session: SessionId, op: Operation, utterances: Vec<Utterance>) -> Self {
        Self {
            session,
            op,
            utterances,
            previous: None,
            repair: None,
        }
    }
}

/// An answer that could not be used, and why: the repair prompt shows both.
#[derive(Debug, Clone, PartialEq)]
pub struct Repair {
    pub answer: String,
    pub why: String,
}

/// Tokens a call cost, as the server counted them (or estimated, for a
/// backend that has no tokenizer), and what they cost at the price table.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Of the prompt tokens, those the server read from its cache, where
    /// it says (OpenAI's `prompt_tokens_details.cached_tokens`, llama.cpp's
    /// `timings.cache_n`).
    #[serde(default)]
    pub cached_tokens: u64,
    /// The tokens priced when the call ended (`spend::Prices`); nothing
    /// for a model without a price.
    #[serde(default, with = "crate::spend::units")]
    #[schema(value_type = f64)]
    pub cost: crate::spend::Cost,
}

impl Usage {
    /// Tokens counted by the server or estimated, not yet priced.
    pub fn tokens(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            ..Usage::default()
        }
    }

    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens + other.prompt_tokens,
            completion_tokens: self.completion_tokens + other.completion_tokens,
            cached_tokens: self.cached_tokens + other.cached_tokens,
            cost: self.cost.plus(other.cost),
        }
    }

    /// About four characters a token, as with common tokenizers; for
    /// backends and servers that count nothing.
    pub fn estimate(text: &str) -> u64 {
        (text.chars().count() as u64).div_ceil(4)
    }
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmResponse {
    pub text: String,
    pub model: String,
    pub usage: Usage,
    /// The server stopped the answer at the token limit
    /// (`finish_reason: "length"`, Ollama's `done_reason: "length"`): the
    /// text is cut short.
    pub truncated: bool,
}

/// What kind of failure a call met; callers branch on it.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmErrorKind {
    /// The server could not be reached (connection refused, no route).
    Unreachable,
    /// The server took the request, then closed the connection before
    /// answering, or while it answered.
    Dropped,
    /// The server did not answer within the HTTP client's time limits.
    TimedOut,
    /// The server answered the request with an error status.
    Refused { status: u16 },
    /// The prompt and its answer do not fit the server's context window:
    /// the server said so, or the prompt was counted before it was sent
    /// (and then not sent). The window and the tokens asked for, where
    /// known.
    ContextExceeded {
        window: Option<u32>,
        requested: Option<u32>,
    },
    /// The server answered, but the answer cannot be used (empty, not the
    /// asked-for shape, too long). `answer` is what it sent.
    BadAnswer { answer: String },
    /// Anything else: an error inside a stream, a local failure.
    Other,
}

/// Why a call failed: its kind, and a message fit to show.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct LlmError {
    pub kind: LlmErrorKind,
    pub message: String,
    /// Tokens the failed call still cost, when the server said.
    pub usage: Usage,
    /// How long the server asked to be left alone (`Retry-After` on its
    /// last refusal), when it did.
    pub retry_after: Option<Duration>,
}

impl LlmError {
    pub fn new(kind: LlmErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            usage: Usage::default(),
            retry_after: None,
        }
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(LlmErrorKind::Other, message)
    }
}

/// Tokens streamed so far by one run; read by snapshots while the run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    tokens: AtomicU64,
}

impl Progress {
    pub fn add_tokens(&self, n: u64) {
        self.tokens.fetch_add(n, Ordering::Relaxed);
    }

    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }
}

/// What the views say about the backend.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct BackendInfo {
    /// `builtin`, `ollama`, `openai`.
    pub kind: String,
    pub model: String,
    /// True when the backend imitates a model (shown as such in every view).
    pub simulated: bool,
    pub reachable: bool,
    /// How mind maps are asked for on this server, as learnt: `json_schema`,
    /// `json_object` or `plain` (see `structured.rs`); `None` for a backend
    /// that makes its own.
    pub structured_output: Option<&'static str>,
    /// The server's context window in tokens and where it was learnt;
    /// `None` while unknown (prompts then carry at most
    /// `prompts::MAX_TRANSCRIPT_CHARS` of transcript).
    pub context: Option<context::ContextInfo>,
    /// Calls the server says it takes at once (llama.cpp's `total_slots`).
    pub slots: Option<u32>,
}

impl<'de> serde::Deserialize<'de> for BackendInfo {
    /// As serialised; a format name this build does not know reads as none.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Wire {
            kind: String,
            model: String,
            simulated: bool,
            reachable: bool,
            structured_output: Option<String>,
            #[serde(default)]
            context: Option<context::ContextInfo>,
            #[serde(default)]
            slots: Option<u32>,
        }
        let wire = Wire::deserialize(d)?;
        Ok(Self {
            kind: wire.kind,
            model: wire.model,
            simulated: wire.simulated,
            reachable: wire.reachable,
            structured_output: wire
                .structured_output
                .and_then(|name| structured::Rung::from_name(&name))
                .map(structured::Rung::name),
            context: wire.context,
            slots: wire.slots,
        })
    }
}

impl BackendInfo {
    /// A backend that imitates a model: always there, no format to learn.
    pub fn simulated(kind: &str, model: &str) -> Self {
        Self {
            kind: kind.into(),
            model: model.into(),
            simulated: true,
            reachable: true,
            structured_output: None,
            context: None,
            slots: None,
        }
    }
}

/// Something that answers LLM requests.
pub trait Backend: Send + Sync {
    fn info(&self) -> BackendInfo;

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>>;

    /// Characters of previous result and transcript one prompt of `op` may
    /// carry in all, so that it and its answer fit the server's context
    /// window; `None` while the window is unknown (or for a backend without
    /// one).
    fn prompt_room(&self, op: Operation) -> Option<usize> {
        let _ = op;
        None
    }

    /// Checks that the server is up and has the model; updates what
    /// [`Backend::info`] says about reachability. The builtin backend is
    /// always there.
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// How often an unreachable backend is checked again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(10);

/// Checks the backend now and then for as long as the process runs: at once
/// (a clear message when the server is down or lacks the model), again every
/// [`RECHECK_EVERY`] while it fails, and once a minute while it works.
pub async fn watch(backend: std::sync::Arc<dyn Backend>) {
    let mut was_ok = None;
    loop {
        let result = backend.check().await;
        match (&result, was_ok) {
            (Ok(()), Some(true)) => {}
            (Ok(()), _) => tracing::info!("LLM backend {} is reachable", backend.info().kind),
            (Err(e), _) => tracing::warn!("LLM backend unavailable: {e}"),
        }
        was_ok = Some(result.is_ok());
        let wait = if result.is_ok() {
            RECHECK_EVERY * 6
        } else {
            RECHECK_EVERY
        };
        tokio::time::sleep(wait).await;
    }
}

/// A latency range for the builtin backend, written `200ms` or `2s..6s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencyRange {
    pub min: Duration,
    pub max: Duration,
}

impl LatencyRange {
    pub const ZERO: LatencyRange = LatencyRange {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    pub fn fixed(latency: Duration) -> Self {
        Self {
            min: latency,
            max: latency,
        }
    }

    /// A duration drawn uniformly from the range.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        if self.max <= self.min {
            return self.min;
        }
        let span = (self.max - self.min).as_micros() as u64;
        self.min + Duration::from_micros(rng.u64(0..=span))
    }
}

impl std::str::FromStr for LatencyRange {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| {
            humantime::parse_duration(part.trim()).map_err(|e| {
                format!("{part:?} is not a duration ({e}); write e.g. 200ms or 2s..6s")
            })
        };
        match raw.split_once("..") {
            Some((min, max)) => {
                let (min, max) = (parse(min)?, parse(max)?);
                if max < min {
                    return Err(format!("latency range {raw:?} ends before it starts"));
                }
                Ok(Self { min, max })
            }
            None => parse(raw).map(Self::fixed),
        }
    }
}

impl fmt::Display for LatencyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if self.min == self.max {
            f.write_str(&show(self.min))
        } else {
            write!(f, "{}..{}", show(self.min), show(self.max))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_ranges_parse() {
        assert_eq!(
            "200ms".parse::<LatencyRange>(),
            Ok(LatencyRange::fixed(Duration::from_millis(200)))
        );
        let range: LatencyRange = "2s..6s".parse().unwrap();
        assert_eq!(range.min, Duration::from_secs(2));
        assert_eq!(range.max, Duration::from_secs(6));
        assert!("6s..2s".parse::<LatencyRange>().is_err());
        assert!("soon".parse::<LatencyRange>().is_err());
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..100 {
            let d = range.sample(&mut rng);
            assert!(d >= range.min && d <= range.max);
        }
    }

    #[test]
    fn an_utterance_gives_back_its_speaker_and_text() {
        let said = Utterance::new(Some("Ana María"), "we ship on Friday");
        assert_eq!(
            (said.speaker(), said.text()),
            (Some("Ana María"), "we ship on Friday")
        );
        let alone = Utterance::new(None, "we ship");
        assert_eq!((alone.speaker(), alone.text()), (None, "we ship"));
        // A speaker given as empty stays given: the prompt shows it.
        let unnamed = Utterance::new(Some(""), "hm");
        assert_eq!((unnamed.speaker(), unnamed.text()), (Some(""), "hm"));
        assert_eq!(std::mem::size_of::<Utterance>(), 24, "not 48");
    }
}
