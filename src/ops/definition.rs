//! [`OpDef`]: what one operation is. The two built-in definitions (the
//! rolling summary and the mind map) live here; the config file's
//! `[[operations]]` tables become more of them (`config/operations.rs`).

use std::time::Duration;

use super::{Operation, OutputKind};
use crate::state::Policy;

/// When an operation runs by itself (an operator can trigger any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// On every new final transcript, and once more at the session's end.
    #[default]
    Transcripts,
    /// Only once the session has ended, over everything it said.
    End,
    /// Only when triggered (the dashboard's key, the API).
    Manual,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::Transcripts => "transcripts",
            When::End => "end",
            When::Manual => "manual",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [When::Transcripts, When::End, When::Manual]
            .into_iter()
            .find(|w| w.as_str() == raw)
    }
}

/// An operation's own prompt templates. `{transcript}` is what was said
/// (in `full`: everything; in `incremental`: since the previous result),
/// `{previous}` the previous result as the output kind writes it back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpPrompts {
    pub system: String,
    /// The first run, or `--summary-mode full`.
    pub full: String,
    /// Later runs: the previous result plus what was said since.
    pub incremental: String,
}

/// One operation: how it is named, shown, triggered, asked and read.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpDef {
    /// Its wire name: API paths, status fields, metric labels.
    pub op: Operation,
    /// Its dashboard column heading.
    pub label: String,
    /// The dashboard key that triggers it.
    pub key: Option<char>,
    pub output: OutputKind,
    /// For `json` output: the JSON Schema every result satisfies.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub schema: Option<serde_json::Value>,
    pub when: When,
    /// Its own `--on-busy`; `None` follows the flag.
    pub on_busy: Option<Policy>,
    /// Its own `--min-interval`; `None` follows the flag.
    #[serde(with = "optional_duration", default)]
    pub min_interval: Option<Duration>,
    /// Its own prompts; `None` for the built-in operations, whose prompts
    /// are the config file's `[prompts]` table.
    #[serde(skip)]
    pub prompts: Option<OpPrompts>,
    /// The session kinds it runs for (a feed's `kind`); empty: every session.
    #[serde(default)]
    pub kinds: Vec<String>,
}

impl OpDef {
    /// The rolling summary.
    pub fn summary() -> Self {
        Self::built_in(Operation::SUMMARY, "Summary", '1', OutputKind::Text)
    }

    /// The mind map.
    pub fn mind_map() -> Self {
        Self::built_in(Operation::MIND_MAP, "Mind map", '2', OutputKind::Tree)
    }

    fn built_in(op: Operation, label: &str, key: char, output: OutputKind) -> Self {
        Self {
            key: Some(key),
            ..Self::new(op, label, output)
        }
    }

    /// An operation with everything else as by default: no key, no
    /// schema, on transcripts, the flags' on_busy and min_interval, no
    /// prompts of its own, every session kind.
    pub fn new(op: Operation, label: &str, output: OutputKind) -> Self {
        Self {
            op,
            label: label.into(),
            key: None,
            output,
            schema: None,
            when: When::Transcripts,
            on_busy: None,
            min_interval: None,
            prompts: None,
            kinds: Vec::new(),
        }
    }

    /// Whether it runs by itself for a session of `kind`.
    pub fn runs_for(&self, kind: Option<&str>) -> bool {
        self.kinds.is_empty() || kind.is_some_and(|k| self.kinds.iter().any(|w| w == k))
    }
}

mod optional_duration {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let secs: Option<f64> = serde::Deserialize::deserialize(d)?;
        Ok(secs
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64))
    }
}
