//! The output kinds: how an operation's answers are read, kept, shown to
//! the model again, asked for, sent, drawn and stood in for. Each kind is one
//! module; [`OutputKind`] and [`ResultBody`] dispatch to them, and nothing
//! else in the crate branches on an operation's output.
//!
//! | kind | module | a result is |
//! |---|---|---|
//! | `text` | `text.rs` | prose, as the model wrote it, cleaned |
//! | `tree` | `tree.rs` | a labelled tree (`{"root": {"label", "children"}}`), read leniently, kept packed (`held_tree.rs`) |
//! | `json` | `json.rs` | a JSON value valid against the operation's schema |

pub mod held_tree;
pub mod json;
pub mod text;
pub mod tree;

use crate::llm::Utterance;

pub use self::held_tree::HeldMindMap;

use super::OpDef;

/// How an operation's results are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    Text,
    Tree,
    Json,
}

/// What a finished run produced, by its operation's output kind.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ResultBody {
    /// Prose: the summary.
    Text(String),
    /// A labelled tree: the mind map, packed.
    Tree(HeldMindMap),
    /// A value valid against the operation's schema.
    Json(serde_json::Value),
}

/// How the model is asked for an answer's shape, rung by rung of the
/// format ladder (`llm/structured.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// No constraint: prose.
    Prose,
    /// JSON, with this schema on the ladder's top rung.
    Json {
        name: String,
        schema: serde_json::Value,
        /// Asked for in strict mode: only a schema written to its rules
        /// (the tree's); a user's schema may not be.
        strict: bool,
    },
}

impl OutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Text => "text",
            OutputKind::Tree => "tree",
            OutputKind::Json => "json",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [OutputKind::Text, OutputKind::Tree, OutputKind::Json]
            .into_iter()
            .find(|k| k.as_str() == raw)
    }

    /// Reads an answer as a result of `def`, or says why it cannot be used.
    pub fn read(def: &OpDef, answer: &str) -> Result<ResultBody, String> {
        match def.output {
            OutputKind::Text => text::read(answer).map(ResultBody::Text),
            OutputKind::Tree => tree::read(answer).map(|map| ResultBody::Tree(map.into())),
            OutputKind::Json => json::read(def, answer).map(ResultBody::Json),
        }
    }

    /// How `def`'s answers are asked for.
    pub fn format(def: &OpDef) -> Format {
        match def.output {
            OutputKind::Text => Format::Prose,
            OutputKind::Tree => Format::Json {
                name: def.op.as_str().into(),
                schema: tree::schema(),
                strict: true,
            },
            OutputKind::Json => Format::Json {
                name: def.op.as_str().into(),
                schema: json::schema_of(def),
                strict: false,
            },
        }
    }

    /// A previous result cut to `max_chars` for a prompt: text keeps its
    /// end (the newest part), a tree's outline and JSON their start.
    pub fn cut_previous(self, text: String, max_chars: usize) -> String {
        match self {
            OutputKind::Text => text::cut(text, max_chars),
            OutputKind::Tree | OutputKind::Json => tree::cut(text, max_chars),
        }
    }

    /// The previous result as the prompt gives it back: text its last
    /// `max_chars` (the newest part), a tree's outline or JSON whole (they
    /// were cut to the window's room already, see [`Self::cut_previous`]).
    pub fn previous_in_prompt(self, previous: &str, max_chars: usize) -> &str {
        match self {
            OutputKind::Text => text::last_chars(previous, max_chars),
            OutputKind::Tree | OutputKind::Json => previous,
        }
    }

    /// The builtin backend's deterministic stand-in for a model's answer.
    pub fn stand_in(def: &OpDef, utterances: &[Utterance], previous: Option<&str>) -> String {
        match def.output {
            OutputKind::Text => crate::llm::builtin::summarise(utterances, previous),
            OutputKind::Tree => {
                serde_json::to_string(&crate::llm::builtin::mind_map_merged(utterances, previous))
                    .unwrap_or_default()
            }
            OutputKind::Json => json::stand_in(def, utterances).to_string(),
        }
    }

    /// Default prompts for an operation that gives none: what to write,
    /// from its label (and, for json, its schema's descriptions).
    pub fn default_prompts(def: &OpDef) -> super::OpPrompts {
        let what = match def.output {
            OutputKind::Text => text::instructions(&def.label),
            OutputKind::Tree => tree::instructions(&def.label),
            OutputKind::Json => json::instructions(def),
        };
        super::OpPrompts {
            system: format!(
                "You work on live meeting transcripts for the people in the meeting. {what} \
                 Never invent facts that are not in the transcript."
            ),
            full: "Transcript so far:\n\n{transcript}\n\nAnswer now.".into(),
            incremental:
                "Your previous answer:\n\n{previous}\n\nWhat was said since:\n\n{transcript}\n\n\
                 Answer again for the whole meeting so far."
                    .into(),
        }
    }
}

impl ResultBody {
    /// The body as the database keeps it: text as it is, a tree or JSON as
    /// JSON text.
    pub fn stored(&self) -> String {
        match self {
            ResultBody::Text(text) => text.clone(),
            ResultBody::Tree(map) => serde_json::to_string(map).unwrap_or_default(),
            ResultBody::Json(value) => value.to_string(),
        }
    }

    /// A body the database kept, read as `kind`; `None` when it no longer
    /// reads as that kind (the operation's output was changed).
    pub fn from_stored(kind: OutputKind, stored: &str) -> Option<Self> {
        match kind {
            OutputKind::Text => Some(ResultBody::Text(stored.to_string())),
            OutputKind::Tree => serde_json::from_str(stored).ok().map(ResultBody::Tree),
            OutputKind::Json => serde_json::from_str(stored).ok().map(ResultBody::Json),
        }
    }

    /// The body as a previous result in a prompt: text as it is, a tree as
    /// an indented outline (a third of its JSON's tokens), JSON compact.
    pub fn for_prompt(&self) -> String {
        match self {
            ResultBody::Text(text) => text.clone(),
            ResultBody::Tree(map) => crate::llm::mind_map::to_outline(&map.to_tree()),
            ResultBody::Json(value) => value.to_string(),
        }
    }

    /// The body on the wire (`/ws` updates, the API): a string, or JSON.
    pub fn wire(&self) -> Wire {
        Wire(self.clone())
    }

    /// The body as a reader sees it: text as its lines, a tree with
    /// branches, JSON as a list. The dashboard styles each part's role.
    pub fn shown(&self) -> Vec<ShownLine> {
        match self {
            ResultBody::Text(text) => text::shown(text),
            ResultBody::Tree(map) => tree::shown(&map.to_tree()),
            ResultBody::Json(value) => json::shown(value),
        }
    }
}

/// One line of a result as it is shown: its parts, each with its role.
pub type ShownLine = Vec<(Role, String)>;

/// What a part of a shown result is, for whoever draws it to style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// What the model said.
    Plain,
    /// A heading: a tree's root.
    Heading,
    /// A tree's branch lines.
    Branch,
    /// A list's bullet.
    Bullet,
    /// A field's name.
    Field,
    /// Standing for nothing: an empty list.
    Empty,
}

/// A result body as the API and `/ws` send it: text as a string, a tree or
/// JSON as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Wire(pub ResultBody);

impl serde::Serialize for Wire {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireRef(&self.0).serialize(s)
    }
}

/// [`Wire`] for a body borrowed, not copied (the `/ws` updates).
#[derive(Debug, Clone, Copy)]
pub struct WireRef<'a>(pub &'a ResultBody);

impl serde::Serialize for WireRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ResultBody::Text(text) => s.serialize_str(text),
            ResultBody::Tree(map) => map.serialize(s),
            ResultBody::Json(value) => value.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MindMap, MindMapNode};

    fn node(label: &str, children: Vec<MindMapNode>) -> MindMapNode {
        MindMapNode {
            label: label.into(),
            children,
        }
    }

    #[test]
    fn a_tree_shows_its_root_as_a_heading_and_its_children_on_branches() {
        let map = MindMap {
            root: node(
                "Launch",
                vec![
                    node("Dates", vec![node("Tuesday", vec![])]),
                    node("Risks", vec![]),
                ],
            ),
        };
        let shown = ResultBody::Tree(map.into()).shown();
        assert_eq!(shown[0], vec![(Role::Heading, "Launch".to_string())]);
        let text: Vec<String> = shown[1..]
            .iter()
            .map(|parts| parts.iter().map(|(_, t)| t.as_str()).collect())
            .collect();
        assert_eq!(text, ["├─ Dates", "│  └─ Tuesday", "└─ Risks"]);
        assert_eq!(shown[1][0].0, Role::Branch);
    }

    #[test]
    fn text_shows_as_its_lines() {
        let shown = ResultBody::Text("One.\nTwo.".into()).shown();
        assert_eq!(
            shown,
            [
                vec![(Role::Plain, "One.".to_string())],
                vec![(Role::Plain, "Two.".to_string())]
            ]
        );
    }

    #[test]
    fn only_the_trees_own_schema_is_asked_for_in_strict_mode() {
        let strict = |def: &OpDef| match OutputKind::format(def) {
            Format::Json { strict, .. } => Some(strict),
            Format::Prose => None,
        };
        assert_eq!(strict(&OpDef::mind_map()), Some(true));
        assert_eq!(strict(&OpDef::summary()), None, "prose sends no schema");
        let mut user = OpDef::new(OpDef::summary().op, "Actions", OutputKind::Json);
        user.schema = Some(serde_json::json!({"type": "array"}));
        assert_eq!(strict(&user), Some(false));
    }

    #[test]
    fn text_goes_back_into_a_prompt_as_its_newest_part_and_json_whole() {
        let previous = "older. newer.";
        assert_eq!(OutputKind::Text.previous_in_prompt(previous, 6), "newer.");
        assert_eq!(OutputKind::Json.previous_in_prompt(previous, 6), previous);
    }
}
