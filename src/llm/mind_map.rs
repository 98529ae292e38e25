//! Reading a mind map out of a model's text, leniently.
//!
//! Models wrap JSON in prose or code fences; the parser takes the first JSON
//! object in the text that has the mind-map shape, then clamps its depth,
//! its fan-out and its label lengths so one odd answer cannot flood a view.
//!
//! A previous map goes back into an incremental prompt as an outline
//! ([`to_outline`]): the same tree in a third of the tokens JSON takes.

use crate::model::{MindMap, MindMapNode};

pub const MAX_DEPTH: usize = 5;
pub const MAX_CHILDREN: usize = 12;
pub const MAX_NODES: usize = 200;
pub const MAX_LABEL_CHARS: usize = 80;

/// Finds the first mind-map object in `text`. `Err` says why none was found.
pub fn parse_lenient(text: &str) -> Result<MindMap, String> {
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let candidate = &rest[start..];
        let mut stream =
            serde_json::Deserializer::from_str(candidate).into_iter::<serde_json::Value>();
        if let Some(Ok(value)) = stream.next()
            && let Some(map) = from_value(&value)
        {
            return Ok(clamp(map));
        }
        rest = &candidate[1..];
    }
    Err(
        "the answer holds no mind-map JSON object ({\"root\": {\"label\": …, \"children\": […]}})"
            .into(),
    )
}

fn from_value(value: &serde_json::Value) -> Option<MindMap> {
    let root = value.get("root").unwrap_or(value);
    node_from_value(root, 0).map(|root| MindMap { root })
}

fn node_from_value(value: &serde_json::Value, depth: usize) -> Option<MindMapNode> {
    let label = value.get("label")?.as_str()?;
    let children = match (depth + 1 < MAX_DEPTH, value.get("children")) {
        (true, Some(serde_json::Value::Array(items))) => {
            let mut children: Vec<MindMapNode> = items
                .iter()
                .filter_map(|child| node_from_value(child, depth + 1))
                .collect();
            // Held as a session's latest result, for as long as the session
            // lives: without the room a filtered collect leaves.
            children.shrink_to_fit();
            children
        }
        _ => Vec::new(),
    };
    Some(MindMapNode {
        label: label.to_string(),
        children,
    })
}

/// The map as an indented outline: the main topic on the first line, then
/// `- label` lines, two spaces deeper per level.
pub fn to_outline(map: &MindMap) -> String {
    fn walk(node: &MindMapNode, depth: usize, out: &mut String) {
        for child in &node.children {
            out.push('\n');
            out.push_str(&"  ".repeat(depth));
            out.push_str("- ");
            out.push_str(&child.label);
            walk(child, depth + 1, out);
        }
    }
    let mut out = map.root.label.clone();
    walk(&map.root, 0, &mut out);
    out
}

/// Reads an outline written by [`to_outline`] back; `None` for other text.
pub fn parse_outline(text: &str) -> Option<MindMap> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let root = lines.next()?.trim();
    if root.starts_with("- ") || root.starts_with('{') {
        return None;
    }
    // The path of open nodes, by depth: stack[0] is the root.
    let mut stack = vec![MindMapNode::leaf(root)];
    for line in lines {
        let indent = line.len() - line.trim_start().len();
        let label = line.trim_start().strip_prefix("- ")?;
        let depth = indent / 2 + 1;
        if depth > stack.len() {
            return None;
        }
        while stack.len() > depth {
            let done = stack.pop()?;
            stack.last_mut()?.children.push(done);
        }
        stack.push(MindMapNode::leaf(label));
    }
    while stack.len() > 1 {
        let done = stack.pop()?;
        stack.last_mut()?.children.push(done);
    }
    Some(clamp(MindMap { root: stack.pop()? }))
}

/// Applies the size limits to a tree already parsed.
pub fn clamp(mut map: MindMap) -> MindMap {
    let mut budget = MAX_NODES;
    clamp_node(&mut map.root, 1, &mut budget);
    map
}

fn clamp_node(node: &mut MindMapNode, depth: usize, budget: &mut usize) {
    *budget = budget.saturating_sub(1);
    if node.label.chars().count() > MAX_LABEL_CHARS {
        node.label = node
            .label
            .chars()
            .take(MAX_LABEL_CHARS - 1)
            .collect::<String>()
            + "…";
    }
    if depth >= MAX_DEPTH {
        node.children.clear();
    }
    node.children.truncate(MAX_CHILDREN.min(*budget));
    let mut kept = 0;
    for child in node.children.iter_mut() {
        if *budget == 0 {
            break;
        }
        clamp_node(child, depth + 1, budget);
        kept += 1;
    }
    node.children.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_object_in_prose_and_fences() {
        let text = "Sure! Here is the map:\n```json\n{\"root\": {\"label\": \"Launch\", \"children\": [{\"label\": \"Date\"}]}}\n```\nHope it helps {not json}";
        let map = parse_lenient(text).unwrap();
        assert_eq!(map.root.label, "Launch");
        assert_eq!(map.root.children, vec![MindMapNode::leaf("Date")]);
    }

    #[test]
    fn skips_objects_of_another_shape() {
        let text = "{\"note\": 1} then {\"root\": {\"label\": \"X\", \"children\": []}}";
        assert_eq!(parse_lenient(text).unwrap().root.label, "X");
        assert!(parse_lenient("no json here").is_err());
        assert!(parse_lenient("{\"root\": 5}").is_err());
    }

    #[test]
    fn outlines_round_trip_and_other_text_is_refused() {
        let map = MindMap {
            root: MindMapNode {
                label: "Launch".into(),
                children: vec![
                    MindMapNode {
                        label: "Date".into(),
                        children: vec![MindMapNode::leaf("Thursday"), MindMapNode::leaf("Friday")],
                    },
                    MindMapNode::leaf("Risks"),
                ],
            },
        };
        let outline = to_outline(&map);
        assert_eq!(outline, "Launch\n- Date\n  - Thursday\n  - Friday\n- Risks");
        assert_eq!(parse_outline(&outline), Some(map.clone()));
        let json = serde_json::to_string(&map).unwrap();
        assert!(outline.len() * 2 < json.len(), "{outline:?} vs {json}");
        assert_eq!(parse_outline(&json), None);
        assert_eq!(parse_outline("Root\n    - too deep"), None);
        assert_eq!(parse_outline("Root\nno dash"), None);
        assert_eq!(parse_outline(""), None);
    }

    #[test]
    fn clamps_depth_fan_out_and_labels() {
        fn chain(depth: usize) -> MindMapNode {
            let mut node = MindMapNode::leaf("leaf");
            for _ in 1..depth {
                node = MindMapNode {
                    label: "x".repeat(500),
                    children: vec![node; 3],
                };
            }
            node
        }
        let mut root = chain(9);
        root.children
            .extend(std::iter::repeat_n(MindMapNode::leaf("wide"), 40));
        let map = clamp(MindMap { root });
        assert!(map.root.depth() <= MAX_DEPTH);
        assert!(map.root.size() <= MAX_NODES);
        assert!(map.root.children.len() <= MAX_CHILDREN);
        assert!(map.root.label.chars().count() <= MAX_LABEL_CHARS);
    }
}
