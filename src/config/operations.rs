//! The config file's `[[operations]]`: the user's own LLM work, one table
//! each, read into definitions ([`OpDef`]) and checked with the line and
//! key of every mistake.
//!
//! ```toml
//! [[operations]]
//! name = "action_items"    # the wire name: [a-z][a-z0-9_]{0,31}
//! label = "Actions"        # the dashboard column
//! key = "3"                # the trigger key
//! output = "json"          # text | tree | json
//! schema = "actions.json"  # json only: a file (beside the config file), JSON text, or a table
//! when = "transcripts"     # transcripts | end | manual
//! on_busy = "coalesce"     # or skip
//! min_interval = "30s"
//! system = "…"             # prompts: each optional, the output kind gives defaults
//! full = "… {transcript} …"
//! incremental = "… {previous} … {transcript} …"
//! kinds = ["standup"]      # only sessions the feed gives this kind
//! ```
//!
//! A table named like a built-in operation (`summary`, `mind_map`)
//! redefines it: the keys it gives replace the built-in's, the rest stay.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::ops::{self, OpDef, OpPrompts, OpRegistry, Operation, OutputKind, When};
use crate::state::Policy;

/// Names that would collide with other fields where operations are listed
/// by name (the session JSON, the status JSON's `any_processing`).
const RESERVED_NAMES: &[&str] = &[
    "any",
    "session_id",
    "feed",
    "transcripts",
    "ended",
    "operations",
    "attention",
    "recent_transcripts",
    "partial",
    "rejected_answers",
    "last_transcript_age_seconds",
    "lost_transcripts",
];

/// One `[[operations]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOperation {
    name: Spanned<String>,
    label: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    output: Option<Spanned<String>>,
    schema: Option<Spanned<toml::Value>>,
    when: Option<Spanned<String>>,
    on_busy: Option<Spanned<String>>,
    min_interval: Option<Spanned<String>>,
    system: Option<Spanned<String>>,
    full: Option<Spanned<String>>,
    incremental: Option<Spanned<String>>,
    kinds: Option<Spanned<Vec<String>>>,
}

/// A mistake in one operation: its line, the key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationError {
    pub line: usize,
    /// The operation's name, as far as it was read.
    pub name: String,
    pub key: &'static str,
    pub why: String,
}

impl std::fmt::Display for OperationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: operations.{}.{}: {}",
            self.line, self.name, self.key, self.why
        )
    }
}

/// Reads the tables into the registry: the built-in operations, redefined
/// where a table names one, then the others in the file's order. `dir` is
/// where schema files are looked for (the config file's folder).
pub(super) fn registry(
    text: &str,
    raw: Vec<RawOperation>,
    dir: &Path,
) -> Result<OpRegistry, OperationError> {
    let mut defs = vec![OpDef::summary(), OpDef::mind_map()];
    let mut seen: Vec<(String, usize)> = Vec::new();
    for table in raw {
        let line = line_of(text, table.name.span().start);
        let name = table.name.get_ref().clone();
        let fail = |key: &'static str, at: usize, why: String| OperationError {
            line: at,
            name: name.clone(),
            key,
            why,
        };
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
            return Err(fail(
                "name",
                line,
                format!("defined twice (first on line {first})"),
            ));
        }
        if RESERVED_NAMES.contains(&name.as_str()) {
            return Err(fail(
                "name",
                line,
                format!("{name:?} is taken by a field of the API; choose another name"),
            ));
        }
        let op = Operation::named(&name).map_err(|e| fail("name", line, e.to_string()))?;
        seen.push((name.clone(), line));
        let base = defs.iter().find(|d| d.op == op).cloned();
        let mut def = base
            .clone()
            .unwrap_or_else(|| OpDef::new(op, &default_label(&name), OutputKind::Text));
        if let Some(label) = &table.label {
            let label = label.get_ref().trim();
            if label.is_empty() || label.chars().count() > 24 || label.chars().any(char::is_control)
            {
                return Err(fail(
                    "label",
                    line_at(text, table.label.as_ref().unwrap_or(&table.name)),
                    "a label is 1 to 24 printable characters".into(),
                ));
            }
            def.label = label.to_string();
        }
        if let Some(key) = &table.key {
            let mut chars = key.get_ref().chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return Err(fail(
                    "key",
                    line_at(text, key),
                    "a key is one character".into(),
                ));
            };
            let taken = crate::tui::keymap::taken_chars();
            if taken.contains(&c) || c.is_control() {
                let taken: String = taken.iter().collect();
                return Err(fail(
                    "key",
                    line_at(text, key),
                    format!("{c:?} is one of the dashboard's own keys ({taken:?})"),
                ));
            }
            def.key = Some(c);
        }
        if let Some(output) = &table.output {
            def.output = OutputKind::parse(output.get_ref()).ok_or_else(|| {
                fail(
                    "output",
                    line_at(text, output),
                    format!(
                        "unknown output {:?}; known: text, tree, json",
                        output.get_ref()
                    ),
                )
            })?;
        } else if table.schema.is_some() && base.is_none() {
            def.output = OutputKind::Json;
        }
        match (&table.schema, def.output) {
            (Some(schema), OutputKind::Json) => {
                let value = read_schema(schema.get_ref(), dir)
                    .map_err(|why| fail("schema", line_at(text, schema), why))?;
                ops::output::json::check_schema(&value).map_err(|why| {
                    fail(
                        "schema",
                        line_at(text, schema),
                        format!("not a JSON Schema: {why}"),
                    )
                })?;
                def.schema = Some(value);
            }
            (Some(schema), _) => {
                return Err(fail(
                    "schema",
                    line_at(text, schema),
                    "a schema is for output = \"json\"".into(),
                ));
            }
            (None, _) => {}
        }
        if let Some(when) = &table.when {
            def.when = When::parse(when.get_ref()).ok_or_else(|| {
                fail(
                    "when",
                    line_at(text, when),
                    format!(
                        "unknown {:?}; known: transcripts, end, manual",
                        when.get_ref()
                    ),
                )
            })?;
        }
        if let Some(on_busy) = &table.on_busy {
            def.on_busy = Some(match on_busy.get_ref().as_str() {
                "coalesce" => Policy::Coalesce,
                "skip" => Policy::Skip,
                other => {
                    return Err(fail(
                        "on_busy",
                        line_at(text, on_busy),
                        format!("unknown {other:?}; known: coalesce, skip"),
                    ));
                }
            });
        }
        if let Some(interval) = &table.min_interval {
            def.min_interval = Some(
                humantime::parse_duration(interval.get_ref())
                    .map_err(|e| fail("min_interval", line_at(text, interval), e.to_string()))?,
            );
        }
        if let Some(kinds) = &table.kinds {
            if let Some(bad) = kinds.get_ref().iter().find(|k| !ops::well_formed(k)) {
                return Err(fail(
                    "kinds",
                    line_at(text, kinds),
                    format!("{bad:?} is no session kind: a-z, 0-9 and _, starting with a letter"),
                ));
            }
            def.kinds = kinds.get_ref().clone();
        }
        def.prompts = prompts(text, &table, &def, base.as_ref(), &fail)?;
        match defs.iter_mut().find(|d| d.op == op) {
            Some(slot) => *slot = def,
            None => defs.push(def),
        }
    }
    let mut keys: Vec<(char, Operation)> = Vec::new();
    for def in &defs {
        if let Some(key) = def.key {
            if let Some((_, other)) = keys.iter().find(|(k, _)| *k == key) {
                let line = seen
                    .iter()
                    .find(|(n, _)| n == def.op.as_str())
                    .map_or(1, |(_, l)| *l);
                return Err(OperationError {
                    line,
                    name: def.op.as_str().into(),
                    key: "key",
                    why: format!("{key:?} already triggers {other}"),
                });
            }
            keys.push((key, def.op));
        }
    }
    Ok(OpRegistry::new(defs))
}

/// The prompts of a definition: the table's, each one it leaves out taken
/// from what it redefines or from its output kind's defaults; `None` for a
/// built-in operation given none (its prompts are the `[prompts]` table).
fn prompts(
    text: &str,
    table: &RawOperation,
    def: &OpDef,
    base: Option<&OpDef>,
    fail: &dyn Fn(&'static str, usize, String) -> OperationError,
) -> Result<Option<OpPrompts>, OperationError> {
    let given = [&table.system, &table.full, &table.incremental];
    if given.iter().all(|p| p.is_none()) {
        return Ok(match base {
            Some(base) if base.output == def.output => base.prompts.clone(),
            _ => Some(OutputKind::default_prompts(def)),
        });
    }
    let defaults = OutputKind::default_prompts(def);
    let pick = |given: &Option<Spanned<String>>, default: String| {
        given.as_ref().map_or(default, |p| p.get_ref().clone())
    };
    if let Some(full) = &table.full
        && !full.get_ref().contains("{transcript}")
    {
        return Err(fail(
            "full",
            line_at(text, full),
            "the prompt needs {transcript}, where what was said goes".into(),
        ));
    }
    if let Some(incremental) = &table.incremental {
        let template = incremental.get_ref();
        if !template.contains("{transcript}") {
            return Err(fail(
                "incremental",
                line_at(text, incremental),
                "the prompt needs {transcript}, where what was said since goes".into(),
            ));
        }
        if !crate::llm::prompts::PREVIOUS_PLACEHOLDERS
            .iter()
            .any(|p| template.contains(p))
        {
            return Err(fail(
                "incremental",
                line_at(text, incremental),
                "the prompt needs {previous}, where the previous result goes".into(),
            ));
        }
    }
    Ok(Some(OpPrompts {
        system: pick(&table.system, defaults.system),
        full: pick(&table.full, defaults.full),
        incremental: pick(&table.incremental, defaults.incremental),
    }))
}

/// `action_items` → `Action items`.
fn default_label(name: &str) -> String {
    let words = name.replace('_', " ");
    let mut chars = words.chars();
    let label: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    label.chars().take(24).collect()
}

/// A schema as written: a table (TOML for the JSON), JSON text, or the
/// path of a JSON file (relative to the config file's folder).
fn read_schema(value: &toml::Value, dir: &Path) -> Result<serde_json::Value, String> {
    match value {
        toml::Value::Table(_) => serde_json::to_value(value).map_err(|e| e.to_string()),
        toml::Value::String(s) if s.trim_start().starts_with('{') => {
            serde_json::from_str(s).map_err(|e| format!("the schema's JSON does not parse: {e}"))
        }
        toml::Value::String(s) => {
            let path = dir.join(s);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("{} does not parse as JSON: {e}", path.display()))
        }
        other => Err(format!(
            "expected a file name, JSON text or a table, found {}",
            other.type_str()
        )),
    }
}

fn line_at<T>(text: &str, spanned: &Spanned<T>) -> usize {
    line_of(text, spanned.span().start)
}

use super::file::line_of;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::{FileConfig, FileError};

    fn registry_of(text: &str) -> Result<OpRegistry, OperationError> {
        match FileConfig::parse(text) {
            Ok(file) => Ok(file.operations),
            Err(FileError::Operation(e)) => Err(e),
            Err(other) => panic!("not an operation error: {other}"),
        }
    }

    fn error_of(text: &str) -> (usize, &'static str, String) {
        let e = registry_of(text).unwrap_err();
        (e.line, e.key, e.why)
    }

    #[test]
    fn an_inline_schema_keeps_its_fields_in_the_order_written() {
        let registry = registry_of(
            "[[operations]]\nname = \"actions\"\n\
             schema = { type = \"object\", properties = { task = { type = \"string\" }, owner = { type = \"string\" }, due = { type = \"string\" } } }\n",
        )
        .unwrap();
        let def = registry.def(Operation::named("actions").unwrap()).unwrap();
        let schema = def.schema.as_ref().unwrap();
        let fields: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(fields, ["task", "owner", "due"]);
    }

    #[test]
    fn operations_follow_the_built_in_ones_in_the_files_order_with_defaults() {
        let registry = registry_of(
            "[[operations]]\nname = \"decisions\"\nwhen = \"end\"\nkey = \"4\"\n\n\
             [[operations]]\nname = \"action_items\"\nlabel = \"Actions\"\n\
             schema = { type = \"object\", properties = { items = { type = \"array\", description = \"the actions\" } } }\n\
             on_busy = \"skip\"\nmin_interval = \"30s\"\nkinds = [\"standup\"]\n",
        )
        .unwrap();
        assert_eq!(
            registry.names(),
            ["summary", "mind_map", "decisions", "action_items"]
        );
        let decisions = registry
            .def(Operation::named("decisions").unwrap())
            .unwrap();
        assert_eq!(decisions.label, "Decisions", "from the name");
        assert_eq!(decisions.output, OutputKind::Text);
        assert_eq!(decisions.when, When::End);
        assert_eq!(decisions.key, Some('4'));
        let prompts = decisions.prompts.as_ref().expect("defaults from its kind");
        assert!(prompts.system.contains("decisions"), "{}", prompts.system);
        let actions = registry
            .def(Operation::named("action_items").unwrap())
            .unwrap();
        assert_eq!(actions.output, OutputKind::Json, "a schema makes it json");
        assert_eq!(actions.on_busy, Some(Policy::Skip));
        assert_eq!(
            actions.min_interval,
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(actions.kinds, ["standup"]);
        assert!(actions.runs_for(Some("standup")) && !actions.runs_for(Some("sales")));
        assert!(!actions.runs_for(None));
        let system = &actions.prompts.as_ref().unwrap().system;
        assert!(system.contains("items: the actions"), "{system}");
    }

    #[test]
    fn a_table_named_like_a_built_in_redefines_only_what_it_gives() {
        let registry = registry_of(
            "[[operations]]\nname = \"summary\"\nlabel = \"Notes\"\nmin_interval = \"10s\"\n",
        )
        .unwrap();
        assert_eq!(registry.names(), ["summary", "mind_map"]);
        let summary = registry.def(Operation::SUMMARY).unwrap();
        assert_eq!(summary.label, "Notes");
        assert_eq!(summary.key, Some('1'), "kept");
        assert_eq!(summary.output, OutputKind::Text, "kept");
        assert_eq!(summary.prompts, None, "still the [prompts] table's");
        let own =
            registry_of("[[operations]]\nname = \"summary\"\nsystem = \"Be brief.\"\n").unwrap();
        let prompts = own
            .def(Operation::SUMMARY)
            .unwrap()
            .prompts
            .clone()
            .unwrap();
        assert_eq!(prompts.system, "Be brief.");
        assert!(prompts.incremental.contains("{previous}"));
    }

    #[test]
    fn mistakes_name_their_line_and_key() {
        assert_eq!(
            error_of("\n[[operations]]\nname = \"a\"\n\n[[operations]]\nname = \"a\"\n"),
            (6, "name", "defined twice (first on line 3)".into())
        );
        let (line, key, why) = error_of("[[operations]]\nname = \"a\"\nkey = \"1\"\n");
        assert_eq!((line, key), (2, "key"));
        assert!(why.contains("already triggers summary"), "{why}");
        let (line, key, _) = error_of("[[operations]]\nname = \"a\"\nkey = \"q\"\n");
        assert_eq!((line, key), (3, "key"));
        let (line, key, _) = error_of("[[operations]]\nname = \"a\"\nkey = \"ab\"\n");
        assert_eq!((line, key), (3, "key"));
        let (line, key, _) = error_of("[[operations]]\nname = \"A-b\"\n");
        assert_eq!((line, key), (2, "name"));
        let (_, key, why) = error_of("[[operations]]\nname = \"partial\"\n");
        assert_eq!(key, "name");
        assert!(why.contains("taken"), "{why}");
        let (line, key, _) = error_of("[[operations]]\nname = \"a\"\noutput = \"xml\"\n");
        assert_eq!((line, key), (3, "output"));
        let (line, key, _) =
            error_of("[[operations]]\nname = \"a\"\noutput = \"text\"\nschema = {}\n");
        assert_eq!((line, key), (4, "schema"));
        let (line, key, why) =
            error_of("[[operations]]\nname = \"a\"\noutput = \"json\"\nschema = '{\"type\": 5}'\n");
        assert_eq!((line, key), (4, "schema"));
        assert!(why.contains("not a JSON Schema"), "{why}");
        let (_, key, why) =
            error_of("[[operations]]\nname = \"a\"\noutput = \"json\"\nschema = '{nope'\n");
        assert_eq!(key, "schema");
        assert!(why.contains("does not parse"), "{why}");
        let (_, key, why) =
            error_of("[[operations]]\nname = \"a\"\nschema = \"missing-file.json\"\n");
        assert_eq!(key, "schema");
        assert!(why.contains("cannot read"), "{why}");
        let (line, key, _) = error_of("[[operations]]\nname = \"a\"\nwhen = \"later\"\n");
        assert_eq!((line, key), (3, "when"));
        let (_, key, _) = error_of("[[operations]]\nname = \"a\"\non_busy = \"queue\"\n");
        assert_eq!(key, "on_busy");
        let (_, key, _) = error_of("[[operations]]\nname = \"a\"\nmin_interval = \"soon\"\n");
        assert_eq!(key, "min_interval");
        let (_, key, _) = error_of("[[operations]]\nname = \"a\"\nkinds = [\"Sales Call\"]\n");
        assert_eq!(key, "kinds");
        let (line, key, why) = error_of("[[operations]]\nname = \"a\"\nfull = \"Summarise.\"\n");
        assert_eq!((line, key), (3, "full"));
        assert!(why.contains("{transcript}"), "{why}");
        let (_, key, why) =
            error_of("[[operations]]\nname = \"a\"\nincremental = \"{transcript}\"\n");
        assert_eq!(key, "incremental");
        assert!(why.contains("{previous}"), "{why}");
        // Unknown keys in a table are refused by the file's reader, with their line.
        let err = FileConfig::parse("[[operations]]\nname = \"a\"\nprompt = \"x\"\n").unwrap_err();
        assert!(matches!(err, FileError::Syntax { .. }), "{err}");
    }

    #[test]
    fn a_schema_file_is_read_beside_the_config_file() {
        let dir = std::env::temp_dir().join(format!("inflight-ops-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.json"), r#"{"type": "array"}"#).unwrap();
        let file =
            FileConfig::parse_in("[[operations]]\nname = \"a\"\nschema = \"s.json\"\n", &dir)
                .unwrap();
        let def = file.operations.def(Operation::named("a").unwrap()).unwrap();
        assert_eq!(def.schema, Some(serde_json::json!({"type": "array"})));
        let _ = std::fs::remove_dir_all(dir);
    }
}
