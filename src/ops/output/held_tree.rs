//! A mind map as a kept result holds it: flat.
//!
//! A mind map is read and built as a tree of [`MindMapNode`]s: one
//! allocation per node and one per label. Every session keeps its latest
//! map for as long as it lives, so ten thousand sessions held two hundred
//! thousand small allocations for them. A [`HeldMindMap`] is the same tree
//! in two: its labels back to back in one string, and per node (in
//! depth-first order) its depth and where its label ends.
//!
//! Whoever needs the tree (a view drawing it, a prompt, the wire) unpacks
//! it with [`HeldMindMap::to_tree`]: one session's map at a time. It
//! serializes exactly as the tree does, `{"root": {"label", "children"}}`.

use serde::{Deserialize, Serialize};

use crate::model::{MindMap, MindMapNode};

/// A mind map, packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldMindMap {
    /// Every label, in depth-first order, back to back.
    labels: Box<str>,
    /// Every node, in depth-first order; the root first.
    nodes: Box<[Node]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    /// Where the node's label ends in `labels`.
    end: u32,
    /// 0 for the root.
    depth: u32,
}

impl HeldMindMap {
    /// The tree packed. Labels past four gigabytes in all are left out
    /// with their nodes (a read map is clamped far below that).
    pub fn pack(map: &MindMap) -> Self {
        fn walk(node: &MindMapNode, depth: u32, labels: &mut String, nodes: &mut Vec<Node>) {
            let Ok(end) = u32::try_from(labels.len() + node.label.len()) else {
                return;
            };
            labels.push_str(&node.label);
            nodes.push(Node { end, depth });
            for child in &node.children {
                walk(child, depth + 1, labels, nodes);
            }
        }
        let mut labels = String::new();
        let mut nodes = Vec::new();
        walk(&map.root, 0, &mut labels, &mut nodes);
        Self {
            labels: labels.into_boxed_str(),
            nodes: nodes.into_boxed_slice(),
        }
    }

    /// The tree unpacked.
    pub fn to_tree(&self) -> MindMap {
        // The path of open nodes, by depth: path[0] is the root.
        let mut path: Vec<MindMapNode> = Vec::new();
        let mut start = 0;
        for node in self.nodes.iter() {
            let end = node.end as usize;
            let label = self.labels.get(start..end).unwrap_or_default();
            start = end;
            let depth = node.depth as usize;
            while path.len() > depth.max(1) {
                close(&mut path);
            }
            path.push(MindMapNode::leaf(label));
        }
        while path.len() > 1 {
            close(&mut path);
        }
        MindMap {
            root: path.pop().unwrap_or_else(|| MindMapNode::leaf("")),
        }
    }

    /// How many nodes the map has, the root included.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }
}

/// Ends the deepest open node: it becomes its parent's last child.
fn close(path: &mut Vec<MindMapNode>) {
    if let Some(done) = path.pop()
        && let Some(parent) = path.last_mut()
    {
        parent.children.push(done);
    }
}

impl From<MindMap> for HeldMindMap {
    fn from(map: MindMap) -> Self {
        Self::pack(&map)
    }
}

impl Serialize for HeldMindMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_tree().serialize(s)
    }
}

impl<'de> Deserialize<'de> for HeldMindMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        MindMap::deserialize(d).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(label: &str, children: Vec<MindMapNode>) -> MindMapNode {
        MindMapNode {
            label: label.into(),
            children,
        }
    }

    fn launch() -> MindMap {
        MindMap {
            root: node(
                "Launch",
                vec![
                    node(
                        "Dates",
                        vec![
                            node("Tuesday", vec![node("9:00", vec![])]),
                            node("", vec![]),
                        ],
                    ),
                    node("Risks", vec![]),
                    node("Owners", vec![node("Ana", vec![])]),
                ],
            ),
        }
    }

    #[test]
    fn a_packed_tree_unpacks_to_the_same_tree() {
        let map = launch();
        let held = HeldMindMap::pack(&map);
        assert_eq!(held.size(), 8);
        assert_eq!(held.to_tree(), map);
        let root_only = MindMap {
            root: MindMapNode::leaf("Only"),
        };
        assert_eq!(HeldMindMap::pack(&root_only).to_tree(), root_only);
    }

    #[test]
    fn it_serializes_and_reads_back_as_the_tree_does() {
        let map = launch();
        let held = HeldMindMap::from(map.clone());
        let json = serde_json::to_string(&held).unwrap();
        assert_eq!(json, serde_json::to_string(&map).unwrap());
        let back: HeldMindMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, held);
    }
}
