//! Operations as data: what LLM work runs on a session, defined once and
//! read by everything that shows or runs it.
//!
//! | file | holds |
//! |---|---|
//! | `name.rs` | [`Operation`]: an operation's wire name, interned, copyable |
//! | `table.rs` | [`OpMap`]: one value per operation, the per-operation tables |
//! | `registry.rs` | [`OpRegistry`]: the defined operations, in order, installed once per process |
//!
//! The scheduling core (the state manager, the store, the permits, cluster
//! keys, the database's `op` column, events and metrics) never names an
//! operation: it works through [`Operation`] and [`OpMap`]. The two
//! built-in operations, the rolling summary and the mind map, are
//! [`Operation::SUMMARY`] and [`Operation::MIND_MAP`].

mod name;
mod registry;
mod table;

pub use name::{MAX_NAME_LEN, MAX_OPERATIONS, NameError, Operation, well_formed};
pub use registry::{OpRegistry, install, registry};
pub use table::OpMap;

/// How an operation's results are shaped: parsed, kept, sent and drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Prose, kept as the model wrote it (cleaned).
    Text,
    /// A labelled tree (`{"root": {"label", "children"}}`), read leniently.
    Tree,
}

/// What one operation is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpDef {
    /// Its wire name.
    pub op: Operation,
    /// Its dashboard heading.
    pub label: String,
    pub output: OutputKind,
}

/// The built-in operations, in the order the views show them.
pub const BUILT_IN: [Operation; 2] = [Operation::SUMMARY, Operation::MIND_MAP];
