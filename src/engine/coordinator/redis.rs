//! The coordinator of a cluster (`--redis`): the lease, the fence, and the
//! other instances' runs.
//!
//! - **Take**: ask Redis for the `(session, op)` lease. Held elsewhere, the
//!   run gives its permit back and follows the holder's run until it ends
//!   (`lease::follow`), then ends the same way; a holder that died leaves
//!   the work to be taken over. Redis unreachable: nothing starts without a
//!   lease (fail closed), and the request is asked again when Redis is back.
//! - **Keep**: a step's result is kept in Redis under the lease's fence,
//!   which also sends it to every instance; a later run's fence refuses it.
//! - **Finish**: release the lease and tell the others how the run ended;
//!   a request left meanwhile by another instance becomes a follow-up here.
//!
//! While a run holds the lease, a [`LeaseKeeper`] renews it; the run stops
//! at once if it is lost, so no two runs of one `(session, op)` overlap.

use super::{Coordinator, Ending, Lost, Reserve, Taking};
use crate::cluster::{Finished, Lease, Reservation, Reserved, Start};
use crate::engine::Shared;
use crate::engine::lease::{self, ClusterLink, Followed, LeaseKeeper, RemoteEnd};
use crate::engine::permits::Permit;
use crate::engine::store::OpResult;
use crate::events::Outcome;
use crate::llm::Usage;
use crate::state::RunGuard;
use std::sync::Arc;

/// Several instances sharing the work through Redis.
pub(in crate::engine) struct Redis {
    pub shared: Arc<Shared>,
}

impl Redis {
    /// The engine's link to the cluster: there is one whenever a `Redis`
    /// coordinator runs (the engine joins before any run starts).
    fn link(&self) -> Option<&ClusterLink> {
        self.shared.cluster.get()
    }
}

/// A cluster step asked of an engine that never joined one.
fn no_cluster() -> String {
    "no cluster: the engine never joined one".into()
}

impl Coordinator for Redis {
    type Claim = Box<LeaseKeeper>;
    type Fence = Lease;
    type Reservation = Option<Reservation>;

    const NUMBERS_RESULTS: bool = true;

    async fn take(&self, guard: &RunGuard, permit: Permit, takeover: bool) -> Taking<Self::Claim> {
        let Some(link) = self.link() else {
            return Taking::Refused {
                outcome: Outcome::Failed,
                error: no_cluster(),
            };
        };
        let (session, op) = (guard.session(), guard.op());
        // Listening before asking, so an end right after is not missed.
        let watching = link.watch((session.clone(), op));
        let generation = self.shared.store.generation(session);
        match link.cluster.try_start(session, op, generation).await {
            Ok(Start::Started(held)) => {
                link.counted_start(takeover);
                guard.mark_held(link.instance());
                Taking::Taken(Box::new(LeaseKeeper::new(link, held)), permit)
            }
            Ok(Start::HeldElsewhere(holder)) => {
                drop(permit);
                match lease::follow(link, &watching, guard, holder).await {
                    Followed::Ended(remote) => {
                        if remote.outcome == Outcome::Cancelled {
                            // A cancelled end brings no follow-up; what was
                            // asked meanwhile is asked again later.
                            link.defer((session.clone(), op));
                        }
                        self.followed(link, guard, remote)
                    }
                    Followed::Stopped => Taking::Stopped,
                    Followed::Abandoned if self.shared.runs.is_closed() => Taking::Refused {
                        outcome: Outcome::Cancelled,
                        error: "the process is stopping: it takes no work over".into(),
                    },
                    Followed::Abandoned => {
                        guard.mark_free();
                        Taking::Abandoned
                    }
                }
            }
            Err(e) => {
                link.counted_refused_start();
                link.defer((session.clone(), op));
                Taking::Refused {
                    outcome: Outcome::Failed,
                    error: format!("not started: no run starts without its lease ({e})"),
                }
            }
        }
    }

    async fn lost(claim: &mut Self::Claim) -> Lost {
        claim.lost().await
    }

    fn after_loss(&self, claim: &Self::Claim, why: &Lost) {
        if let Some(link) = self.link() {
            if let Lost::Unreachable(_) = why {
                link.defer((claim.lease.session.clone(), claim.lease.op));
            }
            link.counted_lost_lease();
        }
        tracing::warn!(
            session_id = %claim.lease.session,
            op = %claim.lease.op,
            "run stopped: {}",
            why.why()
        );
    }

    /// The lease's fence: it grows with every run of the (session, op)
    /// anywhere, so instances agree; run ids are each instance's own.
    fn revision(fence: Option<&Lease>, kept: crate::events::RunId) -> u64 {
        fence.map_or(kept, |lease| lease.fence)
    }

    fn fence(claim: &Self::Claim) -> Lease {
        claim.lease.clone()
    }

    async fn keep(&self, lease: &Lease, result: &OpResult) -> Result<(), String> {
        let link = self.link().ok_or_else(no_cluster)?;
        crate::engine::remote::share_result(link, lease, result).await
    }

    async fn reserve(
        &self,
        lease: &Lease,
        guard: &RunGuard,
        ahead: Usage,
    ) -> Reserve<Option<Reservation>> {
        let budgets = self.shared.ledger.budgets();
        if !budgets.any() {
            return Reserve::Room(None);
        }
        let Some(link) = self.link() else {
            return Reserve::Refused {
                outcome: Outcome::Failed,
                error: no_cluster(),
            };
        };
        let session = guard.session();
        let feed = self
            .shared
            .store
            .feed_of(session)
            .and_then(|index| self.shared.feeds.url_of(index))
            // A feed's credentials stay out of Redis's key names.
            .map(|url| crate::net::redact_url(&url));
        let lifted = self.shared.store.budget_lifted(session);
        match link
            .cluster
            .reserve(lease, feed.as_deref(), ahead, &budgets, lifted)
            .await
        {
            Ok(Reserved::Room(reservation)) => Reserve::Room(Some(reservation)),
            Ok(Reserved::Spent(budget)) => Reserve::Spent(budget),
            Ok(Reserved::Superseded) => Reserve::Refused {
                outcome: Outcome::Cancelled,
                error: "not started: a later run started elsewhere".into(),
            },
            Err(e) => {
                // Nothing is spent unchecked (fail closed); the work is
                // asked for again once Redis answers.
                link.counted_refused_start();
                link.defer((session.clone(), guard.op()));
                Reserve::Refused {
                    outcome: Outcome::Failed,
                    error: format!("not started: the shared budgets cannot be checked ({e})"),
                }
            }
        }
    }

    async fn settle(&self, reservation: Option<Reservation>, spent: Usage) {
        let (Some(reservation), Some(link)) = (reservation, self.link()) else {
            return;
        };
        if let Err(e) = link.cluster.settle(&reservation, spent).await {
            // The estimate stays counted: the budget errs on the safe side.
            tracing::warn!("could not count a call's spending in Redis: {e}");
        }
    }

    async fn finish(&self, claim: Self::Claim, guard: &RunGuard, ending: Ending<'_>) {
        let told = crate::cluster::Ending {
            covered_generation: ending.covered_generation,
            outcome: ending.outcome.as_str(),
            error: ending.error,
        };
        let Some(link) = self.link() else {
            return;
        };
        match link.cluster.finish(&claim.lease, told).await {
            Ok(Finished::Released) => {}
            Ok(Finished::MoreWanted) => {
                guard.want_follow_up();
            }
            Ok(Finished::Lost) => tracing::info!(
                session_id = %guard.session(),
                op = %guard.op(),
                fence = claim.lease.fence,
                "a later run had started elsewhere; this run's end changed nothing there"
            ),
            // The lease expires by itself; a pending request stays for the
            // reconcile loop.
            Err(e) => tracing::warn!(
                session_id = %guard.session(),
                op = %guard.op(),
                "could not give the lease back: {e}"
            ),
        }
    }
}

impl Redis {
    /// The run this one followed ended on another instance: so does this
    /// one, covering what that one covered, as this instance counts it.
    fn followed(
        &self,
        link: &ClusterLink,
        guard: &RunGuard,
        remote: RemoteEnd,
    ) -> Taking<Box<LeaseKeeper>> {
        let covered_generation = link.generation_here(
            guard.session(),
            remote.covered_generation,
            &remote.instance,
            || self.shared.store.generation(guard.session()),
        );
        guard.mark_covered(covered_generation);
        Taking::Followed {
            outcome: remote.outcome,
            error: remote
                .error
                .map(|error| format!("on {}: {error}", remote.instance)),
            covered_generation,
        }
    }
}
