//! Command-line flags, each also readable from an `INFLIGHT_*` variable and
//! from the config file, and the engine settings they make.
//!
//! Long by nature: every flag of every command is here with the doc comment
//! that is its `--help` text, and the tests at the end check them together.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the commands and their flags (with their `--help` text: long by nature) |
//! | `values.rs` | parsers of flag values: URLs, durations, names |
//! | `settings.rs` | what the flags make: backend, feeds, API, cluster, engine settings |
//! | [`file`] | the config file's keys and how each becomes a flag |
//! | [`layers`] | flag > variable > file > default, and `config show` |

pub mod file;
pub mod layers;
pub mod manuals;
pub mod operations;
pub mod prices;
mod settings;
mod values;
pub mod webhooks;

pub use file::FileConfig;
use values::*;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::llm::LatencyRange;
use crate::model::Operation;
use crate::state::Policy;

/// Where `inflight serve` listens unless told otherwise.
pub const DEFAULT_API_PORT: u16 = 8787;

/// What `inflight --version` says: the version, the commit it was built
/// from, and what is built in.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("INFLIGHT_GIT_COMMIT"),
    "\nbuilt in: terminal dashboard, HTTP API with /ws and /metrics, SQLite (bundled), \
Redis cluster, TLS (rustls), OpenAI-compatible and llama.cpp servers, recording and replay",
);

#[derive(Debug, Parser)]
#[command(
    name = "inflight",
    version,
    long_version = LONG_VERSION,
    about = "Keeps slow LLM work on live transcripts from piling up, and shows it live.",
    long_about = "Keeps slow LLM work on live transcripts from piling up, and shows it live.\n\n\
Without a command, opens the dashboard; without --feed, on the embedded demo \
(a replay feed of recorded meetings and the builtin LLM with simulated latency)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Draw the dashboard without colour (also: the NO_COLOR variable).
    #[arg(long)]
    pub no_color: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The same engine without the dashboard, logging to stdout.
    Serve(Box<EngineArgs>),
    /// A replay feed server that plays recorded meetings (demo, tests).
    Feed(FeedArgs),
    /// Print processing statuses from a running inflight's API.
    Status(StatusArgs),
    /// Check a config file, or show the settings in effect.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The dashboard of an inflight running elsewhere (`inflight serve`),
    /// over its API: closing it stops nothing there.
    Attach(AttachArgs),
    /// Play a recording (`--record`) in the dashboard, or, with --engine,
    /// through the engine to compare.
    Replay(ReplayArgs),
    /// Record a running server from outside, over its API.
    Record(RecordArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page, or write one page per command into a folder.
    Man(ManArgs),
    /// Print the API's OpenAPI 3.1 document (as `GET /api/openapi.json`
    /// serves it).
    Openapi,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell, e.g. `bash`: `inflight completions bash > /etc/bash_completion.d/inflight`.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `inflight.1` and a page for each command (`inflight-serve.1`,
    /// …) into this folder instead of printing `inflight.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The server's API.
    #[arg(long, value_name = "URL", env = "INFLIGHT_API_URL")]
    pub from: String,

    /// The file to write (appended to), as `--record` writes one.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Bearer token: a viewer's is enough.
    #[arg(
        long = "api-token",
        value_name = "TOKEN",
        env = "INFLIGHT_API_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Rotate the file when it passes this size.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub max_size: u64,

    /// Files kept in all, the one written included.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub keep: u32,

    /// Rotate the file when it is this old, too.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_age: Option<Duration>,
}

/// How `inflight replay` prints its comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording: a file `--record` wrote.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Feed the recorded transcripts and LLM answers, with their recorded
    /// times, through today's engine on a paused clock, and compare the
    /// outcome with the recording.
    #[arg(long)]
    pub engine: bool,

    /// Print the comparison as a table or as one JSON object.
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "table", num_args = 0..=1, default_missing_value = "table")]
    pub report: ReportFormat,

    /// Replay with this many LLM calls at once instead of the recorded
    /// setting.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub llm_concurrency: Option<u32>,

    /// Replay with this --min-interval instead of the recorded one.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_interval: Option<Duration>,

    /// Replay with this --on-busy for every operation.
    #[arg(long, value_enum)]
    pub on_busy: Option<Policy>,

    /// In the dashboard, play at this speed (1 is as recorded; `[` and
    /// `]` change it).
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,

    /// Draw the dashboard without colour (also: the NO_COLOR variable).
    #[arg(long)]
    pub no_color: bool,
}

fn parse_speed(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(speed) if (0.25..=100.0).contains(&speed) => Ok(speed),
        _ => Err(format!("{raw:?} is not a speed from 0.25 to 100")),
    }
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The server's API.
    #[arg(
        value_name = "URL",
        default_value = "http://127.0.0.1:8787",
        env = "INFLIGHT_API_URL"
    )]
    pub url: String,

    /// Bearer token: the operator's (may trigger and cancel) or a viewer's
    /// (read-only).
    #[arg(
        long = "api-token",
        value_name = "TOKEN",
        env = "INFLIGHT_API_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// A file whose first line is the token.
    #[arg(
        long = "api-token-file",
        value_name = "FILE",
        env = "INFLIGHT_API_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,

    /// Draw without colour (also: the NO_COLOR variable).
    #[arg(long)]
    pub no_color: bool,
}

impl AttachArgs {
    /// The token, from the flag, the variable or the file.
    pub fn token(&self) -> Result<Option<String>, String> {
        match &self.token_file {
            Some(path) => layers::read_token(path).map(Some),
            None => Ok(self.token.clone()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file without starting anything: its keys, its values,
    /// and the settings they make together.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Print the settings in effect (as a config file), with where each
    /// came from; tokens are not shown. Takes the same flags as `serve`.
    Show(Box<EngineArgs>),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One session's processing status; without it, every session.
    pub session: Option<String>,

    /// The API's base URL.
    #[arg(
        long = "api",
        value_name = "URL",
        default_value = "http://127.0.0.1:8787",
        env = "INFLIGHT_API_URL"
    )]
    pub api_url: String,

    /// Print the server's JSON as it is.
    #[arg(long)]
    pub json: bool,

    /// Bearer token for an API that needs one.
    #[arg(
        long = "api-token",
        value_name = "TOKEN",
        env = "INFLIGHT_API_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// Which LLM backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LlmKind {
    /// No model, no network: extractive summaries and keyword mind maps.
    Builtin,
    /// An Ollama server (`/api/chat`).
    Ollama,
    /// Any OpenAI-compatible server (`/v1/chat/completions`).
    Openai,
}

/// How `serve` writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryMode {
    /// The previous result plus what was said since, one prompt window at a time.
    Incremental,
    /// Re-read the transcript each time (its newest prompt window).
    Full,
}

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// A transcript feed to connect to (ws:// or wss:// URL); repeat for several.
    #[arg(
        long = "feed",
        value_name = "URL",
        env = "INFLIGHT_FEED",
        value_delimiter = ',',
        value_parser = parse_feed_url
    )]
    pub feeds: Vec<String>,

    /// The feeds' message format; `auto` detects it from the first message.
    #[arg(long, value_enum, default_value = "auto", env = "INFLIGHT_FEED_FORMAT")]
    pub feed_format: crate::feed::adapters::FeedFormat,

    /// An extra header sent when connecting to feeds ('Name: value'); repeat for several.
    #[arg(long = "feed-header", value_name = "HEADER", value_parser = crate::feed::client::parse_header)]
    pub feed_headers: Vec<crate::feed::client::FeedHeader>,

    /// A PEM file of CA certificates to trust for wss:// feeds, beside the system's.
    #[arg(long, value_name = "FILE", env = "INFLIGHT_FEED_CA")]
    pub feed_ca: Option<PathBuf>,

    /// Do not send processing_status messages up the feeds' sockets.
    #[arg(long)]
    pub no_upstream_status: bool,

    /// Also send summary_update and mind_map_update up the feeds' sockets.
    #[arg(long)]
    pub upstream_results: bool,

    /// Longest wait for a feed's TCP, TLS and WebSocket handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration, env = "INFLIGHT_FEED_CONNECT_TIMEOUT")]
    pub feed_connect_timeout: Duration,

    /// A feed connection that brings no frame, not even a pong to inflight's
    /// pings, for this long is dead: it is dropped and resumed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_positive_duration, env = "INFLIGHT_FEED_IDLE_TIMEOUT")]
    pub feed_idle_timeout: Duration,

    /// Give a feed up after this many failed connection attempts in a row (default: never).
    #[arg(long, value_name = "N", env = "INFLIGHT_FEED_RETRIES")]
    pub feed_retries: Option<u32>,

    /// The LLM backend.
    #[arg(long, value_enum, default_value = "builtin", env = "INFLIGHT_LLM")]
    pub llm: LlmKind,

    /// The model to ask (ollama, openai); an Ollama name without a tag means
    /// `:latest`. For openai, the one model the server lists when not given.
    #[arg(long, value_name = "NAME", env = "INFLIGHT_MODEL")]
    pub model: Option<String>,

    /// The LLM server's base URL (ollama default http://127.0.0.1:11434;
    /// for openai, with or without a trailing /v1).
    #[arg(long, value_name = "URL", env = "INFLIGHT_LLM_URL")]
    pub llm_url: Option<String>,

    /// The environment variable holding the API key of an OpenAI-compatible server.
    #[arg(
        long,
        value_name = "VAR",
        default_value = "OPENAI_API_KEY",
        env = "INFLIGHT_LLM_API_KEY_ENV"
    )]
    pub llm_api_key_env: String,

    /// Most tokens an LLM answer may have (sent as Ollama's `num_predict`,
    /// an OpenAI-compatible server's `max_tokens`).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), env = "INFLIGHT_MAX_TOKENS")]
    pub max_tokens: u32,

    /// The model server's context window in tokens, for a server that does
    /// not say (llama.cpp's server, vLLM and Ollama do, and every server
    /// names it when it refuses a prompt). Given, it wins over what the
    /// server says until the server refuses a prompt that fits it.
    #[arg(long, value_name = "TOKENS", value_parser = clap::value_parser!(u32).range(256..), env = "INFLIGHT_LLM_CONTEXT")]
    pub llm_context: Option<u32>,

    /// An LLM answer longer than this many bytes ends its run as failed.
    #[arg(long, value_name = "BYTES", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(1..=(1 << 30)), env = "INFLIGHT_MAX_ANSWER_BYTES")]
    pub max_answer_bytes: u64,

    /// A TOML config file: any setting below, and the prompt templates
    /// (see docs/inflight.example.toml). A flag or variable wins over it.
    #[arg(long, value_name = "FILE", env = "INFLIGHT_CONFIG")]
    pub config: Option<PathBuf>,

    /// Latency of the builtin backend, fixed (`200ms`) or a range (`2s..6s`).
    /// Default: 2s..6s on the embedded demo, none otherwise.
    #[arg(long, value_name = "RANGE", env = "INFLIGHT_SIMULATE_LATENCY")]
    pub simulate_latency: Option<LatencyRange>,

    /// What a request does when its operation is already running for the session.
    #[arg(long, value_enum, default_value = "coalesce", env = "INFLIGHT_ON_BUSY")]
    pub on_busy: Policy,

    /// Give an LLM call up as timed out after this long from its start
    /// (e.g. 300s, 2m). Waiting for a permit does not count.
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_duration, env = "INFLIGHT_OP_TIMEOUT")]
    pub op_timeout: Duration,

    /// Most LLM calls at once, across all sessions.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024), env = "INFLIGHT_LLM_CONCURRENCY")]
    pub llm_concurrency: u32,

    /// Start a follow-up run no sooner than this after the previous run of
    /// the same session and operation started (0: at once). Fewer LLM calls,
    /// staler results.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration, env = "INFLIGHT_MIN_INTERVAL")]
    pub min_interval: Duration,

    /// Run a failed (or timed-out) run again, up to this many times in a
    /// row, while its session has transcripts no result covers; past them
    /// the operation is shown stale until a new transcript or a trigger
    /// (0: never retry).
    #[arg(long, value_name = "N", default_value_t = crate::state::DEFAULT_RETRIES, value_parser = clap::value_parser!(u32).range(0..=100), env = "INFLIGHT_RUN_RETRIES")]
    pub run_retries: u32,

    /// The wait before the first retry of a failed run; it doubles for each
    /// retry after (at most 5 min), with up to a quarter more at random.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration, env = "INFLIGHT_RETRY_BACKOFF")]
    pub retry_backoff: Duration,

    /// How summaries and mind maps read the transcript: build on the
    /// previous result (incremental) or re-read it all (full).
    #[arg(
        long,
        value_enum,
        default_value = "incremental",
        env = "INFLIGHT_SUMMARY_MODE"
    )]
    pub summary_mode: SummaryMode,

    /// Forget a session this long after it ended (its transcripts, results
    /// and statistics), so memory follows recent sessions only.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration, env = "INFLIGHT_FORGET_AFTER")]
    pub forget_after: Duration,

    /// Treat a live session that sent nothing for this long as ended: its
    /// final runs happen, and it is forgotten after --forget-after.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_positive_duration, env = "INFLIGHT_IDLE_AFTER")]
    pub idle_after: Duration,

    /// Most sessions held at once; a new session beyond is refused, counted
    /// per feed and logged.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..), env = "INFLIGHT_MAX_SESSIONS")]
    pub max_sessions: u32,

    /// Forgotten session ids remembered with their last seq, so a replaying
    /// feed cannot bring them back.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100_000,
        env = "INFLIGHT_REMEMBER_FORGOTTEN"
    )]
    pub remember_forgotten: u32,

    /// Most final transcripts one session holds for its runs, covered or
    /// not (with a database, those waiting in the file count too): past it
    /// (a long LLM outage) the oldest not yet summarised are dropped and
    /// counted as lost.
    #[arg(long, value_name = "N", default_value_t = 4_000, value_parser = clap::value_parser!(u32).range(400..), env = "INFLIGHT_MAX_HELD_TRANSCRIPTS")]
    pub max_held_transcripts: u32,

    /// Covered final transcripts one session keeps in memory for views
    /// (the details pane shows 40); older covered lines are released at
    /// once. 0 keeps only what the operations have not covered yet. With a
    /// database, lines leave memory once the file holds them (uncovered
    /// ones after a quarter second), and views and runs read them back from it.
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = clap::value_parser!(u32).range(0..=100_000), env = "INFLIGHT_KEEP_TRANSCRIPTS")]
    pub keep_transcripts: u32,

    /// Most tokens one session may spend, all operations together; then
    /// no run of it starts (`⊘ budget`). Unlimited unless given.
    #[arg(long, value_name = "TOKENS", value_parser = clap::value_parser!(u64).range(1..), env = "INFLIGHT_BUDGET_SESSION_TOKENS")]
    pub budget_session_tokens: Option<u64>,

    /// Most one session may cost, in the prices' currency (needs
    /// `[[prices]]`).
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount, env = "INFLIGHT_BUDGET_SESSION_COST")]
    pub budget_session_cost: Option<crate::spend::Cost>,

    /// Most tokens the sessions of one feed may spend in any hour.
    #[arg(long, value_name = "TOKENS", value_parser = clap::value_parser!(u64).range(1..), env = "INFLIGHT_BUDGET_FEED_TOKENS_PER_HOUR")]
    pub budget_feed_tokens_per_hour: Option<u64>,

    /// Most the sessions of one feed may cost in any hour (needs
    /// `[[prices]]`).
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount, env = "INFLIGHT_BUDGET_FEED_COST_PER_HOUR")]
    pub budget_feed_cost_per_hour: Option<crate::spend::Cost>,

    /// Most tokens all sessions together may spend in any hour.
    #[arg(long, value_name = "TOKENS", value_parser = clap::value_parser!(u64).range(1..), env = "INFLIGHT_BUDGET_TOKENS_PER_HOUR")]
    pub budget_tokens_per_hour: Option<u64>,

    /// Most all sessions together may cost in any hour (needs
    /// `[[prices]]`).
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount, env = "INFLIGHT_BUDGET_COST_PER_HOUR")]
    pub budget_cost_per_hour: Option<crate::spend::Cost>,

    /// Record what arrives and what the engine and the LLM do to this
    /// file (JSON lines, appended to), for `inflight replay`.
    #[arg(long, value_name = "FILE", env = "INFLIGHT_RECORD")]
    pub record: Option<PathBuf>,

    /// Rotate the recording when its file passes this size (`64MiB`,
    /// `1GB`, bytes without a unit).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size, env = "INFLIGHT_RECORD_MAX_SIZE")]
    pub record_max_size: u64,

    /// Recording files kept in all, the one written included: the
    /// recording takes at most this many times --record-max-size.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000), env = "INFLIGHT_RECORD_KEEP")]
    pub record_keep: u32,

    /// Rotate the recording when its file is this old, too.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "INFLIGHT_RECORD_MAX_AGE")]
    pub record_max_age: Option<Duration>,

    /// Defined operations that run by themselves (comma-separated; each as
    /// its definition says when): all of them unless given.
    #[arg(long, value_name = "OPS", value_delimiter = ',', value_parser = parse_operation, env = "INFLIGHT_OPS")]
    pub ops: Vec<Operation>,

    /// Serve the HTTP API on this address (the dashboard: off unless given;
    /// `serve`: 127.0.0.1:8787 unless given).
    #[arg(long = "api", value_name = "ADDR", env = "INFLIGHT_API")]
    pub api: Option<SocketAddr>,

    /// Bearer token the API requires (needed for a non-loopback address).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "INFLIGHT_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,

    /// A file whose first line is the API's bearer token: for a config file,
    /// or a service's credentials, where the token itself should not be.
    #[arg(
        long,
        value_name = "FILE",
        env = "INFLIGHT_API_TOKEN_FILE",
        conflicts_with = "api_token"
    )]
    pub api_token_file: Option<PathBuf>,

    /// A viewer's bearer token: it may read everything the API shows, and
    /// its triggers and cancels are refused (403).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "INFLIGHT_API_READ_TOKEN",
        hide_env_values = true
    )]
    pub api_read_token: Option<String>,

    /// A file whose first line is the viewer's token.
    #[arg(
        long,
        value_name = "FILE",
        env = "INFLIGHT_API_READ_TOKEN_FILE",
        conflicts_with = "api_read_token"
    )]
    pub api_read_token_file: Option<PathBuf>,

    /// The ingest token: it may push transcripts (`POST /api/transcripts`,
    /// the `/ingest` WebSocket) and nothing else. Without one, pushing is
    /// off; the operator's and viewers' tokens never push.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "INFLIGHT_API_INGEST_TOKEN",
        hide_env_values = true
    )]
    pub api_ingest_token: Option<String>,

    /// A file whose first line is the ingest token.
    #[arg(
        long,
        value_name = "FILE",
        env = "INFLIGHT_API_INGEST_TOKEN_FILE",
        conflicts_with = "api_ingest_token"
    )]
    pub api_ingest_token_file: Option<PathBuf>,

    /// An origin (`https://host[:port]`) whose web pages may call the API;
    /// repeat for several. By default a request carrying any `Origin` is refused.
    #[arg(
        long = "api-allow-origin",
        value_name = "ORIGIN",
        env = "INFLIGHT_API_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub api_allow_origins: Vec<String>,

    /// A host name the API answers to besides loopback ones while it listens
    /// on loopback (a name in /etc/hosts, say); repeat for several. Other
    /// `Host`s are refused, which keeps DNS rebinding out.
    #[arg(
        long = "api-allow-host",
        value_name = "NAME",
        env = "INFLIGHT_API_ALLOW_HOST",
        value_delimiter = ','
    )]
    pub api_allow_hosts: Vec<String>,

    /// Most /ws subscribers at once; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000), env = "INFLIGHT_API_MAX_WS_CLIENTS")]
    pub api_max_ws_clients: u32,

    /// Largest frame a /ws subscriber may send; a larger one ends its connection.
    #[arg(long, value_name = "BYTES", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(128..=(1 << 20)), env = "INFLIGHT_API_WS_MAX_FRAME")]
    pub api_ws_max_frame: u32,

    /// Most `/ingest` sockets open at once; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000), env = "INFLIGHT_API_MAX_INGEST_SOCKETS")]
    pub api_max_ingest_sockets: u32,

    /// Largest batch `POST /api/transcripts` takes; a larger one is answered 413.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20, value_parser = clap::value_parser!(u32).range(1024..=(256 << 20)), env = "INFLIGHT_API_MAX_BATCH")]
    pub api_max_batch: u32,

    /// A /ws subscriber that answers no ping, or whose socket takes no data,
    /// for this long is dropped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_positive_duration, env = "INFLIGHT_API_WS_TIMEOUT")]
    pub api_ws_timeout: Duration,

    /// A webhook delivery not made within this long of its event is given
    /// up and kept as a dead letter.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_positive_duration, env = "INFLIGHT_WEBHOOK_MAX_AGE")]
    pub webhook_max_age: Duration,

    /// Most webhook deliveries waiting at once; past it a new one is
    /// dropped and counted (a receiver's newest result is always kept).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000), env = "INFLIGHT_WEBHOOK_MAX_PENDING")]
    pub webhook_max_pending: u32,

    /// One webhook attempt's limit, connect to answer; a slower one is
    /// tried again later.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration, env = "INFLIGHT_WEBHOOK_TIMEOUT")]
    pub webhook_timeout: Duration,

    /// The receivers of results: the config file's `[[webhooks]]`.
    #[arg(skip)]
    pub webhooks: Vec<crate::webhooks::Endpoint>,

    /// What tokens cost, per model: the config file's `[[prices]]`.
    #[arg(skip)]
    pub prices: crate::spend::Prices,

    /// On SIGTERM or Ctrl-C, `serve` stops reading feeds and lets the runs
    /// in flight finish for at most this long, then cancels the rest.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, env = "INFLIGHT_DRAIN_TIMEOUT")]
    pub drain_timeout: Duration,

    /// The SQLite file that keeps sessions, transcripts, results and run
    /// history across restarts (default: $XDG_STATE_HOME/inflight/inflight.db,
    /// else ~/.local/state/inflight/inflight.db; the demo uses a file of its
    /// own, deleted when it stops).
    #[arg(
        long,
        value_name = "PATH",
        env = "INFLIGHT_DB",
        conflicts_with = "no_db"
    )]
    pub db: Option<std::path::PathBuf>,

    /// Keep everything in memory only, as before there was a database.
    #[arg(long)]
    pub no_db: bool,

    /// `serve`'s log lines: `text` for people, `json` (one object a line:
    /// timestamp, level, message and the event's fields) for Loki or
    /// Elasticsearch.
    #[arg(long, value_enum, default_value = "text", env = "INFLIGHT_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// What `serve` logs: a level (`info`, `debug`…) or a filter in
    /// RUST_LOG's syntax; it wins over RUST_LOG. Default: RUST_LOG, else
    /// `info`. The original system's "state cleaned up" events are at `debug`.
    #[arg(long, value_name = "FILTER", env = "INFLIGHT_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Delete from the database the sessions silent for longer than this.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_positive_duration, env = "INFLIGHT_RETAIN")]
    pub retain: Duration,

    /// Share the work with other instances through this Redis
    /// (`redis://[:PASSWORD@]HOST[:PORT][/DB]`): at most one run per
    /// session and operation across all of them, and a dead instance's
    /// work taken over. Every instance connects to the same feeds.
    #[arg(long, value_name = "URL", value_parser = parse_redis_url, env = "INFLIGHT_REDIS")]
    pub redis: Option<String>,

    /// Put before every Redis key, so several clusters can share one Redis.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "inflight:",
        env = "INFLIGHT_REDIS_PREFIX"
    )]
    pub redis_prefix: String,

    /// How long a run's lease lives without renewal (renewed every third of
    /// it): a dead instance's work is taken over within about this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_lease_ttl, env = "INFLIGHT_LEASE_TTL")]
    pub lease_ttl: Duration,

    /// This instance's name in leases, results and the dashboards; unique
    /// in the cluster (default: the host name and the process id).
    #[arg(long, value_name = "NAME", value_parser = parse_instance, env = "INFLIGHT_INSTANCE")]
    pub instance: Option<String>,

    /// Replay speed of the embedded demo feed (1 = real time).
    #[arg(
        long,
        value_name = "FACTOR",
        default_value_t = 1.0,
        env = "INFLIGHT_DEMO_SPEED"
    )]
    pub demo_speed: f64,
}

#[derive(Debug, Args)]
pub struct FeedArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100", env = "INFLIGHT_FEED_LISTEN")]
    pub listen: SocketAddr,

    /// A folder of `.jsonl` meetings to play instead of the embedded ones.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Replay speed: 1 is real time, 2 twice as fast, 0 as fast as possible.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,

    /// Start each meeting again (under a new session id) when it ends.
    #[arg(long = "loop")]
    pub looping: bool,

    /// Cut each connection after this many frames (tests reconnects).
    #[arg(long, value_name = "N")]
    pub drop_every: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        // Catches clashing flag names between commands, among other mistakes.
        Cli::command().debug_assert();
    }

    #[test]
    fn every_setting_of_serve_can_come_from_an_inflight_variable() {
        let mut cli = Cli::command();
        cli.build();
        let serve = cli
            .get_subcommands()
            .find(|c| c.get_name() == "serve")
            .expect("serve");
        // Header pairs are given one by one; switches are plain flags.
        let exempt = ["feed-header", "help"];
        let mut missing = Vec::new();
        let mut checked = 0;
        for arg in serve.get_arguments() {
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            let long = arg.get_long().unwrap_or_default();
            if !takes_value || exempt.contains(&long) {
                continue;
            }
            checked += 1;
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or("");
            if !env.starts_with("INFLIGHT_") {
                missing.push(long.to_string());
            }
        }
        assert!(
            missing.is_empty(),
            "settings without a variable: {missing:?}"
        );
        assert!(checked > 30, "only {checked} settings seen");
    }

    #[test]
    fn serve_and_the_dashboard_take_the_same_engine_flags() {
        let cli = Cli::try_parse_from([
            "inflight",
            "serve",
            "--feed",
            "ws://a/",
            "--on-busy",
            "skip",
            "--op-timeout",
            "2m",
        ])
        .unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.feeds, ["ws://a/"]);
        assert_eq!(
            args.engine_config().state.policy[crate::model::Operation::SUMMARY],
            Policy::Skip
        );
        assert_eq!(args.op_timeout, Duration::from_secs(120));
        let cli = Cli::try_parse_from(["inflight", "--feed", "ws://b/", "--llm-concurrency", "2"])
            .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.engine.engine_config().llm_concurrency, 2);
        let cli = Cli::try_parse_from(["inflight", "--max-held-transcripts", "1000"]).unwrap();
        assert_eq!(
            cli.engine.engine_config().sessions.max_held_transcripts,
            1000
        );
        assert!(
            Cli::try_parse_from(["inflight", "--max-held-transcripts", "10"]).is_err(),
            "below the 400 a restart reads back"
        );
        let kept = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            cli.engine.engine_config().sessions.kept_transcripts
        };
        assert_eq!(kept(&["inflight"]), 40, "what the details pane shows");
        assert_eq!(kept(&["inflight", "--keep-transcripts", "0"]), 0);
        assert!(Cli::try_parse_from(["inflight", "--llm-concurrency", "0"]).is_err());
        assert!(Cli::try_parse_from(["inflight", "--simulate-latency", "6s..2s"]).is_err());
        let cli =
            Cli::try_parse_from(["inflight", "status", "s-1", "--api", "http://h:1", "--json"])
                .unwrap();
        let Some(Command::Status(status)) = cli.command else {
            panic!("status")
        };
        assert_eq!(
            (
                status.session.as_deref(),
                status.api_url.as_str(),
                status.json
            ),
            (Some("s-1"), "http://h:1", true)
        );
    }

    #[test]
    fn remote_models_need_a_model_name() {
        let cli = Cli::try_parse_from(["inflight", "--llm", "ollama"]).unwrap();
        assert!(cli.engine.backend().err().unwrap().contains("--model"));
        let cli = Cli::try_parse_from(["inflight", "--llm", "openai", "--model", "m"]).unwrap();
        assert!(cli.engine.backend().err().unwrap().contains("--llm-url"));
    }
}
