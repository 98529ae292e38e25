//! What `inflight attach` draws, sent as changes.
//!
//! `GET /api/dashboard?since=V&epoch=E` answers the engine's snapshot with
//! only the session rows that changed since version `V` of this server's
//! row journal, and the ids of the sessions gone since. Times travel as
//! [`crate::monotime`] milliseconds, so a row that did not change is the
//! same bytes and is not sent again: an idle server answers with its header
//! alone. A first request, another server's epoch, or a version older than
//! the removals kept gets everything (`full`).
//!
//! `GET /api/dashboard/sessions/{id}` is one session's details (memory, else
//! the database) in the same form.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{ApiError, ApiState, Role, history, session_id};
use crate::engine::{SessionDetail, SessionRow, Snapshot};
use crate::model::SessionId;

/// A snapshot is taken and diffed at most this often, however many clients ask.
pub const REBUILD_EVERY: Duration = Duration::from_millis(250);
/// Removals kept for clients that ask later; one further behind gets everything.
const REMOVALS_KEPT: usize = 100_000;
/// Transcripts in a session's details.
const DETAIL_TRANSCRIPTS: usize = 40;

/// One answer of `/api/dashboard`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DashboardDelta {
    /// This server's journal: another epoch means another process.
    pub epoch: u64,
    pub version: u64,
    /// `snapshot.sessions` holds every session, not only the changed ones.
    pub full: bool,
    /// The server's now, in its monotime milliseconds.
    pub now: i64,
    /// What the caller's token may do.
    pub role: Role,
    /// The engine; `sessions` holds the rows changed since `since`. Its
    /// form is `inflight attach`'s own and follows the server's version.
    #[schema(value_type = Object)]
    pub snapshot: Snapshot,
    /// Sessions gone since `since`.
    pub removed: Vec<SessionId>,
}

/// One answer of `/api/dashboard/sessions/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DetailAnswer {
    pub now: i64,
    /// Read from the database: memory has forgotten the session.
    pub from_disk: bool,
    /// In `inflight attach`'s own form, which follows the server's version.
    #[schema(value_type = Object)]
    pub detail: SessionDetail,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeltaParams {
    /// The `version` of the last answer: only rows changed since come.
    #[param(maximum = 9007199254740991.0)]
    #[serde(default, deserialize_with = "super::errors::query_number")]
    since: Option<u64>,
    /// The `epoch` of the last answer: another one gets everything.
    #[param(maximum = 9007199254740991.0)]
    #[serde(default, deserialize_with = "super::errors::query_number")]
    epoch: Option<u64>,
}

/// The rows as last sent, by hash, with the version each changed at.
pub struct RowJournal {
    inner: Mutex<Journal>,
}

struct Journal {
    epoch: u64,
    version: u64,
    built_at: Option<Instant>,
    /// The last snapshot without its rows (cheap to copy into an answer).
    header: Snapshot,
    rows: Vec<SessionRow>,
    /// The version each of `rows` last changed at.
    changed_at: Vec<u64>,
    hashes: HashMap<SessionId, u64>,
    removed: VecDeque<(u64, SessionId)>,
    removals_kept: usize,
    /// A client at a version below this may have missed a removal.
    removed_floor: u64,
}

impl RowJournal {
    pub fn new(empty: Snapshot) -> Self {
        Self::keeping(empty, REMOVALS_KEPT)
    }

    /// A journal that remembers `removals_kept` removals (tests use few).
    pub fn keeping(mut empty: Snapshot, removals_kept: usize) -> Self {
        empty.sessions.clear();
        Self {
            inner: Mutex::new(Journal {
                // Within what a JSON number holds exactly, for every client.
                epoch: fastrand::u64(1..1 << 53),
                version: 0,
                built_at: None,
                header: empty,
                rows: Vec::new(),
                changed_at: Vec::new(),
                hashes: HashMap::new(),
                removed: VecDeque::new(),
                removals_kept,
                removed_floor: 0,
            }),
        }
    }

    /// The answer for a client at `since` of `epoch`, after bringing the
    /// journal up to date if it is older than [`REBUILD_EVERY`].
    pub fn delta(
        &self,
        take: impl FnOnce() -> Snapshot,
        since: Option<u64>,
        epoch: Option<u64>,
        role: Role,
    ) -> DashboardDelta {
        let mut journal = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if journal
            .built_at
            .is_none_or(|at| at.elapsed() >= REBUILD_EVERY)
        {
            journal.rebuild(take());
        }
        let full = match (since, epoch) {
            (Some(since), Some(epoch)) => {
                epoch != journal.epoch || since > journal.version || since < journal.removed_floor
            }
            _ => true,
        };
        let since = if full { 0 } else { since.unwrap_or(0) };
        let sessions = journal
            .rows
            .iter()
            .zip(&journal.changed_at)
            .filter(|(_, at)| **at > since)
            .map(|(row, _)| row.clone())
            .collect();
        let snapshot = Snapshot {
            sessions,
            ..journal.header.clone()
        };
        let removed = if full {
            Vec::new()
        } else {
            journal
                .removed
                .iter()
                .filter(|(at, _)| *at > since)
                .map(|(_, id)| id.clone())
                .collect()
        };
        DashboardDelta {
            epoch: journal.epoch,
            version: journal.version,
            full,
            now: crate::monotime::now_millis(),
            role,
            snapshot,
            removed,
        }
    }
}

impl Journal {
    fn rebuild(&mut self, mut snapshot: Snapshot) {
        self.version += 1;
        let version = self.version;
        let rows = std::mem::take(&mut snapshot.sessions);
        let mut hashes = HashMap::with_capacity(rows.len());
        let mut changed_at = Vec::with_capacity(rows.len());
        let previous: HashMap<&SessionId, u64> = self
            .rows
            .iter()
            .zip(&self.changed_at)
            .map(|(row, at)| (&row.id, *at))
            .collect();
        for row in &rows {
            let hash = row_hash(row);
            let unchanged = self.hashes.get(&row.id) == Some(&hash);
            changed_at.push(match previous.get(&row.id) {
                Some(at) if unchanged => *at,
                _ => version,
            });
            hashes.insert(row.id.clone(), hash);
        }
        for id in self.hashes.keys() {
            if !hashes.contains_key(id) {
                self.removed.push_back((version, id.clone()));
            }
        }
        while self.removed.len() > self.removals_kept {
            if let Some((at, _)) = self.removed.pop_front() {
                self.removed_floor = at;
            }
        }
        self.hashes = hashes;
        self.changed_at = changed_at;
        self.rows = rows;
        self.header = snapshot;
        self.built_at = Some(Instant::now());
    }
}

/// A row's wire bytes, hashed: equal bytes, equal rows.
fn row_hash(row: &crate::engine::SessionRow) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(row)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// What `inflight attach` draws: the engine's snapshot with the rows
/// changed since a version of this server's journal.
#[utoipa::path(get, path = "/api/dashboard", tag = "dashboard",
    params(DeltaParams),
    responses((status = 200, body = DashboardDelta)),
    security(("operator" = []), ("viewer" = [])))]
pub(super) async fn delta(
    State(state): State<ApiState>,
    Extension(role): Extension<Role>,
    Query(params): Query<DeltaParams>,
) -> Response {
    let engine = state.engine.clone();
    let answer = state
        .rows
        .delta(|| engine.snapshot(), params.since, params.epoch, role);
    axum::Json(answer).into_response()
}

/// One session's details in the dashboard's form.
#[utoipa::path(get, path = "/api/dashboard/sessions/{session_id}", tag = "dashboard",
    params(("session_id" = SessionId, Path, description = "The session")),
    responses(
        (status = 200, body = DetailAnswer),
        (status = 400, description = "Not a session id", body = super::errors::ErrorJson),
        (status = 404, description = "No such session, in memory or in the database", body = super::errors::ErrorJson),
    ),
    security(("operator" = []), ("viewer" = [])))]
pub(super) async fn detail(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let session = session_id(&raw)?;
    let (detail, from_disk) = match history::held(&state, &session, DETAIL_TRANSCRIPTS).await? {
        Some(detail) => (detail, false),
        None => match history::forgotten(&state, &session).await? {
            Some(detail) => (detail, true),
            None => {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!("no session {session}"),
                ));
            }
        },
    };
    Ok(axum::Json(DetailAnswer {
        now: crate::monotime::now_millis(),
        from_disk,
        detail,
    })
    .into_response())
}
