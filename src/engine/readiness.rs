//! Readiness: can the engine do its job right now? One typed answer for
//! `/readyz` and the dashboard's header alike.

use serde::Serialize;

use super::{Engine, FeedState};

/// What is ready and what is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// One line per item that is not ready, saying why.
    pub not_ready: Vec<String>,
    /// `open`, `degraded` (writes failing; the engine runs on in memory)
    /// or `none` (`--no-db`).
    pub database: &'static str,
    pub feeds_connected: usize,
    pub feeds_configured: usize,
    pub llm_reachable: bool,
}

impl Engine {
    /// Ready when the database is open (if there is one), at least one
    /// feed is connected (or none is configured), and the LLM backend
    /// answered its last check.
    pub fn readiness(&self) -> Readiness {
        let feeds = self.feeds().views();
        let connected = feeds
            .iter()
            .filter(|f| f.state == FeedState::Connected)
            .count();
        let llm = self.backend_info();
        let database = match self.db() {
            None => "none",
            Some(db) if db.health().degraded() => "degraded",
            Some(_) => "open",
        };
        let mut not_ready = Vec::new();
        if !feeds.is_empty() && connected == 0 {
            not_ready.push(format!("feeds: none of {} connected", feeds.len()));
        }
        if !llm.reachable {
            not_ready.push(format!("llm: {} did not answer its last check", llm.kind));
        }
        Readiness {
            ready: not_ready.is_empty(),
            not_ready,
            database,
            feeds_connected: connected,
            feeds_configured: feeds.len(),
            llm_reachable: llm.reachable,
        }
    }
}
