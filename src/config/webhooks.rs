//! The config file's `[[webhooks]]`: the receivers of results, one table
//! each, checked with the line and key of every mistake.
//!
//! ```toml
//! [[webhooks]]
//! url = "https://hooks.example.com/inflight"   # http or https
//! secret_file = "hook-secret"                  # its first line signs every delivery
//! events = ["result", "stale", "session_end"]  # default: ["result"]
//! operations = ["summary", "action_items"]     # default: all
//! kinds = ["standup"]                          # default: every session
//! ```
//!
//! The secret lives in a file of its own (beside the config file when the
//! path is relative), read at start: a missing or empty one stops the
//! start, as a URL that does not parse does.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::file::line_of;
use crate::ops::{OpRegistry, well_formed};
use crate::webhooks::{Endpoint, EventKind};

/// One `[[webhooks]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    url: Spanned<String>,
    secret_file: Option<Spanned<String>>,
    events: Option<Spanned<Vec<String>>>,
    operations: Option<Spanned<Vec<String>>>,
    kinds: Option<Spanned<Vec<String>>>,
}

/// A mistake in one webhook: its line, the key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookError {
    pub line: usize,
    pub key: &'static str,
    pub why: String,
}

impl std::fmt::Display for WebhookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: webhooks.{}: {}", self.line, self.key, self.why)
    }
}

/// Reads the tables into endpoints, in the file's order. Secret files
/// are looked for in `dir` (the config file's folder); operations are
/// checked against `operations`.
pub(super) fn endpoints(
    text: &str,
    raw: Vec<RawWebhook>,
    dir: &Path,
    operations: &OpRegistry,
) -> Result<Vec<Endpoint>, WebhookError> {
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for table in raw {
        let at = |span: std::ops::Range<usize>| line_of(text, span.start);
        let line = at(table.url.span());
        let fail = |key, line, why: String| WebhookError { line, key, why };
        let url = reqwest::Url::parse(table.url.get_ref()).map_err(|e| {
            fail(
                "url",
                line,
                format!("{:?} is not a URL: {e}", table.url.get_ref()),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(fail(
                "url",
                line,
                format!("{url} is not an http:// or https:// URL with a host"),
            ));
        }
        if endpoints.iter().any(|e| e.url == url) {
            return Err(fail("url", line, format!("{url} is given twice")));
        }
        let Some(secret_file) = &table.secret_file else {
            return Err(fail(
                "secret_file",
                line,
                "every webhook is signed: name a file holding its secret".into(),
            ));
        };
        let secret_line = at(secret_file.span());
        let path = dir.join(secret_file.get_ref());
        let secret = std::fs::read_to_string(&path).map_err(|e| {
            fail(
                "secret_file",
                secret_line,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let secret = secret.lines().next().unwrap_or("").trim().to_string();
        if secret.is_empty() {
            return Err(fail(
                "secret_file",
                secret_line,
                format!("{} holds no secret on its first line", path.display()),
            ));
        }
        let events = match &table.events {
            None => vec![EventKind::Result],
            Some(events) => {
                let line = at(events.span());
                let mut kinds = Vec::new();
                for name in events.get_ref() {
                    let kind = EventKind::parse(name).ok_or_else(|| {
                        fail(
                            "events",
                            line,
                            format!("{name:?} is no event; known: result, stale, session_end"),
                        )
                    })?;
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                if kinds.is_empty() {
                    return Err(fail(
                        "events",
                        line,
                        "no event: it would get nothing".into(),
                    ));
                }
                kinds
            }
        };
        let mut ops = Vec::new();
        if let Some(names) = &table.operations {
            let line = at(names.span());
            for name in names.get_ref() {
                let op = operations.parse(name).ok_or_else(|| {
                    fail(
                        "operations",
                        line,
                        format!(
                            "{name:?} is not a defined operation; defined: {}",
                            operations.names().join(", ")
                        ),
                    )
                })?;
                ops.push(op);
            }
        }
        let mut kinds = Vec::new();
        if let Some(names) = &table.kinds {
            let line = at(names.span());
            for name in names.get_ref() {
                if !well_formed(name) {
                    return Err(fail(
                        "kinds",
                        line,
                        format!("{name:?} is no session kind: a-z, 0-9 and _, at most 32"),
                    ));
                }
                kinds.push(name.clone());
            }
        }
        endpoints.push(Endpoint {
            url,
            secret: Arc::from(secret.into_bytes()),
            events,
            operations: ops,
            kinds,
        });
    }
    Ok(endpoints)
}
