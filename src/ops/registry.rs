//! The registry: every operation this process defines, in the order the
//! views show them, with what each one is ([`OpDef`]).
//!
//! One registry per process, read-only once it is installed: `main` builds
//! it from the built-in definitions (and, as operations become data, the
//! config file's) and [`install`]s it before the engine starts; everything
//! else reads it with [`registry`]. Until one is installed (the library's
//! tests, the benches), the built-in definitions are in force.

use std::sync::OnceLock;

use super::{OpDef, Operation, OutputKind};

/// Every defined operation, in order.
#[derive(Debug, Clone)]
pub struct OpRegistry {
    defs: Vec<OpDef>,
}

impl OpRegistry {
    /// A registry of `defs`, in order (checked by the config file's reader).
    pub fn new(defs: Vec<OpDef>) -> Self {
        Self { defs }
    }

    /// The rolling summary and the mind map.
    pub fn built_in() -> Self {
        Self {
            defs: vec![OpDef::summary(), OpDef::mind_map()],
        }
    }

    /// The operations of `chosen` (`--ops`), or all of them when it is
    /// empty: what runs, shows and can be triggered.
    pub fn chosen(&self, chosen: &[Operation]) -> Self {
        Self {
            defs: self
                .defs
                .iter()
                .filter(|d| chosen.is_empty() || chosen.contains(&d.op))
                .cloned()
                .collect(),
        }
    }

    /// The defined operations, in order.
    pub fn ops(&self) -> impl Iterator<Item = Operation> + '_ {
        self.defs.iter().map(|d| d.op)
    }

    pub fn defs(&self) -> &[OpDef] {
        &self.defs
    }

    pub fn def(&self, op: Operation) -> Option<&OpDef> {
        self.defs.iter().find(|d| d.op == op)
    }

    pub fn is_defined(&self, op: Operation) -> bool {
        self.def(op).is_some()
    }

    /// The defined operation named `name`, if any.
    pub fn parse(&self, name: &str) -> Option<Operation> {
        let op = Operation::lookup(name)?;
        self.is_defined(op).then_some(op)
    }

    /// The defined names, for messages that list them.
    pub fn names(&self) -> Vec<&'static str> {
        self.ops().map(Operation::as_str).collect()
    }

    /// How `op`'s results are shaped; an operation no longer defined (a
    /// history row of one removed from the file) reads as text.
    pub fn output(&self, op: Operation) -> OutputKind {
        self.def(op).map_or(OutputKind::Text, |d| d.output)
    }
}

static INSTALLED: OnceLock<OpRegistry> = OnceLock::new();

/// Makes `registry` the process's, once; `false` when one was already.
pub fn install(registry: OpRegistry) -> bool {
    INSTALLED.set(registry).is_ok()
}

/// The process's registry: the one installed, or the built-in definitions.
pub fn registry() -> &'static OpRegistry {
    static BUILT_IN: OnceLock<OpRegistry> = OnceLock::new();
    INSTALLED
        .get()
        .unwrap_or_else(|| BUILT_IN.get_or_init(OpRegistry::built_in))
}
