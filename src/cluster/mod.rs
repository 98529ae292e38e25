//! Several instances, one rule: at most one run per (session, operation)
//! across all of them, kept in Redis.
//!
//! Each step of the protocol is one Lua script (see [`scripts`]), one round
//! trip: take the lease or leave a pending flag, renew, finish (or hand the
//! lease to a follow-up), claim abandoned pending work, keep a result only
//! when its fence is newer. The keys and scripts are written down for
//! operators in `docs/cluster.md`.
//!
//! The connection is the `redis` crate's connection manager, which
//! reconnects by itself; every call has a deadline. A call that fails marks
//! the cluster unreachable until one succeeds: callers then start nothing
//! (fail closed) and say so.

pub mod scripts;

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

/// What `try_start` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Started(Lease),
    /// Another run holds the lease (`instance/fence`); a pending flag is
    /// left for it, so its holder (or whoever takes over) runs once more.
    HeldElsewhere {
        holder: String,
    },
}

/// What `finish` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    Released,
    /// A request was pending: this instance holds the follow-up's lease.
    FollowUp(Lease),
    /// The lease was no longer this run's (it expired, another took over).
    Lost,
}

struct Inner {
    config: ClusterConfig,
    connection: ConnectionManager,
    try_start: Script,
    renew: Script,
    finish: Script,
    claim: Script,
    put_result: Script,
    reachable: AtomicBool,
    last_error: Mutex<Option<String>>,
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
    /// This (session, op) in the pending set: `op|session` (`|` is never in
    /// a session id).
    member: String,
}

impl Keys {
    /// `script` with the four keys the steps that start, finish or claim a
    /// run read: lease, fence, pending flag, pending set.
    fn on_state<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.lease)
            .key(&self.fence)
            .key(&self.pending)
            .key(&self.pending_set);
        invocation
    }
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
        let connection = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| ClusterError::Unreachable(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                connection,
                try_start: Script::new(scripts::TRY_START),
                renew: Script::new(scripts::RENEW),
                finish: Script::new(scripts::FINISH),
                claim: Script::new(scripts::CLAIM),
                put_result: Script::new(scripts::PUT_RESULT),
                reachable: AtomicBool::new(false),
                last_error: Mutex::new(Some("not asked yet".into())),
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

    fn keys(&self, session: &SessionId, op: Operation) -> Keys {
        let p = &self.inner.config.prefix;
        let (s, o) = (session.as_str(), op.as_str());
        Keys {
            lease: format!("{p}lease:{s}:{o}"),
            fence: format!("{p}fence:{s}:{o}"),
            pending: format!("{p}pending:{s}:{o}"),
            pending_set: format!("{p}pending"),
            result: format!("{p}result:{s}:{o}"),
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
        let answer = match tokio::time::timeout(CALL_TIMEOUT, call).await {
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
                CALL_TIMEOUT.as_secs()
            ))),
        };
        let reached = !matches!(answer, Err(ClusterError::Unreachable(_)));
        self.inner.reachable.store(reached, Ordering::Relaxed);
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

    /// Takes the lease of (session, op) for a new run, or leaves the
    /// pending flag when another run holds it.
    pub async fn try_start(
        &self,
        session: &SessionId,
        op: Operation,
    ) -> Result<Start, ClusterError> {
        let keys = self.keys(session, op);
        let mut connection = self.inner.connection.clone();
        let mut invocation = keys.on_state(&self.inner.try_start);
        invocation
            .arg(&self.inner.config.instance)
            .arg(self.ttl_ms())
            .arg(&keys.member);
        let (started, value): (i64, redis::Value) =
            self.call(invocation.invoke_async(&mut connection)).await?;
        if started == 1 {
            let fence: u64 = redis::from_redis_value(value)
                .map_err(|e| ClusterError::Protocol(e.to_string()))?;
            Ok(Start::Started(self.lease(session, op, fence)))
        } else {
            let holder: String = redis::from_redis_value(value).unwrap_or_default();
            Ok(Start::HeldElsewhere { holder })
        }
    }

    /// Renews `lease` for another TTL; `false` when it is no longer ours
    /// (the run must stop at once).
    pub async fn renew(&self, lease: &Lease) -> Result<bool, ClusterError> {
        let keys = self.keys(&lease.session, lease.op);
        let mut connection = self.inner.connection.clone();
        let script = &self.inner.renew;
        let renewed: i64 = self
            .call(async {
                script
                    .key(&keys.lease)
                    .arg(&lease.token)
                    .arg(self.ttl_ms())
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(renewed == 1)
    }

    /// Ends the run holding `lease`: releases it, or hands it to a
    /// follow-up run on this instance when a request was left pending.
    pub async fn finish(&self, lease: &Lease) -> Result<Finished, ClusterError> {
        let keys = self.keys(&lease.session, lease.op);
        let mut connection = self.inner.connection.clone();
        let mut invocation = keys.on_state(&self.inner.finish);
        invocation
            .arg(&lease.token)
            .arg(&self.inner.config.instance)
            .arg(self.ttl_ms())
            .arg(&keys.member);
        let answer: Vec<i64> = self.call(invocation.invoke_async(&mut connection)).await?;
        match answer.as_slice() {
            [0] => Ok(Finished::Released),
            [1, fence] => Ok(Finished::FollowUp(self.lease(
                &lease.session,
                lease.op,
                *fence as u64,
            ))),
            [-1] => Ok(Finished::Lost),
            other => Err(ClusterError::Protocol(format!("finish answered {other:?}"))),
        }
    }

    /// The (session, op)s with a pending flag, as the reconcile loop sees
    /// them.
    pub async fn pending(&self) -> Result<Vec<(SessionId, Operation)>, ClusterError> {
        let set = format!("{}pending", self.inner.config.prefix);
        let mut connection = self.inner.connection.clone();
        let members: Vec<String> = self
            .call(async {
                redis::cmd("SMEMBERS")
                    .arg(&set)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(members
            .iter()
            .filter_map(|m| {
                let (op, session) = m.split_once('|')?;
                Some((SessionId::parse(session).ok()?, Operation::parse(op)?))
            })
            .collect())
    }

    /// Takes pending work whose lease is gone; `None` when a lease is still
    /// held or nothing is pending any more.
    pub async fn claim(
        &self,
        session: &SessionId,
        op: Operation,
    ) -> Result<Option<Lease>, ClusterError> {
        let keys = self.keys(session, op);
        let mut connection = self.inner.connection.clone();
        let mut invocation = keys.on_state(&self.inner.claim);
        invocation
            .arg(&self.inner.config.instance)
            .arg(self.ttl_ms())
            .arg(&keys.member);
        let answer: Vec<i64> = self.call(invocation.invoke_async(&mut connection)).await?;
        Ok(match answer.as_slice() {
            [1, fence] => Some(self.lease(session, op, *fence as u64)),
            _ => None,
        })
    }

    /// Keeps `body` as the result of (session, op) if `fence` is newer than
    /// the kept one's; `false` when refused as older.
    pub async fn put_result(
        &self,
        session: &SessionId,
        op: Operation,
        fence: u64,
        body: &str,
    ) -> Result<bool, ClusterError> {
        let keys = self.keys(session, op);
        let mut connection = self.inner.connection.clone();
        let script = &self.inner.put_result;
        let kept: i64 = self
            .call(async {
                script
                    .key(&keys.result)
                    .arg(fence)
                    .arg(&self.inner.config.instance)
                    .arg(body)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(kept == 1)
    }

    /// The kept result of (session, op): its fence, instance and body.
    pub async fn result(
        &self,
        session: &SessionId,
        op: Operation,
    ) -> Result<Option<(u64, String, String)>, ClusterError> {
        let keys = self.keys(session, op);
        let mut connection = self.inner.connection.clone();
        let (fence, instance, body): (Option<u64>, Option<String>, Option<String>) = self
            .call(async {
                redis::cmd("HMGET")
                    .arg(&keys.result)
                    .arg("fence")
                    .arg("instance")
                    .arg("body")
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(match (fence, instance, body) {
            (Some(f), Some(i), Some(b)) => Some((f, i, b)),
            _ => None,
        })
    }
}
