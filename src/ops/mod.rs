//! Operations as data: what LLM work runs on a session, defined once and
//! read by everything that shows or runs it.
//!
//! | file | holds |
//! |---|---|
//! | `name.rs` | [`Operation`]: an operation's wire name, interned, copyable |
//! | `table.rs` | [`OpMap`]: one value per operation, the per-operation tables |
//! | `definition.rs` | [`OpDef`]: what one operation is: label, key, output kind, trigger, prompts |
//! | `registry.rs` | [`OpRegistry`]: the defined operations, in order, installed once per process |
//! | `output/` | [`OutputKind`]: text, tree and json, one module each |
//!
//! The scheduling core (the state manager, the store, the permits, cluster
//! keys, the database's `op` column, events and metrics) never names an
//! operation: it works through [`Operation`] and [`OpMap`]. The two
//! built-in operations, the rolling summary and the mind map, are
//! [`Operation::SUMMARY`] and [`Operation::MIND_MAP`].

mod definition;
mod name;
pub mod output;
mod registry;
mod table;

pub use definition::{OpDef, OpPrompts, When};
pub use output::OutputKind;

pub use name::{MAX_NAME_LEN, MAX_OPERATIONS, NameError, Operation, well_formed};
pub use registry::{OpRegistry, install, registry};
pub use table::OpMap;

/// The built-in operations, in the order the views show them.
pub const BUILT_IN: [Operation; 2] = [Operation::SUMMARY, Operation::MIND_MAP];
