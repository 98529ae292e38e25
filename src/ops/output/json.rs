//! `json`: a JSON value valid against the operation's JSON Schema. Read
//! leniently (the first JSON object or array in the answer, code fences and
//! prose around it are fine), then checked against the schema: an answer
//! that breaks it is not kept, and the repair retry names what was wrong.
//! Strings are cleaned of control characters before anything keeps them.

use serde_json::{Map, Value, json};

use crate::llm::Utterance;
use crate::ops::OpDef;

/// Most places in an answer where a JSON value is tried.
const MAX_STARTS: usize = 32;
/// Deepest a stand-in is built (a schema that refers to itself ends here).
const MAX_DEPTH: usize = 8;

/// The schema of `def`, or one that takes any object.
pub fn schema_of(def: &OpDef) -> Value {
    def.schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object"}))
}

/// Checks that `schema` is a JSON Schema this build can apply.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    jsonschema::validator_for(schema)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Why `value` breaks `schema`, if it does.
pub fn violation(schema: &Value, value: &Value) -> Option<String> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => return Some(format!("the schema cannot be applied: {e}")),
    };
    validator.validate(value).err().map(|e| {
        let at = e.instance_path().to_string();
        if at.is_empty() {
            e.to_string()
        } else {
            format!("{e} (at {at})")
        }
    })
}

pub fn read(def: &OpDef, answer: &str) -> Result<Value, String> {
    // Raw control characters are no JSON; escape sequences are no text.
    let answer = crate::text::strip_controls_keep_lines(answer);
    let mut value = first_value(&answer).ok_or("the answer holds no JSON object or array")?;
    clean(&mut value);
    match violation(&schema_of(def), &value) {
        None => Ok(value),
        Some(why) => Err(format!("the JSON does not follow the schema: {why}")),
    }
}

/// The first JSON object or array in `text`.
fn first_value(text: &str) -> Option<Value> {
    text.char_indices()
        .filter(|(_, c)| *c == '{' || *c == '[')
        .take(MAX_STARTS)
        .find_map(|(at, _)| {
            serde_json::Deserializer::from_str(&text[at..])
                .into_iter::<Value>()
                .next()
                .and_then(Result::ok)
        })
}

/// Strips control characters from every string in `value`.
fn clean(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(clean) = crate::text::strip_controls(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(clean),
        Value::Object(map) => map.values_mut().for_each(clean),
        _ => {}
    }
}

/// What a json operation is asked to write: its label, the schema's
/// descriptions, and the schema itself (a lower rung of the ladder carries
/// no schema, so the prompt does).
pub fn instructions(def: &OpDef) -> String {
    let schema = schema_of(def);
    let mut described = Vec::new();
    describe(&schema, "", &schema, &mut described, 0);
    let mut text = format!(
        "Extract the meeting's {} as JSON. Answer with JSON only, valid against this JSON Schema: {}",
        def.label.to_lowercase(),
        schema
    );
    if !described.is_empty() {
        text.push_str(" Fields: ");
        text.push_str(&described.join("; "));
        text.push('.');
    }
    // The shape to fill in: a small model copies a shape more readily
    // than it reads a schema.
    text.push_str(&format!(" Its shape: {}", example(&schema)));
    text
}

/// A value of the schema's shape with `…` for every string and one item in
/// every array: what an answer looks like, without content.
pub fn example(schema: &Value) -> Value {
    let placeholder = [Utterance::new(Some("…"), "…")];
    let mut lines = Lines {
        utterances: &placeholder,
        next: 0,
    };
    build(schema, schema, "", &mut lines, 0)
}

/// `path: description` for every described part of the schema.
fn describe(node: &Value, path: &str, root: &Value, out: &mut Vec<String>, depth: usize) {
    let node = resolve(node, root);
    if depth > MAX_DEPTH {
        return;
    }
    if let Some(d) = node.get("description").and_then(Value::as_str) {
        let name = if path.is_empty() { "the answer" } else { path };
        out.push(format!("{name}: {d}"));
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            describe(sub, &path, root, out, depth + 1);
        }
    }
    if let Some(items) = node.get("items") {
        describe(items, &format!("{path}[]"), root, out, depth + 1);
    }
}

/// Follows a local `$ref` (`#/$defs/x`, `#/definitions/x`).
fn resolve<'a>(node: &'a Value, root: &'a Value) -> &'a Value {
    let mut node = node;
    for _ in 0..MAX_DEPTH {
        let Some(pointer) = node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        else {
            break;
        };
        match root.pointer(pointer) {
            Some(target) => node = target,
            None => break,
        }
    }
    node
}

/// The builtin backend's answer: a value built from the schema, its
/// strings taken from what was said, deterministic, and valid against the
/// schema (checked; where the schema asks for what cannot be built from
/// its shape alone, such as a pattern, the plainest value is tried).
pub fn stand_in(def: &OpDef, utterances: &[Utterance]) -> Value {
    let schema = schema_of(def);
    let mut lines = Lines {
        utterances,
        next: 0,
    };
    build(&schema, &schema, "", &mut lines, 0)
}

struct Lines<'a> {
    utterances: &'a [Utterance],
    next: usize,
}

impl Lines<'_> {
    /// The line the value being built is drawn from; `None` with nothing
    /// said. Every string of one array item comes from the same line.
    fn current(&self) -> Option<&Utterance> {
        self.utterances
            .get(self.next % self.utterances.len().max(1))
    }

    /// On to the next line said (after an array item).
    fn advance(&mut self) {
        self.next += 1;
    }
}

fn build(node: &Value, root: &Value, name: &str, lines: &mut Lines<'_>, depth: usize) -> Value {
    let node = resolve(node, root);
    if let Some(value) = node.get("const") {
        return value.clone();
    }
    if let Some(first) = node
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        let Some(branches) = node.get(key).and_then(Value::as_array) else {
            continue;
        };
        // One branch of a choice will do; `allOf` only when it has one.
        if let Some(first) = branches.first()
            && (key != "allOf" || branches.len() == 1)
        {
            return build(first, root, name, lines, depth + 1);
        }
    }
    let kind = match node.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if node.get("properties").is_some() => "object",
        _ if node.get("items").is_some() => "array",
        _ => "string",
    };
    if depth > MAX_DEPTH {
        return match kind {
            "object" => json!({}),
            "array" => json!([]),
            _ => Value::Null,
        };
    }
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = node.get("properties").and_then(Value::as_object) {
                for (key, sub) in props {
                    out.insert(key.clone(), build(sub, root, key, lines, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let min = node.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let max = node.get("maxItems").and_then(Value::as_u64).unwrap_or(3);
            let said = lines.utterances.len().min(3) as u64;
            let n = said.max(min).min(max.max(min));
            let items = node.get("items").cloned().unwrap_or(json!({}));
            Value::Array(
                (0..n)
                    .map(|_| {
                        let item = build(&items, root, name, lines, depth + 1);
                        lines.advance();
                        item
                    })
                    .collect(),
            )
        }
        "integer" | "number" => {
            let min = node
                .get("minimum")
                .and_then(Value::as_f64)
                .or_else(|| {
                    node.get("exclusiveMinimum")
                        .and_then(Value::as_f64)
                        .map(|m| m + 1.0)
                })
                .unwrap_or(0.0);
            if kind == "integer" {
                json!(min.ceil() as i64)
            } else {
                json!(min)
            }
        }
        "boolean" => Value::Bool(false),
        "null" => Value::Null,
        _ => Value::String(string_for(node, name, lines)),
    }
}

/// A string for a field: who said the next line for an owner or speaker,
/// else the line itself, cut to the schema's length limits.
fn string_for(node: &Value, name: &str, lines: &Lines<'_>) -> String {
    let who = ["owner", "speaker", "who", "assignee", "person"]
        .iter()
        .any(|w| name.to_lowercase().contains(w));
    let mut text = match lines.current() {
        Some(u) if who => u.speaker().unwrap_or("someone").to_string(),
        Some(u) => u.text().to_string(),
        None => String::new(),
    };
    let max = node.get("maxLength").and_then(Value::as_u64).unwrap_or(120) as usize;
    if text.chars().count() > max {
        text = text.chars().take(max).collect();
    }
    let min = node.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    while text.chars().count() < min {
        text.push('.');
    }
    text
}

/// JSON as a list: an array's items as bullets, an object's fields as
/// `name: value` (an item whose fields are all plain reads on one line:
/// `owner: ana · task: ship the release`).
pub fn shown(value: &Value) -> Vec<super::ShownLine> {
    let mut out = Vec::new();
    list(value, "", &mut out);
    out
}

/// A value with nothing inside it, as one line's text.
fn plain(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(crate::text::strip_controls(s).into_owned()),
        Value::Null => Some("-".into()),
        Value::Bool(_) | Value::Number(_) => Some(value.to_string()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn list(value: &Value, indent: &str, out: &mut Vec<super::ShownLine>) {
    use super::Role;
    match value {
        Value::Array(items) if items.is_empty() => {
            out.push(vec![(Role::Empty, format!("{indent}(none)"))])
        }
        Value::Array(items) => {
            for item in items {
                let one_line = match item {
                    Value::Object(fields) => fields
                        .iter()
                        .map(|(k, v)| plain(v).map(|v| format!("{k}: {v}")))
                        .collect::<Option<Vec<_>>>()
                        .map(|parts| parts.join(" · ")),
                    other => plain(other),
                };
                match one_line {
                    Some(text) => out.push(vec![
                        (Role::Bullet, format!("{indent}• ")),
                        (Role::Plain, text),
                    ]),
                    None => {
                        out.push(vec![(Role::Bullet, format!("{indent}•"))]);
                        list(item, &format!("{indent}  "), out);
                    }
                }
            }
        }
        Value::Object(fields) => {
            for (key, field) in fields {
                match plain(field) {
                    Some(text) => out.push(vec![
                        (Role::Field, format!("{indent}{key}: ")),
                        (Role::Plain, text),
                    ]),
                    None => {
                        out.push(vec![(Role::Field, format!("{indent}{key}"))]);
                        list(field, &format!("{indent}  "), out);
                    }
                }
            }
        }
        other => out.push(vec![(
            Role::Plain,
            format!("{indent}{}", plain(other).unwrap_or_default()),
        )]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Operation, OutputKind};

    fn def(schema: Value) -> OpDef {
        let mut def = OpDef::summary();
        def.op = Operation::named("json_output_test").unwrap();
        def.output = OutputKind::Json;
        def.schema = Some(schema);
        def
    }

    fn actions() -> Value {
        json!({
            "type": "object",
            "description": "what people agreed to do",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "owner": {"type": "string", "description": "who does it"},
                            "task": {"type": "string", "minLength": 1},
                            "due": {"type": ["string", "null"]},
                            "priority": {"enum": ["high", "low"]}
                        },
                        "required": ["owner", "task"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["items"]
        })
    }

    fn said(lines: &[(&str, &str)]) -> Vec<Utterance> {
        lines
            .iter()
            .map(|(who, text)| Utterance::new(Some(who), text))
            .collect()
    }

    #[test]
    fn answers_are_read_leniently_and_checked_against_the_schema() {
        let def = def(actions());
        let good = "Sure! ```json\n{\"items\": [{\"owner\": \"ana\", \"task\": \"ship\u{1b}[2J it\"}]}\n```";
        let value = read(&def, good).unwrap();
        assert_eq!(
            value["items"][0]["task"], "ship it",
            "control sequences stripped"
        );
        let wrong = read(&def, r#"{"items": [{"owner": 3, "task": "x"}]}"#).unwrap_err();
        assert!(wrong.contains("does not follow the schema"), "{wrong}");
        assert!(wrong.contains("/items/0/owner"), "{wrong}");
        assert!(read(&def, "no JSON here").is_err());
    }

    #[test]
    fn the_stand_in_is_valid_against_its_schema_and_uses_what_was_said() {
        let def = def(actions());
        let lines = said(&[
            ("ana", "I will ship the release"),
            ("bo", "I take the docs"),
        ]);
        let value = stand_in(&def, &lines);
        assert_eq!(violation(&actions(), &value), None, "{value}");
        assert_eq!(value["items"][0]["owner"], "ana");
        assert_eq!(value["items"].as_array().unwrap().len(), 2);
        assert_eq!(value, stand_in(&def, &lines), "deterministic");
        // Nothing said yet: still valid.
        assert_eq!(violation(&actions(), &stand_in(&def, &[])), None);
        // Refs, minItems, numbers, consts.
        let schema = json!({
            "$defs": {"point": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 2}, "k": {"const": "x"}}, "required": ["n", "k"]}},
            "type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 4
        });
        let value = stand_in(&self::def(schema.clone()), &lines);
        assert_eq!(violation(&schema, &value), None, "{value}");
    }

    #[test]
    fn the_instructions_carry_the_schema_and_its_descriptions() {
        let text = instructions(&def(actions()));
        assert!(text.contains("items[].owner: who does it"), "{text}");
        assert!(
            text.contains("the answer: what people agreed to do"),
            "{text}"
        );
        assert!(text.contains("\"required\""), "{text}");
        // The schema's own order, as its author wrote it.
        assert!(
            text.contains(
                r#"Its shape: {"items":[{"owner":"…","task":"…","due":"…","priority":"high"}]}"#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_list_of_flat_items_shows_one_bullet_line_each_and_nested_values_indent() {
        let value = json!([
            {"owner": "ana", "task": "ship the release", "due": null},
            {"task": "plan", "steps": ["draft", "review"]},
        ]);
        let text: Vec<String> = shown(&value)
            .into_iter()
            .map(|parts| parts.into_iter().map(|(_, t)| t).collect())
            .collect();
        assert_eq!(
            text,
            [
                "• owner: ana · task: ship the release · due: -",
                "•",
                "  task: plan",
                "  steps",
                "    • draft",
                "    • review",
            ]
        );
        assert_eq!(shown(&json!([]))[0][0].0, super::super::Role::Empty);
    }
}
