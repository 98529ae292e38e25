//! An operation's name, interned: [`Operation`] is a small copyable number
//! that every table, event and key carries, and that prints as its wire
//! name (`summary`, `mind_map`, `action_items`) without a registry at hand.
//!
//! Names are interned once per process, in the order they are first seen:
//! the two built-in operations first (so [`Operation::SUMMARY`] and
//! [`Operation::MIND_MAP`] are constants), then the config file's
//! definitions at start, then any name an attached server shows. At most
//! [`MAX_OPERATIONS`] names are ever interned, so a peer that sends new
//! names without end cannot grow the table: past it a name is refused like
//! a malformed one.
//!
//! What an operation *does* (its prompts, output kind, trigger) is not
//! here: that is its definition, in the registry ([`super::OpRegistry`]).

use std::fmt;
use std::sync::{OnceLock, RwLock};

use serde::{Deserialize, Serialize};

/// Most operation names one process interns.
pub const MAX_OPERATIONS: usize = 64;
/// Longest operation name, in bytes.
pub const MAX_NAME_LEN: usize = 32;

/// One kind of LLM work on a session, named by its wire name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Operation(u16);

/// Why a string cannot name an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "{0:?} is no operation name: it must start with a-z and hold only a-z, 0-9 and _, \
         at most {MAX_NAME_LEN} characters"
    )]
    Malformed(String),
    #[error("{0:?} is one operation name too many: at most {MAX_OPERATIONS} are known at once")]
    TooMany(String),
}

fn table() -> &'static RwLock<Vec<&'static str>> {
    static NAMES: OnceLock<RwLock<Vec<&'static str>>> = OnceLock::new();
    NAMES.get_or_init(|| RwLock::new(vec!["summary", "mind_map"]))
}

/// `[a-z][a-z0-9_]{0,31}`: safe in API paths, metric labels, Redis keys and
/// the status JSON's field names.
pub fn well_formed(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Operation {
    /// The built-in rolling summary.
    pub const SUMMARY: Operation = Operation(0);
    /// The built-in mind map.
    pub const MIND_MAP: Operation = Operation(1);

    /// The operation named `name`, interned when it is new.
    pub fn named(name: &str) -> Result<Self, NameError> {
        if let Some(op) = Self::lookup(name) {
            return Ok(op);
        }
        if !well_formed(name) {
            let mut shown = crate::text::strip_controls(name).into_owned();
            crate::text::cut_to(&mut shown, 40);
            return Err(NameError::Malformed(shown));
        }
        let mut names = table().write().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = names.iter().position(|n| *n == name) {
            return Ok(Operation(at as u16));
        }
        if names.len() >= MAX_OPERATIONS {
            return Err(NameError::TooMany(name.to_string()));
        }
        // Leaked on purpose: at most MAX_OPERATIONS short names, ever.
        names.push(Box::leak(name.to_string().into_boxed_str()));
        Ok(Operation((names.len() - 1) as u16))
    }

    /// The operation named `name` when that name was seen before; never
    /// interns (for names read from outside that must already be known).
    pub fn lookup(name: &str) -> Option<Self> {
        let names = table().read().unwrap_or_else(|e| e.into_inner());
        names
            .iter()
            .position(|n| *n == name)
            .map(|at| Operation(at as u16))
    }

    /// The wire name, as in the status JSON, the API and metric labels.
    pub fn as_str(self) -> &'static str {
        let names = table().read().unwrap_or_else(|e| e.into_inner());
        names.get(usize::from(self.0)).copied().unwrap_or("unknown")
    }

    /// The name as words, for messages: `mind map`, `action items`. (The
    /// dashboard's column heading is the definition's own label.)
    pub fn label(self) -> String {
        self.as_str().replace('_', " ")
    }

    /// Position in per-operation tables ([`super::OpMap`]).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The operation at position `at` of the interned names.
    pub(crate) fn at(at: usize) -> Self {
        Operation(at as u16)
    }

    /// How many names are interned now: the width a new table starts at.
    pub fn interned() -> usize {
        table().read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Operation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Operation::named(&raw).map_err(serde::de::Error::custom)
    }
}

/// In the API's OpenAPI document: a name of the rules above. Which names
/// a server knows depends on its config file, so the document says the
/// form, not the list.
impl utoipa::PartialSchema for Operation {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(MAX_NAME_LEN))
            .pattern(Some("^[a-z][a-z0-9_]*$"))
            .description(Some(
                "An operation's name: `summary`, `mind_map`, or one from the server's config file",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Operation {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_ins_are_the_first_two_names() {
        assert_eq!(Operation::SUMMARY.as_str(), "summary");
        assert_eq!(Operation::MIND_MAP.as_str(), "mind_map");
        assert_eq!(Operation::named("summary"), Ok(Operation::SUMMARY));
        assert_eq!(Operation::lookup("mind_map"), Some(Operation::MIND_MAP));
    }

    #[test]
    fn a_name_is_interned_once_and_prints_as_itself() {
        let a = Operation::named("action_items_test").unwrap();
        let b = Operation::named("action_items_test").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "action_items_test");
        assert!(a.index() >= 2);
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"action_items_test\"");
        let back: Operation = serde_json::from_str("\"action_items_test\"").unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn names_follow_the_rules() {
        for good in [
            "a",
            "summary",
            "action_items",
            "q3_review2",
            &"x".repeat(32),
        ] {
            assert!(well_formed(good), "{good}");
        }
        for bad in [
            "",
            "Summary",
            "2fa",
            "_x",
            "a-b",
            "a b",
            "é",
            &"x".repeat(33),
        ] {
            assert!(!well_formed(bad), "{bad}");
            assert!(matches!(
                Operation::named(bad),
                Err(NameError::Malformed(_))
            ));
        }
        assert_eq!(Operation::lookup("never_seen_anywhere"), None);
        assert!(serde_json::from_str::<Operation>("\"Not-A-Name\"").is_err());
    }
}
