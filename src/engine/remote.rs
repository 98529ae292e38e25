//! What comes from the other instances of a cluster, and the work nobody
//! is doing.
//!
//! - [`share_result`] keeps a run's result in Redis under its fence, which
//!   also puts it on the events stream for every instance.
//! - [`listen`] reads that stream: another instance's result is stored here
//!   (and in this instance's database) as if it were made here; another
//!   instance's run end releases the local run that followed it.
//! - [`reconcile`] asks again, every third of the lease TTL, for the work
//!   nobody holds: requests refused while Redis was unreachable, and
//!   pending requests whose lease is gone (their holder died, or finished
//!   wanting more).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::lease::{ClusterLink, RemoteEnd};
use super::{ClusterView, Engine, OpResult, Shared};
use crate::cluster::Lease;
use crate::cluster::events::{ClusterEvent, EventKind};
use crate::events::Event;
use crate::model::{Operation, SessionId};

impl Engine {
    /// Shares the work with the other instances of `cluster` from now on
    /// (once; before any transcript arrives). Then [`Engine::run_cluster`]
    /// must run for the cluster's events to arrive.
    pub fn join_cluster(&self, cluster: crate::cluster::Cluster) -> bool {
        self.shared.cluster.set(ClusterLink::new(cluster)).is_ok()
    }

    /// Reads the other instances' results and run ends, and asks again for
    /// the work nobody holds, until `stop`.
    pub async fn run_cluster(self, stop: tokio_util::sync::CancellationToken) {
        tokio::join!(
            listen(self.shared.clone(), stop.clone()),
            reconcile(self.clone(), stop),
        );
    }

    /// How the cluster is doing, when there is one.
    pub fn cluster_view(&self) -> Option<ClusterView> {
        let link = self.shared.cluster.get()?;
        let config = link.cluster.config();
        Some(ClusterView {
            instance: config.instance.clone(),
            redis: crate::net::redact_url(&config.url),
            reachable: link.cluster.reachable(),
            last_error: link.cluster.last_error(),
            lease_ttl: config.lease_ttl,
            counts: link.counters.counts(),
        })
    }

    /// Asks for a run of `op` the cluster wants and nobody does, when the
    /// session is held here, no local run is in flight, and its newest
    /// result (made anywhere) misses some of its transcripts.
    fn ask_again(&self, session: &SessionId, op: Operation) {
        let covered = self.shared.store.covered(session, op);
        if self.holds(session)
            && covered < self.generation(session)
            && !self.shared.state.is_processing(session, Some(op))
        {
            self.admit(session, op, None);
        }
    }
}

/// Keeps `result` as the lease's run's, cluster-wide; the error says why
/// not (a later run started, or Redis could not be asked: fail closed).
pub(super) async fn share_result(
    link: &ClusterLink,
    lease: &Lease,
    result: &OpResult,
) -> Result<(), String> {
    let body = serde_json::to_string(result).map_err(|e| format!("result not kept: {e}"))?;
    match link.cluster.put_result(lease, &body).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            link.counted_refused_result();
            tracing::warn!(
                session_id = %lease.session,
                op = %lease.op,
                fence = lease.fence,
                "result refused by its fence: a later run of this operation started elsewhere"
            );
            Err(format!(
                "result refused: a later run started while this one (fence {}) was out",
                lease.fence
            ))
        }
        Err(e) => Err(format!(
            "result not kept: its fence could not be checked ({e})"
        )),
    }
}

/// Reads the events stream until `stop`, from its end at start.
pub(super) async fn listen(shared: Arc<Shared>, stop: CancellationToken) {
    let Some(link) = shared.cluster.get() else {
        return;
    };
    let retry = Duration::from_millis(500);
    let mut after = loop {
        match link.cluster.events_head().await {
            Ok(head) => break head,
            Err(e) => {
                tracing::debug!("cluster events: {e}");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
            }
        }
    };
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = link.cluster.read_events(&after) => read,
        };
        match read {
            Ok((last, events)) => {
                after = last;
                for event in events {
                    if event.instance != link.instance() {
                        apply(&shared, link, event);
                    }
                }
            }
            Err(e) => {
                tracing::debug!("cluster events: {e}");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
            }
        }
    }
}

fn apply(shared: &Shared, link: &ClusterLink, event: ClusterEvent) {
    let ClusterEvent {
        instance,
        session,
        op,
        fence,
        kind,
    } = event;
    match kind {
        EventKind::Result { body } => {
            let mut result: OpResult = match serde_json::from_str(&body) {
                Ok(result) => result,
                Err(e) => {
                    tracing::warn!(%instance, session_id = %session, "unreadable result from another instance: {e}");
                    return;
                }
            };
            result.covered_generation =
                link.generation_here(&session, result.covered_generation, &instance, || {
                    shared.store.generation(&session)
                });
            let covered_generation = result.covered_generation;
            let mut write = shared.db.get().is_some().then(|| result.clone());
            // The other instance's run id means nothing here: the result
            // takes the next one of this process when it is kept.
            let kept = shared.store.put_result(&session, op, result, |r| {
                r.run_id = shared.state.take_run_id()
            });
            if let Some(run_id) = kept {
                if let Some(write) = &mut write {
                    write.run_id = run_id;
                }
                link.counted_result_from_others();
                shared.state.note_covered(&session, op, covered_generation);
                if let Some(result) = write {
                    super::durable::write_result(
                        shared,
                        &session,
                        op,
                        &result,
                        Default::default(),
                        Vec::new(),
                    );
                }
                shared.events.emit(Event::ResultReady {
                    session,
                    op,
                    run_id,
                    covered_generation,
                });
            }
        }
        EventKind::Finished {
            outcome,
            covered_generation,
            error,
        } => {
            let outcome = super::lease::outcome_named(&outcome);
            link.remote_end(
                &session,
                op,
                RemoteEnd {
                    fence,
                    instance,
                    outcome,
                    covered_generation,
                    error,
                },
            );
        }
    }
}

/// Asks again for the work nobody holds, every third of the lease TTL.
pub(super) async fn reconcile(engine: Engine, stop: CancellationToken) {
    let Some(link) = engine.shared.cluster.get() else {
        return;
    };
    let mut every = tokio::time::interval(link.renew_every().max(Duration::from_millis(100)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if link.cluster.ping().await.is_err() {
            continue;
        }
        for (session, op) in link.take_deferred() {
            engine.ask_again(&session, op);
        }
        let Ok(pending) = link.cluster.pending().await else {
            continue;
        };
        for (session, op) in pending {
            // Only what this instance can do as well as anyone: it holds
            // the session up to the generation asked for.
            if !engine.holds(&session) || engine.state().is_processing(&session, Some(op)) {
                continue;
            }
            if let Ok(Some(wanted)) = link.cluster.abandoned(&session, op).await
                && engine.generation(&session) >= wanted
            {
                engine.ask_again(&session, op);
            }
        }
    }
}
