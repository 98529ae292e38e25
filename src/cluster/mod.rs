//! Several instances, one rule: at most one run per (session, operation)
//! across all of them, kept in Redis.
//!
//! Each step of the protocol is one Lua script (see `scripts.rs`), one round
//! trip: take the lease or leave a pending flag, renew, finish (or hand the
//! lease to a follow-up), claim abandoned pending work, keep a result only
//! when its fence is newer. With budgets set, a call's spending is reserved
//! and settled against budgets all instances share (`spend.rs`). The keys
//! and scripts are written down for operators in `docs/cluster.md`.
//!
//! The connection is the `redis` crate's connection manager, which
//! reconnects by itself; every call has a deadline. A call that fails marks
//! the cluster unreachable until one succeeds: callers then start nothing
//! (fail closed) and say so.

pub mod events;
pub(crate) mod scripts;
mod spend;
mod steps;

pub use spend::{Reservation, Reserved};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Client, Script};

use crate::model::{Operation, SessionId};

/// How long one Redis call may take before it counts as unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the cluster lives and how this instance takes part.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Put before every key, so several clusters can share a Redis.
    pub prefix: String,
    /// How long a lease lives without renewal (renewed every third of it).
    pub lease_ttl: Duration,
    /// This instance's name in leases and results: unique per process.
    pub instance: String,
}

/// This machine's clock in microseconds since 1970: the least fence a
/// start takes (see [`scripts::TRY_START`]).
fn clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A name for this process that no other instance has: the host name and
/// the process id.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "inflight".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(48)
        .collect();
    format!("{host}-{}", std::process::id())
}

/// Why a cluster call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis is unreachable: {0}")]
    Unreachable(String),
    #[error("Redis answered something unexpected: {0}")]
    Protocol(String),
    #[error("bad Redis URL: {0}")]
    BadUrl(String),
}

/// A run's hold on its (session, operation), cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub session: SessionId,
    pub op: Operation,
    /// Grows with every run of this (session, op) anywhere: results carry
    /// it, and an older one is refused.
    pub fence: u64,
    token: String,
}

/// Who holds a lease: an instance's name and its run's fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub instance: String,
    pub fence: u64,
}

impl Holder {
    /// Reads a lease's value, `instance/fence`.
    fn parse(token: &str) -> Option<Self> {
        let (instance, fence) = token.rsplit_once('/')?;
        Some(Self {
            instance: instance.to_string(),
            fence: fence.parse().ok()?,
        })
    }
}

/// What `try_start` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Started(Lease),
    /// Another run holds the lease; a pending request is left for it, so
    /// whoever holds it runs once more if it did not cover the generation.
    HeldElsewhere(Holder),
}

/// What `finish` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Released,
    /// Released, and a request is pending for a generation the run did not
    /// cover: another run is wanted (its flag stays for the reconcile loop).
    MoreWanted,
    /// A later run has started: this one changed nothing.
    Lost,
}

/// What [`Cluster::look`] saw of one (session, op).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    /// Who holds the lease, and for how much longer unless renewed.
    pub holder: Option<(Holder, Duration)>,
    /// How the last run that finished ended.
    pub last_end: Option<RunEnd>,
}

/// How a run ended, as the other instances hear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    pub fence: u64,
    pub instance: String,
    /// `ok`, `failed`, `timed_out` or `cancelled`.
    pub outcome: String,
    /// The generation the run read.
    pub covered_generation: u64,
    pub error: Option<String>,
}

/// How a run ended, as `finish` tells the other instances.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    pub covered_generation: u64,
    pub outcome: &'a str,
    pub error: Option<&'a str>,
}

struct Inner {
    config: ClusterConfig,
    connection: ConnectionManager,
    /// A connection of its own for the blocking read of the events stream,
    /// so it never holds up the steps.
    listener: ConnectionManager,
    try_start: Script,
    renew: Script,
    finish: Script,
    abandoned: Script,
    put_result: Script,
    reserve: Script,
    settle: Script,
    reachable: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Bumped on every call that could not reach Redis: the runs holding
    /// leases renew at once, and stop if they cannot.
    trouble: tokio::sync::watch::Sender<u64>,
}

/// The cluster, as this instance sees it. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

/// The keys of one (session, op).
struct Keys {
    lease: String,
    fence: String,
    pending: String,
    pending_set: String,
    result: String,
    last: String,
    /// This (session, op) in the pending set: `op|session` (`|` is never in
    /// a session id).
    member: String,
}

impl Cluster {
    /// Sets up the connection without waiting for Redis: a cluster whose
    /// Redis is down still starts, and says it is unreachable.
    pub fn connect(config: ClusterConfig) -> Result<Self, ClusterError> {
        let client =
            Client::open(config.url.as_str()).map_err(|e| ClusterError::BadUrl(e.to_string()))?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())
            .map_err(|e| ClusterError::Unreachable(e.to_string()))?;
        let listener = ConnectionManager::new_lazy_with_config(
            client,
            manager.set_response_timeout(Some(events::READ_BLOCK + CALL_TIMEOUT)),
        )
        .map_err(|e| ClusterError::Unreachable(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                connection,
                listener,
                try_start: Script::new(scripts::TRY_START),
                renew: Script::new(scripts::RENEW),
                finish: Script::new(scripts::FINISH),
                abandoned: Script::new(scripts::ABANDONED),
                put_result: Script::new(scripts::PUT_RESULT),
                reserve: Script::new(scripts::RESERVE),
                settle: Script::new(scripts::SETTLE),
                reachable: AtomicBool::new(false),
                last_error: Mutex::new(Some("not asked yet".into())),
                trouble: tokio::sync::watch::channel(0).0,
            }),
        })
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// Whether the last call reached Redis.
    pub fn reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::Relaxed)
    }

    /// Why the last call failed, while the cluster is unreachable.
    pub fn last_error(&self) -> Option<String> {
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes whenever a call could not reach Redis.
    pub fn troubles(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.trouble.subscribe()
    }

    fn stream_key(&self) -> String {
        format!("{}events", self.inner.config.prefix)
    }

    fn keys(&self, session: &SessionId, op: Operation) -> Keys {
        let p = &self.inner.config.prefix;
        let (s, o) = (session.as_str(), op.as_str());
        Keys {
            lease: format!("{p}lease:{s}:{o}"),
            fence: format!("{p}fence:{s}:{o}"),
            pending: format!("{p}pending:{s}:{o}"),
            pending_set: format!("{p}pending"),
            result: format!("{p}result:{s}:{o}"),
            last: format!("{p}last:{s}:{o}"),
            member: format!("{o}|{s}"),
        }
    }

    fn ttl_ms(&self) -> u64 {
        self.inner.config.lease_ttl.as_millis() as u64
    }

    fn lease(&self, session: &SessionId, op: Operation, fence: u64) -> Lease {
        Lease {
            session: session.clone(),
            op,
            fence,
            token: format!("{}/{fence}", self.inner.config.instance),
        }
    }

    /// Runs one call with the deadline, keeping `reachable` up to date.
    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        self.call_within(CALL_TIMEOUT, call).await
    }

    async fn call_within<T>(
        &self,
        within: Duration,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        let answer = match tokio::time::timeout(within, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                Err(ClusterError::Unreachable(e.to_string()))
            }
            Ok(Err(e)) if e.is_connection_refusal() => {
                Err(ClusterError::Unreachable(e.to_string()))
            }
            Ok(Err(e)) => Err(ClusterError::Protocol(e.to_string())),
            Err(_) => Err(ClusterError::Unreachable(format!(
                "no answer within {}s",
                within.as_secs()
            ))),
        };
        let reached = !matches!(answer, Err(ClusterError::Unreachable(_)));
        self.inner.reachable.store(reached, Ordering::Relaxed);
        if !reached {
            self.inner.trouble.send_modify(|n| *n += 1);
        }
        let mut last = self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *last = match &answer {
            Err(e) => Some(e.to_string()),
            Ok(_) => None,
        };
        answer
    }

    /// Asks Redis whether it is there.
    pub async fn ping(&self) -> Result<(), ClusterError> {
        let mut connection = self.inner.connection.clone();
        self.call(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await
        .map(|_| ())
    }
}
