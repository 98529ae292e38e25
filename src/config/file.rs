//! The config file (`--config FILE`, TOML): one table per area, each key a
//! setting that a flag also sets, plus the `[prompts]` templates.
//!
//! [`KEYS`] is the one list that ties a file key to its flag; a test checks
//! that every engine flag has its key. A file value becomes the flag's own
//! text (`--op-timeout=90s`) and goes through the flag's parser, so the file,
//! the environment and the command line accept exactly the same values.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::llm::prompts::Prompts;

/// How a file value turns into a flag's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string: a URL, a name, a duration (`"90s"`), a path.
    Text,
    /// A whole number.
    Int,
    /// A number, whole or not.
    Float,
    /// `true` gives the switch.
    Switch,
    /// `false` gives the switch: `upstream_status = false` is `--no-upstream-status`.
    NotSwitch,
    /// A list of strings, one flag each.
    List,
    /// A table of header names to values, each `--feed-header='Name: value'`.
    Headers,
}

/// One file key and the flag it sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub section: &'static str,
    pub name: &'static str,
    /// The flag's id (its field name in `EngineArgs`).
    pub arg: &'static str,
    pub kind: Kind,
}

const fn key(section: &'static str, name: &'static str, arg: &'static str, kind: Kind) -> Key {
    Key {
        section,
        name,
        arg,
        kind,
    }
}

/// Every setting the file may hold, in the order `config show` prints them.
pub const KEYS: &[Key] = &[
    key("feed", "urls", "feeds", Kind::List),
    key("feed", "format", "feed_format", Kind::Text),
    key("feed", "headers", "feed_headers", Kind::Headers),
    key("feed", "ca", "feed_ca", Kind::Text),
    key(
        "feed",
        "upstream_status",
        "no_upstream_status",
        Kind::NotSwitch,
    ),
    key("feed", "upstream_results", "upstream_results", Kind::Switch),
    key(
        "feed",
        "connect_timeout",
        "feed_connect_timeout",
        Kind::Text,
    ),
    key("feed", "idle_timeout", "feed_idle_timeout", Kind::Text),
    key("feed", "retries", "feed_retries", Kind::Int),
    key("llm", "backend", "llm", Kind::Text),
    key("llm", "model", "model", Kind::Text),
    key("llm", "url", "llm_url", Kind::Text),
    key("llm", "api_key_env", "llm_api_key_env", Kind::Text),
    key("llm", "max_tokens", "max_tokens", Kind::Int),
    key("llm", "max_answer_bytes", "max_answer_bytes", Kind::Int),
    key("llm", "context", "llm_context", Kind::Int),
    key("llm", "concurrency", "llm_concurrency", Kind::Int),
    key("llm", "simulate_latency", "simulate_latency", Kind::Text),
    key("runs", "ops", "ops", Kind::List),
    key("runs", "on_busy", "on_busy", Kind::Text),
    key("runs", "timeout", "op_timeout", Kind::Text),
    key("runs", "min_interval", "min_interval", Kind::Text),
    key("runs", "retries", "run_retries", Kind::Int),
    key("runs", "retry_backoff", "retry_backoff", Kind::Text),
    key("runs", "summary_mode", "summary_mode", Kind::Text),
    key("runs", "drain_timeout", "drain_timeout", Kind::Text),
    key("sessions", "max", "max_sessions", Kind::Int),
    key("sessions", "idle_after", "idle_after", Kind::Text),
    key("sessions", "forget_after", "forget_after", Kind::Text),
    key(
        "sessions",
        "remember_forgotten",
        "remember_forgotten",
        Kind::Int,
    ),
    key(
        "sessions",
        "max_held_transcripts",
        "max_held_transcripts",
        Kind::Int,
    ),
    key(
        "sessions",
        "keep_transcripts",
        "keep_transcripts",
        Kind::Int,
    ),
    key(
        "budgets",
        "session_tokens",
        "budget_session_tokens",
        Kind::Int,
    ),
    key(
        "budgets",
        "session_cost",
        "budget_session_cost",
        Kind::Float,
    ),
    key(
        "budgets",
        "feed_tokens_per_hour",
        "budget_feed_tokens_per_hour",
        Kind::Int,
    ),
    key(
        "budgets",
        "feed_cost_per_hour",
        "budget_feed_cost_per_hour",
        Kind::Float,
    ),
    key(
        "budgets",
        "tokens_per_hour",
        "budget_tokens_per_hour",
        Kind::Int,
    ),
    key(
        "budgets",
        "cost_per_hour",
        "budget_cost_per_hour",
        Kind::Float,
    ),
    key("record", "path", "record", Kind::Text),
    key("record", "max_size", "record_max_size", Kind::Text),
    key("record", "keep", "record_keep", Kind::Int),
    key("record", "max_age", "record_max_age", Kind::Text),
    key("api", "listen", "api", Kind::Text),
    key("api", "token_file", "api_token_file", Kind::Text),
    key("api", "read_token_file", "api_read_token_file", Kind::Text),
    key(
        "api",
        "ingest_token_file",
        "api_ingest_token_file",
        Kind::Text,
    ),
    key("api", "allow_origins", "api_allow_origins", Kind::List),
    key("api", "allow_hosts", "api_allow_hosts", Kind::List),
    key("api", "max_ws_clients", "api_max_ws_clients", Kind::Int),
    key("api", "ws_max_frame", "api_ws_max_frame", Kind::Int),
    key(
        "api",
        "max_ingest_sockets",
        "api_max_ingest_sockets",
        Kind::Int,
    ),
    key("api", "max_batch", "api_max_batch", Kind::Int),
    key("delivery", "max_age", "webhook_max_age", Kind::Text),
    key("delivery", "max_pending", "webhook_max_pending", Kind::Int),
    key("delivery", "timeout", "webhook_timeout", Kind::Text),
    key("api", "ws_timeout", "api_ws_timeout", Kind::Text),
    key("database", "path", "db", Kind::Text),
    key("database", "enabled", "no_db", Kind::NotSwitch),
    key("database", "retain", "retain", Kind::Text),
    key("cluster", "redis", "redis", Kind::Text),
    key("cluster", "prefix", "redis_prefix", Kind::Text),
    key("cluster", "lease_ttl", "lease_ttl", Kind::Text),
    key("cluster", "instance", "instance", Kind::Text),
    key("log", "format", "log_format", Kind::Text),
    key("log", "level", "log_level", Kind::Text),
    key("demo", "speed", "demo_speed", Kind::Float),
];

/// Flags the file does not set: the file itself.
pub const NOT_IN_FILE: &[&str] = &["config"];

/// A setting read from the file: which key, on which line, as flag text.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSetting {
    pub key: Key,
    pub line: usize,
    /// The values as the flag would be given them; empty for a switch
    /// left off.
    pub values: Vec<String>,
}

/// What a config file holds.
#[derive(Debug, Clone)]
pub struct FileConfig {
    pub prompts: Prompts,
    pub settings: Vec<FileSetting>,
    /// The built-in operations and the file's `[[operations]]`.
    pub operations: crate::ops::OpRegistry,
    /// The file's `[[webhooks]]`, their secrets read.
    pub webhooks: Vec<crate::webhooks::Endpoint>,
    /// The file's `[[prices]]`.
    pub prices: crate::spend::Prices,
}

type Section = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// The file as TOML: unknown tables are refused by serde with their line.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Raw {
    prompts: Prompts,
    operations: Vec<super::operations::RawOperation>,
    webhooks: Vec<super::webhooks::RawWebhook>,
    prices: Vec<super::prices::RawPrice>,
    feed: Section,
    llm: Section,
    runs: Section,
    sessions: Section,
    budgets: Section,
    record: Section,
    api: Section,
    database: Section,
    cluster: Section,
    log: Section,
    demo: Section,
    delivery: Section,
}

/// Why a config file was refused: its kind, and where (the line, the key).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The same error, in the file at `path`.
    #[error("{}:{error}", path.display())]
    In {
        path: PathBuf,
        #[source]
        error: Box<FileError>,
    },
    /// Not TOML, or a table this build does not know.
    #[error("{line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("{line}: unknown key `{key}` in [{section}]; known keys: {}", known.join(", "))]
    UnknownKey {
        line: usize,
        section: &'static str,
        key: String,
        known: Vec<&'static str>,
    },
    /// A token written in the file itself.
    #[error(
        "{line}: unknown key `{key}` in [api]; a token does not belong in a config file: \
         put it in a file of its own and name that file with `{key}_file`"
    )]
    Secret { line: usize, key: String },
    /// A mistake in a `[[webhooks]]` table.
    #[error("{0}")]
    Webhook(super::webhooks::WebhookError),
    /// A mistake in a `[[prices]]` table.
    #[error("{0}")]
    Price(super::prices::PriceTableError),
    /// A mistake in an `[[operations]]` table.
    #[error("{0}")]
    Operation(super::operations::OperationError),
    #[error("{line}: {section}.{key}: {why}")]
    BadValue {
        line: usize,
        section: &'static str,
        key: &'static str,
        why: String,
    },
}

impl FileError {
    /// The error itself, wherever the file was.
    pub fn kind(&self) -> &FileError {
        match self {
            FileError::In { error, .. } => error.kind(),
            other => other,
        }
    }
}

impl FileConfig {
    /// Reads and checks `path`. Errors name the file, the line and the key.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse_in(&text, dir).map_err(|error| FileError::In {
            path: path.to_path_buf(),
            error: Box::new(error),
        })
    }

    /// Parses a file's text; an error says its line. Schema files are
    /// looked for in the current folder.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        Self::parse_in(text, Path::new("."))
    }

    /// Parses a file's text whose schema files are in `dir`.
    pub fn parse_in(text: &str, dir: &Path) -> Result<Self, FileError> {
        let raw: Raw = toml::from_str(text).map_err(|e| FileError::Syntax {
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(1),
            message: e.message().to_string(),
        })?;
        let sections = [
            ("feed", raw.feed),
            ("llm", raw.llm),
            ("runs", raw.runs),
            ("sessions", raw.sessions),
            ("budgets", raw.budgets),
            ("record", raw.record),
            ("api", raw.api),
            ("database", raw.database),
            ("cluster", raw.cluster),
            ("log", raw.log),
            ("demo", raw.demo),
            ("delivery", raw.delivery),
        ];
        let mut settings = Vec::new();
        for (section, entries) in sections {
            for (name, value) in entries {
                let line = line_of(text, name.span().start);
                let key = find(section, name.get_ref())
                    .ok_or_else(|| unknown(line, section, name.get_ref()))?;
                let values =
                    flag_values(key, value.get_ref()).map_err(|why| FileError::BadValue {
                        line,
                        section: key.section,
                        key: key.name,
                        why,
                    })?;
                settings.push(FileSetting { key, line, values });
            }
        }
        settings.sort_by_key(|s| s.line);
        let operations =
            super::operations::registry(text, raw.operations, dir).map_err(FileError::Operation)?;
        let webhooks = super::webhooks::endpoints(text, raw.webhooks, dir, &operations)
            .map_err(FileError::Webhook)?;
        let prices = super::prices::prices(text, raw.prices).map_err(FileError::Price)?;
        Ok(Self {
            prompts: raw.prompts,
            settings,
            operations,
            webhooks,
            prices,
        })
    }
}

impl FileSetting {
    /// The setting as command-line words: `--op-timeout=90s`, `--no-db`.
    pub fn words(&self, long: &str) -> Vec<OsString> {
        match self.key.kind {
            Kind::Switch | Kind::NotSwitch => self
                .values
                .iter()
                .map(|_| OsString::from(format!("--{long}")))
                .collect(),
            _ => self
                .values
                .iter()
                .map(|v| OsString::from(format!("--{long}={v}")))
                .collect(),
        }
    }
}

fn find(section: &str, name: &str) -> Option<Key> {
    KEYS.iter()
        .find(|k| k.section == section && k.name == name)
        .copied()
}

/// An unknown key: with the keys of that table, or, for a token, where
/// tokens go instead.
fn unknown(line: usize, section: &'static str, name: &str) -> FileError {
    if section == "api" && matches!(name, "token" | "read_token" | "ingest_token") {
        return FileError::Secret {
            line,
            key: name.to_string(),
        };
    }
    FileError::UnknownKey {
        line,
        section,
        key: name.to_string(),
        known: KEYS
            .iter()
            .filter(|k| k.section == section)
            .map(|k| k.name)
            .collect(),
    }
}

/// The flag text for a file value, checked against the key's kind.
fn flag_values(key: Key, value: &toml::Value) -> Result<Vec<String>, String> {
    use toml::Value;
    let expected = |what: &str| format!("expected {what}, found {}", value.type_str());
    Ok(match (key.kind, value) {
        (Kind::Text, Value::String(s)) => vec![s.clone()],
        (Kind::Text, _) => return Err(expected("a string")),
        (Kind::Int, Value::Integer(n)) => vec![n.to_string()],
        (Kind::Int, _) => return Err(expected("a whole number")),
        (Kind::Float, Value::Integer(n)) => vec![n.to_string()],
        (Kind::Float, Value::Float(x)) => vec![x.to_string()],
        (Kind::Float, _) => return Err(expected("a number")),
        (Kind::Switch, Value::Boolean(on)) => on.then(String::new).into_iter().collect(),
        (Kind::NotSwitch, Value::Boolean(on)) => (!on).then(String::new).into_iter().collect(),
        (Kind::Switch | Kind::NotSwitch, _) => return Err(expected("true or false")),
        (Kind::List, Value::String(s)) => vec![s.clone()],
        (Kind::List, Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "expected a list of strings, found a {} in it",
                    other.type_str()
                )),
            })
            .collect::<Result<_, _>>()?,
        (Kind::List, _) => return Err(expected("a list of strings")),
        (Kind::Headers, Value::Table(headers)) => headers
            .iter()
            .map(|(name, v)| match v {
                Value::String(s) => Ok(format!("{name}: {s}")),
                other => Err(format!(
                    "header {name}: expected a string, found {}",
                    other.type_str()
                )),
            })
            .collect::<Result<_, _>>()?,
        (Kind::Headers, _) => return Err(expected("a table of header names to values")),
    })
}

/// The 1-based line of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_flag_text_with_their_lines() {
        let file = FileConfig::parse(
            "[llm]\nbackend = \"openai\"\nconcurrency = 2\n\n[feed]\nurls = [\"ws://a/\", \"ws://b/\"]\n\
upstream_status = false\nheaders = { Authorization = \"Bearer x\" }\n[database]\nenabled = true\n",
        )
        .unwrap();
        let got: Vec<(&str, usize, Vec<String>)> = file
            .settings
            .iter()
            .map(|s| (s.key.arg, s.line, s.values.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("llm", 2, vec!["openai".to_string()]),
                ("llm_concurrency", 3, vec!["2".into()]),
                ("feeds", 6, vec!["ws://a/".into(), "ws://b/".into()]),
                ("no_upstream_status", 7, vec![String::new()]),
                ("feed_headers", 8, vec!["Authorization: Bearer x".into()]),
                ("no_db", 10, vec![]),
            ]
        );
        assert_eq!(
            file.settings[3].words("no-upstream-status"),
            [OsString::from("--no-upstream-status")]
        );
        assert_eq!(
            file.settings[1].words("llm-concurrency"),
            [OsString::from("--llm-concurrency=2")]
        );
    }

    #[test]
    fn every_engine_flag_has_a_file_key() {
        use clap::CommandFactory;
        let mut cli = crate::config::Cli::command();
        cli.build();
        let serve = cli.find_subcommand("serve").expect("serve");
        // The token itself stays out of files: `token_file` names a file.
        let not_keys = [
            NOT_IN_FILE,
            &["help", "api_token", "api_read_token", "api_ingest_token"],
        ]
        .concat();
        let mut missing = Vec::new();
        for arg in serve.get_arguments() {
            let id = arg.get_id().as_str();
            if !not_keys.contains(&id) && !KEYS.iter().any(|k| k.arg == id) {
                missing.push(id.to_string());
            }
        }
        assert!(missing.is_empty(), "flags without a file key: {missing:?}");
        for key in KEYS {
            assert!(
                serve.get_arguments().any(|a| a.get_id() == key.arg),
                "{}.{} names no flag",
                key.section,
                key.name
            );
        }
        assert!(KEYS.len() > 35);
    }

    #[test]
    fn unknown_keys_and_tables_are_refused_with_their_line() {
        let err = FileConfig::parse("[llm]\nmodel = \"m\"\nmodle = \"m\"\n").unwrap_err();
        assert!(
            matches!(&err, FileError::UnknownKey { line: 3, section: "llm", key, known }
                if key == "modle" && known.starts_with(&["backend", "model"])),
            "{err:?}"
        );
        // What the operator reads.
        assert!(
            err.to_string()
                .starts_with("3: unknown key `modle` in [llm]; known keys: backend, model"),
            "{err}"
        );
        let err = FileConfig::parse("\n[lmm]\nmodel = \"m\"\n").unwrap_err();
        assert!(
            matches!(&err, FileError::Syntax { line: 2, message } if message.contains("lmm")),
            "{err:?}"
        );
        let err = FileConfig::parse("[prompts]\nsumary_system = \"x\"\n").unwrap_err();
        assert!(
            matches!(&err, FileError::Syntax { line: 2, message } if message.contains("sumary_system")),
            "{err:?}"
        );
        for name in ["token", "read_token", "ingest_token"] {
            let err = FileConfig::parse(&format!("[api]\n{name} = \"secret\"\n")).unwrap_err();
            assert!(
                matches!(&err, FileError::Secret { line: 2, key } if key == name),
                "{err:?}"
            );
        }
        let err = FileConfig::parse("[llm]\ntoken = \"x\"\n").unwrap_err();
        assert!(
            matches!(err, FileError::UnknownKey { section: "llm", .. }),
            "only [api] tokens get the hint: {err:?}"
        );
    }

    #[test]
    fn values_of_the_wrong_kind_are_refused_with_their_key() {
        let err = FileConfig::parse("[llm]\nconcurrency = \"2\"\n").unwrap_err();
        assert!(
            matches!(
                &err,
                FileError::BadValue {
                    line: 2,
                    section: "llm",
                    key: "concurrency",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "2: llm.concurrency: expected a whole number, found string"
        );
        let err = FileConfig::parse("[feed]\n\nurls = [1]\n").unwrap_err();
        assert!(
            matches!(
                err,
                FileError::BadValue {
                    line: 3,
                    key: "urls",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = FileConfig::parse("[database]\nenabled = \"no\"\n").unwrap_err();
        assert!(
            matches!(&err, FileError::BadValue { key: "enabled", why, .. } if why.contains("true or false")),
            "{err:?}"
        );
    }

    #[test]
    fn a_file_error_names_the_file_and_keeps_its_kind() {
        let dir = std::env::temp_dir().join(format!("inflight-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[llm]\nmodle = 1\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err();
        assert!(
            matches!(err.kind(), FileError::UnknownKey { line: 2, .. }),
            "{err:?}"
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "the chain is kept"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{}:2: unknown key", path.display()))
        );
        let err = FileConfig::load(&dir.join("missing.toml")).unwrap_err();
        assert!(matches!(err, FileError::Unreadable { .. }), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
