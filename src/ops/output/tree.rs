//! `tree`: a labelled tree, the mind map's shape. Read leniently (the first
//! tree-shaped JSON object in the answer, clamped in size), labels cleaned.

use crate::model::{MindMap, MindMapNode};

pub fn read(answer: &str) -> Result<MindMap, String> {
    let mut map = crate::llm::mind_map::parse_lenient(answer)?;
    clean(&mut map.root);
    Ok(map)
}

/// Labels come from a model: no control characters reach a view.
fn clean(node: &mut MindMapNode) {
    if let std::borrow::Cow::Owned(stripped) = crate::text::strip_controls(&node.label) {
        node.label = stripped;
    }
    node.children.iter_mut().for_each(clean);
}

/// Keeps the first lines (the root and the first branches); also used for
/// JSON, whose start holds its top-level shape.
pub fn cut(text: String, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text;
    }
    let mut used = 0;
    text.lines()
        .take_while(|line| {
            used += line.chars().count() + 1;
            used <= max_chars
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The JSON Schema of a tree, for the format ladder's top rung.
pub fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "root": {"$ref": "#/$defs/node"}
        },
        "required": ["root"],
        "additionalProperties": false,
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                },
                "required": ["label", "children"],
                "additionalProperties": false
            }
        }
    })
}

/// What a tree operation is asked to write.
pub fn instructions(label: &str) -> String {
    format!(
        "Organise the meeting as a {} tree. Answer with JSON only, in the form \
         {{\"root\": {{\"label\": \"main topic\", \"children\": [{{\"label\": \"subtopic\", \"children\": []}}]}}}}. \
         Use short labels, at most 4 levels and at most 8 children per node.",
        label.to_lowercase()
    )
}

/// The root as a heading, its children below with box-drawing branches.
pub fn shown(map: &MindMap) -> Vec<super::ShownLine> {
    let mut out = vec![vec![(super::Role::Heading, map.root.label.clone())]];
    branches(&map.root.children, "", &mut out);
    out
}

fn branches(children: &[MindMapNode], prefix: &str, out: &mut Vec<super::ShownLine>) {
    for (i, child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let branch = if last { "└─ " } else { "├─ " };
        out.push(vec![
            (super::Role::Branch, format!("{prefix}{branch}")),
            (super::Role::Plain, child.label.clone()),
        ]);
        let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
        branches(&child.children, &deeper, out);
    }
}
