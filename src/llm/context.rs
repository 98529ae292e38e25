//! The server's context window: how many tokens a prompt and its answer may
//! take together, where that was learnt, and how much text fits in it.
//!
//! The window comes from `--llm-context` when it is given (and nothing the
//! server says overrides it); otherwise from the server itself (llama.cpp's
//! `/props`, vLLM's model list, Ollama's model card and the `num_ctx`
//! inflight asks for), or, for a server that says nothing, from the text of
//! its first context-length refusal ([`parse_refusal`]). A refusal always
//! wins over what was read before: the server that refuses knows best.
//!
//! Prompts are sized in characters before they are built: the runner asks
//! [`ContextWindow::prompt_chars`] how much previous result and transcript a
//! prompt may carry. Characters per token start at a cautious
//! [`START_CHARS_PER_TOKEN`] and follow what the server counts (its usage
//! figures, its tokenizer, its refusals), never above
//! [`MAX_CHARS_PER_TOKEN`]. The answer keeps its `--max-tokens`, or a
//! quarter of the window when the window is smaller than four times that:
//! an incremental prompt carries the previous result, which may be as long
//! as an answer, so a quarter for each leaves half the window for what was
//! said since. (With half for the answer, a 2 048-token window read about
//! seven lines a step, and a small model wrote until its budget was spent.)

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

/// Characters per token assumed before the server has counted any prompt
/// (most tokenizers give about four for English; three leaves a margin).
pub const START_CHARS_PER_TOKEN: f64 = 3.0;
/// The most characters per token ever assumed, whatever the counts say.
pub const MAX_CHARS_PER_TOKEN: f64 = 4.5;
/// Tokens kept free for the chat template's own markup around messages.
pub const TEMPLATE_TOKENS: u32 = 64;
/// The answer takes at most this fraction (one in N) of the window.
pub const ANSWER_SHARE: u32 = 4;
/// The share of the prompt's room filled, the rest left as a margin for the
/// estimate's error.
pub const FILL: f64 = 0.9;

/// Where the window in effect was learnt.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(as = ContextSource)]
pub enum Source {
    /// `--llm-context` (or the config file's `llm.context`).
    Flag,
    /// The server said so (`/props`, the model list, the model card).
    Server,
    /// The server refused a prompt and named its window.
    Refusal,
}

impl Source {
    fn code(self) -> u8 {
        match self {
            Source::Flag => 1,
            Source::Server => 2,
            Source::Refusal => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Source::Flag),
            2 => Some(Source::Server),
            3 => Some(Source::Refusal),
            _ => None,
        }
    }
}

/// What the views show about the window.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct ContextInfo {
    pub tokens: u32,
    pub source: Source,
}

/// The window of one server, shared by its calls.
#[derive(Debug)]
pub struct ContextWindow {
    /// 0 while unknown.
    tokens: AtomicU32,
    source: AtomicU8,
    /// Characters per token, in hundredths.
    chars_per_token: AtomicU32,
}

impl ContextWindow {
    /// A window set by the flag, or unknown until the server says.
    pub fn new(flag: Option<u32>) -> Self {
        let window = Self {
            tokens: AtomicU32::new(0),
            source: AtomicU8::new(0),
            chars_per_token: AtomicU32::new((START_CHARS_PER_TOKEN * 100.0) as u32),
        };
        if let Some(tokens) = flag.filter(|t| *t > 0) {
            window.set(tokens, Source::Flag);
        }
        window
    }

    fn set(&self, tokens: u32, source: Source) {
        self.tokens.store(tokens, Ordering::Relaxed);
        self.source.store(source.code(), Ordering::Relaxed);
    }

    pub fn info(&self) -> Option<ContextInfo> {
        let tokens = self.tokens.load(Ordering::Relaxed);
        let source = Source::from_code(self.source.load(Ordering::Relaxed))?;
        (tokens > 0).then_some(ContextInfo { tokens, source })
    }

    pub fn tokens(&self) -> Option<u32> {
        self.info().map(|i| i.tokens)
    }

    /// What the server says of itself; the flag, or a refusal seen since,
    /// wins over it.
    pub fn learn_from_server(&self, tokens: u32) {
        if tokens == 0 {
            return;
        }
        match self.info().map(|i| i.source) {
            Some(Source::Flag | Source::Refusal) => {}
            _ => self.set(tokens, Source::Server),
        }
    }

    /// A refusal named the window: the smaller of it and what was known
    /// wins (a server does not refuse a prompt that fits its window).
    pub fn learn_from_refusal(&self, tokens: u32) {
        if tokens == 0 {
            return;
        }
        let smaller = self.tokens().map_or(tokens, |known| known.min(tokens));
        if self.tokens() != Some(smaller) || self.info().map(|i| i.source) != Some(Source::Flag) {
            self.set(smaller, Source::Refusal);
        }
    }

    /// The server counted `tokens` for a prompt of `chars` characters: the
    /// estimate follows, at once when it was too optimistic, slowly
    /// otherwise.
    pub fn observe(&self, chars: usize, tokens: u64) {
        if chars < 200 || tokens == 0 {
            return;
        }
        let seen = (chars as f64 / tokens as f64).min(MAX_CHARS_PER_TOKEN);
        let now = self.chars_per_token();
        let next = if seen < now {
            seen
        } else {
            now + (seen - now) / 8.0
        };
        self.chars_per_token
            .store((next * 100.0).max(1.0) as u32, Ordering::Relaxed);
    }

    pub fn chars_per_token(&self) -> f64 {
        f64::from(self.chars_per_token.load(Ordering::Relaxed)) / 100.0
    }

    /// Tokens the answer may take: `max_tokens`, or a quarter of a smaller
    /// window.
    pub fn answer_tokens(&self, max_tokens: u32) -> u32 {
        match self.tokens() {
            Some(window) => max_tokens.min(window / ANSWER_SHARE).max(1),
            None => max_tokens,
        }
    }

    /// Tokens a prompt may take, the answer's and the template's kept free.
    pub fn prompt_tokens(&self, max_tokens: u32) -> Option<u32> {
        let window = self.tokens()?;
        Some(
            window
                .saturating_sub(self.answer_tokens(max_tokens))
                .saturating_sub(TEMPLATE_TOKENS),
        )
    }

    /// Characters of prompt text that fit, as estimated, with the margin;
    /// `None` while the window is unknown.
    pub fn prompt_chars(&self, max_tokens: u32) -> Option<usize> {
        let tokens = self.prompt_tokens(max_tokens)?;
        Some((f64::from(tokens) * self.chars_per_token() * FILL) as usize)
    }

    /// Tokens `chars` characters take, as estimated (rounded up).
    pub fn estimate(&self, chars: usize) -> u64 {
        (chars as f64 / self.chars_per_token()).ceil() as u64
    }
}

/// What a context-length refusal says: the window, and the tokens the
/// request asked for in all, where it names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refusal {
    pub window: Option<u32>,
    pub requested: Option<u32>,
}

/// Reads a server's message as a context-length refusal, or `None` when it
/// is something else. Known wordings:
/// - llama-cpp-python: `Requested tokens (8527) exceed context window of 4096`;
/// - vLLM and OpenAI: `This model's maximum context length is 4096 tokens.
///   However, you requested 8527 tokens …` (or `… your request has 8527
///   input tokens`, `… your messages resulted in 8527 tokens`);
/// - llama.cpp's server: error type `exceed_context_size_error` with
///   `n_ctx` and `n_prompt_tokens` (read from the JSON by the caller), and
///   the message `the request exceeds the available context size`.
pub fn parse_refusal(message: &str) -> Option<Refusal> {
    let lower = message.to_ascii_lowercase();
    if let Some(at) = lower.find("exceed context window of") {
        return Some(Refusal {
            window: number_after(&lower[at..], "exceed context window of"),
            requested: number_after(&lower, "requested tokens ("),
        });
    }
    if let Some(at) = lower.find("maximum context length is") {
        let rest = &lower[at..];
        let requested = ["you requested", "your request has", "resulted in"]
            .iter()
            .find_map(|w| number_after(rest, w));
        return Some(Refusal {
            window: number_after(rest, "maximum context length is"),
            requested,
        });
    }
    let known = [
        "exceeds the available context size",
        "exceed_context_size_error",
        "context_length_exceeded",
        "context length exceeded",
        "prompt is too long",
    ];
    known
        .iter()
        .any(|w| lower.contains(w))
        .then(Refusal::default)
}

/// The first number after `words` in `text`.
fn number_after(text: &str, words: &str) -> Option<u32> {
    let at = text.find(words)? + words.len();
    let digits: String = text[at..]
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_read_in_each_servers_words() {
        assert_eq!(
            parse_refusal("Requested tokens (8527) exceed context window of 4096"),
            Some(Refusal {
                window: Some(4096),
                requested: Some(8527)
            })
        );
        assert_eq!(
            parse_refusal(
                "This model's maximum context length is 2048 tokens. However, you requested \
                 3100 tokens (2076 in the messages, 1024 in the completion)."
            ),
            Some(Refusal {
                window: Some(2048),
                requested: Some(3100)
            })
        );
        assert_eq!(
            parse_refusal(
                "This model's maximum context length is 2048 tokens. However, your request \
                 has 2500 input tokens."
            )
            .and_then(|r| r.requested),
            Some(2500)
        );
        assert_eq!(
            parse_refusal("the request exceeds the available context size, try increasing it"),
            Some(Refusal::default())
        );
        assert_eq!(parse_refusal("model not found"), None);
        assert_eq!(parse_refusal("Service Unavailable"), None);
    }

    #[test]
    fn the_flag_wins_over_the_server_and_a_refusal_over_both() {
        let window = ContextWindow::new(Some(8192));
        window.learn_from_server(4096);
        assert_eq!(window.tokens(), Some(8192));
        window.learn_from_refusal(2048);
        assert_eq!(
            window.info(),
            Some(ContextInfo {
                tokens: 2048,
                source: Source::Refusal
            })
        );
        // A server's own figure no longer moves it.
        window.learn_from_server(4096);
        assert_eq!(window.tokens(), Some(2048));
        // Nor a refusal naming a larger window.
        window.learn_from_refusal(4096);
        assert_eq!(window.tokens(), Some(2048));

        // A refusal naming a larger window than the flag's leaves the flag.
        let told = ContextWindow::new(Some(2048));
        told.learn_from_refusal(4096);
        assert_eq!(
            told.info(),
            Some(ContextInfo {
                tokens: 2048,
                source: Source::Flag
            })
        );

        let unknown = ContextWindow::new(None);
        assert_eq!(unknown.info(), None);
        assert_eq!(unknown.prompt_chars(1024), None);
        unknown.learn_from_server(4096);
        assert_eq!(unknown.info().map(|i| i.source), Some(Source::Server));
    }

    #[test]
    fn prompts_are_sized_inside_the_window_with_the_answer_kept_free() {
        let window = ContextWindow::new(Some(2048));
        // The answer keeps a quarter of a small window at most.
        assert_eq!(window.answer_tokens(256), 256);
        assert_eq!(window.answer_tokens(512), 512);
        assert_eq!(window.answer_tokens(1024), 512);
        assert_eq!(window.answer_tokens(4000), 512);
        assert_eq!(
            window.prompt_tokens(1024),
            Some(2048 - 512 - TEMPLATE_TOKENS)
        );
        // A window four times the answer or more leaves the answer as asked.
        assert_eq!(ContextWindow::new(Some(4096)).answer_tokens(1024), 1024);
        assert_eq!(ContextWindow::new(Some(32_768)).answer_tokens(1024), 1024);
        let chars = window.prompt_chars(1024).unwrap();
        // What fits, counted back at the assumed rate, leaves the margin.
        let tokens = window.estimate(chars);
        assert!(tokens <= u64::from(window.prompt_tokens(1024).unwrap()));
        assert!(tokens as f64 >= 0.85 * f64::from(window.prompt_tokens(1024).unwrap()));
    }

    #[test]
    fn the_estimate_follows_the_servers_counts_down_at_once_and_up_slowly() {
        let window = ContextWindow::new(None);
        window.observe(10_000, 5_000);
        assert!((window.chars_per_token() - 2.0).abs() < 0.01);
        window.observe(10_000, 1_000);
        let after_one = window.chars_per_token();
        assert!(after_one > 2.0 && after_one < 3.0, "{after_one}");
        for _ in 0..200 {
            window.observe(10_000, 1_000);
        }
        assert!(window.chars_per_token() <= MAX_CHARS_PER_TOKEN);
        // Too small a prompt says nothing.
        let fresh = ContextWindow::new(None);
        fresh.observe(50, 40);
        assert_eq!(fresh.chars_per_token(), START_CHARS_PER_TOKEN);
    }
}
