//! Readiness: can the engine do its job right now? One typed answer for
//! `/readyz` and the dashboard's header alike.

use serde::Serialize;

use super::{ClusterView, DbView, Engine, FeedState, FeedView, Snapshot};
use crate::llm::BackendInfo;

/// What is ready and what is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// One line per item that is not ready, saying why.
    pub not_ready: Vec<String>,
    /// `open`, `degraded` (writes failing; the engine runs on in memory)
    /// or `none` (`--no-db`).
    pub database: &'static str,
    /// `reachable`, `unreachable` (no run starts: fail closed) or `none`
    /// (no `--redis`).
    pub redis: &'static str,
    pub feeds_connected: usize,
    pub feeds_configured: usize,
    pub llm_reachable: bool,
}

impl Readiness {
    /// Ready when the database is open (if there is one), at least one
    /// feed is connected (or none is dialled), and the LLM backend
    /// answered its last check, and Redis answers (with `--redis`). A
    /// degraded database is said, not counted: the engine works on in
    /// memory while its writer retries.
    pub fn of(
        feeds: &[FeedView],
        llm: &BackendInfo,
        db: Option<&DbView>,
        cluster: Option<&ClusterView>,
    ) -> Self {
        let connected = feeds
            .iter()
            .filter(|f| f.state == FeedState::Connected)
            .count();
        let database = match db {
            None => "none",
            Some(db) if db.degraded => "degraded",
            Some(_) => "open",
        };
        let mut not_ready = Vec::new();
        // Transcripts pushed in never make the engine unready: a pusher
        // waits for readiness before it connects. A connected one counts.
        let dialled = feeds.iter().filter(|f| !f.inbound).count();
        if dialled > 0 && connected == 0 {
            not_ready.push(format!("feeds: none of {dialled} connected"));
        }
        if !llm.reachable {
            not_ready.push(format!("llm: {} did not answer its last check", llm.kind));
        }
        let redis = match cluster {
            None => "none",
            Some(cluster) if cluster.reachable => "reachable",
            Some(cluster) => {
                not_ready.push(format!(
                    "redis: {} is unreachable, no run starts ({})",
                    cluster.redis,
                    cluster.last_error.as_deref().unwrap_or("no answer")
                ));
                "unreachable"
            }
        };
        Readiness {
            ready: not_ready.is_empty(),
            not_ready,
            database,
            redis,
            feeds_connected: connected,
            feeds_configured: feeds.len(),
            llm_reachable: llm.reachable,
        }
    }

    /// The short names of what is not ready: `feeds`, `llm`, `redis`.
    pub fn items(&self) -> impl Iterator<Item = &str> {
        self.not_ready
            .iter()
            .map(|line| line.split_once(':').map(|(item, _)| item).unwrap_or(line))
    }
}

impl Engine {
    /// Whether the engine can do its job right now; see [`Readiness::of`].
    pub fn readiness(&self) -> Readiness {
        let db = self.db().map(DbView::of);
        let cluster = self.cluster_view();
        Readiness::of(
            &self.feeds().views(),
            &self.backend_info(),
            db.as_ref(),
            cluster.as_ref(),
        )
    }
}

impl Snapshot {
    /// The same answer as [`Engine::readiness`], from what the snapshot saw.
    pub fn readiness(&self) -> Readiness {
        Readiness::of(
            &self.feeds,
            &self.backend,
            self.db.as_ref(),
            self.cluster.as_ref(),
        )
    }
}
