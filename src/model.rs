//! The domain's nouns: sessions, operations and the transcripts that feed them.
//!
//! Everything here is plain data with validation at the edge: a [`SessionId`]
//! can only be built from a string that passes the id rules, so the rest of
//! the crate never re-checks it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest accepted session id, in bytes (all accepted characters are ASCII).
pub const MAX_SESSION_ID_LEN: usize = 128;

/// A live conversation's name: 1–128 characters of `A-Z a-z 0-9 . _ : -`.
///
/// Cheap to clone (shared string), so it can sit in maps, events and views.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

/// Why a string is not a session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionIdError {
    Empty,
    TooLong(usize),
    BadCharacter(char),
}

impl fmt::Display for SessionIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "session id is empty"),
            Self::TooLong(n) => write!(
                f,
                "session id is {n} characters long; at most {MAX_SESSION_ID_LEN} are allowed"
            ),
            Self::BadCharacter(c) => write!(
                f,
                "session id contains {c:?}; only A-Z a-z 0-9 . _ : - are allowed"
            ),
        }
    }
}

impl std::error::Error for SessionIdError {}

impl SessionId {
    /// Validates `raw` and wraps it.
    ///
    /// ```
    /// use inflight::model::{SessionId, SessionIdError};
    ///
    /// assert_eq!(SessionId::parse("sess-0001").unwrap().as_str(), "sess-0001");
    /// assert_eq!(SessionId::parse("a b"), Err(SessionIdError::BadCharacter(' ')));
    /// ```
    pub fn parse(raw: &str) -> Result<Self, SessionIdError> {
        if raw.is_empty() {
            return Err(SessionIdError::Empty);
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(SessionIdError::BadCharacter(bad));
        }
        if raw.len() > MAX_SESSION_ID_LEN {
            return Err(SessionIdError::TooLong(raw.len()));
        }
        Ok(Self(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        SessionId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

pub use crate::ops::Operation;

/// One utterance of a session, as every feed format is mapped to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub session_id: SessionId,
    /// The feed's sequence number, when it sends one; used to drop replays.
    pub seq: Option<u64>,
    pub text: String,
    pub speaker: Option<String>,
    /// Seconds from the session's start.
    pub start: Option<f64>,
    pub end: Option<f64>,
    /// Partial (live, still changing) or final (ingested, counted, triggers work).
    pub is_final: bool,
    /// What kind of session this is (`standup`, `sales_call`), when the feed
    /// says: operations may run for some kinds only. The first kind a
    /// session is given stays.
    pub kind: Option<String>,
}

/// A mind map: a labelled tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MindMapNode {
    pub label: String,
    #[serde(default)]
    pub children: Vec<MindMapNode>,
}

impl MindMapNode {
    pub fn leaf(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            children: Vec::new(),
        }
    }

    /// Number of nodes in the tree, this one included.
    pub fn size(&self) -> usize {
        1 + self.children.iter().map(MindMapNode::size).sum::<usize>()
    }

    /// Levels in the tree; a leaf has depth 1.
    pub fn depth(&self) -> usize {
        1 + self
            .children
            .iter()
            .map(MindMapNode::depth)
            .max()
            .unwrap_or(0)
    }
}

/// Wire shape of a mind map: `{"root": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MindMap {
    pub root: MindMapNode,
}

/// In the API's OpenAPI document: a string of the id rules above.
impl utoipa::PartialSchema for SessionId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_SESSION_ID_LEN))
            .pattern(Some("^[A-Za-z0-9._:-]+$"))
            .description(Some(
                "A session's id: 1 to 128 characters of A-Z a-z 0-9 . _ : -",
            ))
            .into()
    }
}

impl utoipa::ToSchema for SessionId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_follow_the_rules() {
        assert!(SessionId::parse("sess-0001").is_ok());
        assert!(SessionId::parse("a.b_c:d-E9").is_ok());
        assert_eq!(SessionId::parse(""), Err(SessionIdError::Empty));
        assert_eq!(
            SessionId::parse("has space"),
            Err(SessionIdError::BadCharacter(' '))
        );
        assert_eq!(
            SessionId::parse("x\u{1b}[2J"),
            Err(SessionIdError::BadCharacter('\u{1b}'))
        );
        assert!(SessionId::parse(&"a".repeat(128)).is_ok());
        assert_eq!(
            SessionId::parse(&"a".repeat(129)),
            Err(SessionIdError::TooLong(129))
        );
    }
}
