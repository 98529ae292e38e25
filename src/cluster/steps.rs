//! The steps of the protocol, one Lua script (or one pipelined read) each:
//! starting a run or leaving a pending request, renewing, finishing,
//! looking at a lease, finding abandoned work, keeping a result.

use std::time::Duration;

use super::{
    Cluster, ClusterError, Ending, Finished, Holder, Lease, Look, RunEnd, Start, clock_micros,
    events, scripts,
};
use crate::model::{Operation, SessionId};

impl Cluster {
    /// Takes the lease of (session, op) for a new run, or leaves a pending
    /// request for `generation` when another run holds it.
    pub async fn try_start(
        &self,
        session: &SessionId,
        op: Operation,
        generation: u64,
    ) -> Result<Start, ClusterError> {
        let keys = self.keys(session, op);
        let mut connection = self.inner.connection.clone();
        let mut invocation = self.inner.try_start.prepare_invoke();
        invocation
            .key(&keys.lease)
            .key(&keys.fence)
            .key(&keys.pending)
            .key(&keys.pending_set)
            .arg(&self.inner.config.instance)
            .arg(self.ttl_ms())
            .arg(&keys.member)
            .arg(generation)
            .arg(scripts::KEY_TTL_MS)
            .arg(clock_micros());
        let (started, value): (i64, redis::Value) =
            self.call(invocation.invoke_async(&mut connection)).await?;
        if started == 1 {
            let fence: String = redis::from_redis_value(value)
                .map_err(|e| ClusterError::Protocol(e.to_string()))?;
            let fence: u64 = fence
                .parse()
                .map_err(|_| ClusterError::Protocol(format!("a fence reads {fence:?}")))?;
            return Ok(Start::Started(self.lease(session, op, fence)));
        }
        let token: String =
            redis::from_redis_value(value).map_err(|e| ClusterError::Protocol(e.to_string()))?;
        Holder::parse(&token)
            .map(Start::HeldElsewhere)
            .ok_or_else(|| ClusterError::Protocol(format!("a lease reads {token:?}")))
    }

    /// Renews `lease` for another TTL; `false` when a later run has
    /// started (this one must stop at once).
    pub async fn renew(&self, lease: &Lease) -> Result<bool, ClusterError> {
        let keys = self.keys(&lease.session, lease.op);
        let mut connection = self.inner.connection.clone();
        let mut invocation = self.inner.renew.prepare_invoke();
        invocation
            .key(&keys.lease)
            .key(&keys.fence)
            .arg(&lease.token)
            .arg(self.ttl_ms())
            .arg(lease.fence);
        let renewed: i64 = self.call(invocation.invoke_async(&mut connection)).await?;
        Ok(renewed == 1)
    }

    /// Ends the run holding `lease` and tells the other instances how.
    pub async fn finish(
        &self,
        lease: &Lease,
        ending: Ending<'_>,
    ) -> Result<Finished, ClusterError> {
        let keys = self.keys(&lease.session, lease.op);
        let mut connection = self.inner.connection.clone();
        let mut invocation = self.inner.finish.prepare_invoke();
        invocation
            .key(&keys.lease)
            .key(&keys.fence)
            .key(&keys.pending)
            .key(&keys.pending_set)
            .key(self.stream_key())
            .key(&keys.last)
            .arg(&lease.token)
            .arg(lease.fence)
            .arg(ending.covered_generation)
            .arg(&keys.member)
            .arg(events::STREAM_LENGTH)
            .arg(&self.inner.config.instance)
            .arg(lease.session.as_str())
            .arg(lease.op.as_str())
            .arg(ending.outcome)
            .arg(ending.error.unwrap_or(""))
            .arg(scripts::KEY_TTL_MS);
        let answer: i64 = self.call(invocation.invoke_async(&mut connection)).await?;
        match answer {
            0 => Ok(Finished::Released),
            1 => Ok(Finished::MoreWanted),
            -1 => Ok(Finished::Lost),
            other => Err(ClusterError::Protocol(format!("finish answered {other}"))),
        }
    }

    /// Who holds the lease of (session, op) now and for how much longer
    /// unless renewed, and how its last run ended.
    pub async fn look(&self, session: &SessionId, op: Operation) -> Result<Look, ClusterError> {
        let keys = self.keys(session, op);
        let mut connection = self.inner.connection.clone();
        type Last = (
            Option<u64>,
            Option<String>,
            Option<String>,
            Option<u64>,
            Option<String>,
        );
        // In this order: `finish` drops the lease and writes `last` in one
        // step, so a lease seen gone has its end written already.
        let (token, ttl, last): (Option<String>, i64, Last) = self
            .call(async {
                redis::pipe()
                    .get(&keys.lease)
                    .pttl(&keys.lease)
                    .cmd("HMGET")
                    .arg(&keys.last)
                    .arg(&["fence", "instance", "outcome", "covered", "error"][..])
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        let holder = token.and_then(|token| {
            let left = Duration::from_millis(u64::try_from(ttl).unwrap_or(0));
            Some((Holder::parse(&token)?, left))
        });
        let last_end = match last {
            (Some(fence), Some(instance), Some(outcome), Some(covered_generation), error) => {
                Some(RunEnd {
                    fence,
                    instance,
                    outcome,
                    covered_generation,
                    error: error.filter(|e| !e.is_empty()),
                })
            }
            _ => None,
        };
        Ok(Look { holder, last_end })
    }

    /// The (session, op)s with a pending request, as the reconcile loop
    /// sees them.
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
                Some((
                    SessionId::parse(session).ok()?,
                    crate::ops::registry().parse(op)?,
                ))
            })
            .collect())
    }

    /// The generation a pending request of (session, op) asks for, when no
    /// lease is held: work nobody is doing (its holder died, or finished
    /// wanting more). `None` otherwise.
    pub async fn abandoned(
        &self,
        session: &SessionId,
        op: Operation,
    ) -> Result<Option<u64>, ClusterError> {
        let keys = self.keys(session, op);
        let mut connection = self.inner.connection.clone();
        let mut invocation = self.inner.abandoned.prepare_invoke();
        invocation
            .key(&keys.lease)
            .key(&keys.pending)
            .key(&keys.pending_set)
            .arg(&keys.member);
        let wanted: i64 = self.call(invocation.invoke_async(&mut connection)).await?;
        Ok(u64::try_from(wanted).ok())
    }

    /// Keeps `body` as the result of `lease`'s run, and sends it to every
    /// instance, if that run is still current and newer than the kept
    /// result; `false` when refused.
    pub async fn put_result(&self, lease: &Lease, body: &str) -> Result<bool, ClusterError> {
        let keys = self.keys(&lease.session, lease.op);
        let mut connection = self.inner.connection.clone();
        let mut invocation = self.inner.put_result.prepare_invoke();
        invocation
            .key(&keys.result)
            .key(&keys.fence)
            .key(self.stream_key())
            .arg(lease.fence)
            .arg(&self.inner.config.instance)
            .arg(body)
            .arg(events::STREAM_LENGTH)
            .arg(lease.session.as_str())
            .arg(lease.op.as_str())
            .arg(scripts::KEY_TTL_MS);
        let kept: i64 = self.call(invocation.invoke_async(&mut connection)).await?;
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
