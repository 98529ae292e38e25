//! Command-line flags, each also readable from an `INFLIGHT_*` variable and
//! from the config file, and the engine settings they make.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the commands and their flags |
//! | [`file`] | the config file's keys and how each becomes a flag |
//! | [`layers`] | flag > variable > file > default, and `config show` |

pub mod file;
pub mod layers;

pub use file::FileConfig;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::EngineConfig;
use crate::llm::LatencyRange;
use crate::model::Operation;
use crate::state::{Policy, StateConfig};

/// Where `inflight serve` listens unless told otherwise.
pub const DEFAULT_API_PORT: u16 = 8787;

#[derive(Debug, Parser)]
#[command(
    name = "inflight",
    version,
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

    /// The model to ask (ollama, openai); an Ollama name without a tag means `:latest`.
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

    /// Most final transcripts one session holds in memory, covered or not:
    /// past it (a long LLM outage) the oldest not yet summarised are
    /// dropped and counted as lost.
    #[arg(long, value_name = "N", default_value_t = 4_000, value_parser = clap::value_parser!(u32).range(400..), env = "INFLIGHT_MAX_HELD_TRANSCRIPTS")]
    pub max_held_transcripts: u32,

    /// Operations each new final transcript requests (comma-separated).
    #[arg(long, value_name = "OPS", value_delimiter = ',', default_value = "summary,mind_map", value_parser = parse_operation, env = "INFLIGHT_OPS")]
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

    /// A /ws subscriber that answers no ping, or whose socket takes no data,
    /// for this long is dropped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_positive_duration, env = "INFLIGHT_API_WS_TIMEOUT")]
    pub api_ws_timeout: Duration,

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

/// A feed's URL: `ws://` or `wss://` with a host. Checked once, here, so a
/// typo stops inflight at start instead of retrying forever.
fn parse_feed_url(raw: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| {
        format!(
            "{:?} is not a URL ({e}); write e.g. ws://127.0.0.1:9100/live",
            crate::net::redact_url(raw)
        )
    })?;
    if !matches!(url.scheme(), "ws" | "wss") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{:?} is not a WebSocket URL; write ws://HOST[:PORT]/PATH or wss://…",
            crate::net::redact_url(raw)
        ));
    }
    Ok(raw.to_string())
}

fn parse_redis_url(raw: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| {
        format!(
            "{:?} is not a URL ({e}); write e.g. redis://127.0.0.1:6379/0",
            crate::net::redact_url(raw)
        )
    })?;
    if url.scheme() != "redis" || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{:?} is not a Redis URL; write redis://[:PASSWORD@]HOST[:PORT][/DB]",
            crate::net::redact_url(raw)
        ));
    }
    Ok(raw.to_string())
}

fn parse_lease_ttl(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        d if d < Duration::from_millis(300) => Err(format!(
            "{raw:?} is too short for a lease; give 300ms or more"
        )),
        d => Ok(d),
    }
}

fn parse_instance(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(format!(
            "{raw:?} is not an instance name: up to 64 letters, digits, '-', '_', '.' or ':'"
        ))
    }
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration ({e}); write e.g. 300s or 2m"))
}

fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        d if d.is_zero() => Err(format!("{raw:?} must be above zero")),
        d => Ok(d),
    }
}

fn parse_operation(raw: &str) -> Result<Operation, String> {
    Operation::parse(raw).ok_or_else(|| {
        let known: Vec<&str> = Operation::ALL.iter().map(|op| op.as_str()).collect();
        format!("unknown operation {raw:?}; known: {}", known.join(", "))
    })
}

impl EngineArgs {
    /// True when no feed was given: the embedded demo feed is used.
    pub fn is_demo(&self) -> bool {
        self.feeds.is_empty()
    }

    /// Where the database lives: `None` with `--no-db`. The demo gets a
    /// file of its own (in the temp folder, one per process) unless `--db`
    /// names one.
    pub fn db_path(&self) -> Result<Option<std::path::PathBuf>, String> {
        if self.no_db {
            return Ok(None);
        }
        if let Some(path) = &self.db {
            return Ok(Some(path.clone()));
        }
        if self.is_demo() {
            let name = format!("inflight-demo-{}.db", std::process::id());
            return Ok(Some(std::env::temp_dir().join(name)));
        }
        crate::db::default_path("inflight.db").map(Some).ok_or_else(|| {
            "no place for the database: set XDG_STATE_HOME or HOME, or give --db PATH or --no-db"
                .to_string()
        })
    }

    /// The builtin backend's latency: as given, else 2s..6s on the demo.
    pub fn builtin_latency(&self) -> LatencyRange {
        self.simulate_latency.unwrap_or(if self.is_demo() {
            LatencyRange {
                min: Duration::from_secs(2),
                max: Duration::from_secs(6),
            }
        } else {
            LatencyRange::ZERO
        })
    }

    /// The LLM backend the flags ask for.
    pub fn backend(&self) -> Result<std::sync::Arc<dyn crate::llm::Backend>, String> {
        use crate::llm::{builtin::BuiltinBackend, ollama::OllamaBackend, openai::OpenAiBackend};
        let prompts = match &self.config {
            Some(path) => FileConfig::load(path)?.prompts,
            None => Default::default(),
        };
        let model = || {
            self.model.clone().ok_or_else(|| {
                format!(
                    "--llm {} needs --model NAME",
                    self.llm
                        .to_possible_value()
                        .map(|v| v.get_name().to_string())
                        .unwrap_or_default()
                )
            })
        };
        Ok(match self.llm {
            LlmKind::Builtin => std::sync::Arc::new(BuiltinBackend::new(self.builtin_latency())),
            LlmKind::Ollama => std::sync::Arc::new(
                OllamaBackend::new(self.llm_url.as_deref(), &model()?, prompts)?
                    .with_limits(self.answer_limits()),
            ),
            LlmKind::Openai => {
                let url = self.llm_url.as_deref().ok_or(
                    "--llm openai needs --llm-url URL (for example http://127.0.0.1:8080)",
                )?;
                let key = std::env::var(&self.llm_api_key_env).ok();
                std::sync::Arc::new(
                    OpenAiBackend::new(url, &model()?, key, prompts)?
                        .with_limits(self.answer_limits()),
                )
            }
        })
    }

    /// What an LLM answer may cost.
    pub fn answer_limits(&self) -> crate::llm::http::AnswerLimits {
        crate::llm::http::AnswerLimits {
            max_tokens: self.max_tokens,
            max_answer_bytes: self.max_answer_bytes as usize,
        }
    }

    /// How feed clients connect.
    pub fn feed_options(&self) -> Result<crate::feed::client::FeedOptions, String> {
        Ok(crate::feed::client::FeedOptions {
            retries: self.feed_retries,
            format: self.feed_format,
            headers: self.feed_headers.clone(),
            tls: Some(crate::net::tls_client_config(self.feed_ca.as_deref())?),
            upstream_status: !self.no_upstream_status,
            upstream_results: self.upstream_results,
            connect_timeout: self.feed_connect_timeout,
            idle_timeout: self.feed_idle_timeout,
            ..Default::default()
        })
    }

    /// Where `serve` listens: `--api`, else 127.0.0.1:8787.
    pub fn serve_api_addr(&self) -> SocketAddr {
        self.api.unwrap_or(SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            DEFAULT_API_PORT,
        )))
    }

    /// The API's settings, listening on `addr`.
    pub fn api_config(&self, addr: SocketAddr) -> crate::api::ApiConfig {
        crate::api::ApiConfig {
            addr,
            token: self.api_token.clone(),
            read_token: self.api_read_token.clone(),
            logs: None,
            allowed_origins: self.api_allow_origins.clone(),
            allowed_hosts: self.api_allow_hosts.clone(),
            ws: crate::api::WsLimits {
                max_clients: self.api_max_ws_clients as usize,
                max_incoming: self.api_ws_max_frame as usize,
                timeout: self.api_ws_timeout,
            },
        }
    }

    /// The cluster settings, with `--redis`.
    pub fn cluster_config(&self) -> Option<crate::cluster::ClusterConfig> {
        let url = self.redis.clone()?;
        Some(crate::cluster::ClusterConfig {
            url,
            prefix: self.redis_prefix.clone(),
            lease_ttl: self.lease_ttl,
            instance: self
                .instance
                .clone()
                .unwrap_or_else(crate::cluster::default_instance),
        })
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            state: StateConfig {
                policy: [self.on_busy; crate::model::OPERATION_COUNT],
                op_timeout: self.op_timeout,
            },
            llm_concurrency: self.llm_concurrency as usize,
            incremental: self.summary_mode == SummaryMode::Incremental,
            min_interval: self.min_interval,
            automatic_ops: self.ops.clone(),
            sessions: crate::engine::SessionLimits {
                max_sessions: self.max_sessions as usize,
                idle_after: self.idle_after,
                forget_after: self.forget_after,
                remember_forgotten: self.remember_forgotten as usize,
                max_held_transcripts: self.max_held_transcripts as usize,
            },
        }
    }
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
        assert_eq!(args.engine_config().state.policy[0], Policy::Skip);
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
            "below the 400 kept for views"
        );
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
