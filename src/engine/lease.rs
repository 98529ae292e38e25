//! The engine's side of a cluster: its link to Redis, the lease a run
//! holds, and following the instance that holds it instead.
//!
//! The Redis coordinator (`coordinator/redis.rs`) says when each is used:
//!
//! - [`LeaseKeeper`] renews a held lease every third of the TTL, and at
//!   once whenever a Redis call failed; a renewal that fails ends the run.
//! - [`follow`]: another instance runs the work. The local run shows as
//!   running there until the stream says how it ended, and ends the same
//!   way, so every instance shows the same runs. If the holder dies, its
//!   lease expires and the follower takes the work over.
//! - [`ClusterLink`] keeps the requests refused while Redis was
//!   unreachable, the local runs that follow others, and the counters.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::coordinator::Lost;
use crate::cluster::{Cluster, Holder, Lease, Look, RunEnd};
use crate::events::Outcome;
use crate::model::{Operation, SessionId};
use crate::state::RunGuard;

type Key = (SessionId, Operation);

/// At most this many sessions are remembered as counted differently (the
/// warning is said once for each; past that, the memory starts afresh).
const TOLD_APART_KEPT: usize = 10_000;

/// What the cluster has done here, since start; only grows.
#[derive(Debug, Default)]
pub(super) struct Counters {
    ran_here: AtomicU64,
    followed: AtomicU64,
    takeovers: AtomicU64,
    lost_leases: AtomicU64,
    refused_results: AtomicU64,
    results_from_others: AtomicU64,
    refused_unreachable: AtomicU64,
    numbering_mismatches: AtomicU64,
}

/// The cluster counters, as views and `/metrics` read them.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct ClusterCounts {
    /// Runs that took the lease here and called the LLM.
    pub ran_here: u64,
    /// Runs that found the lease held and followed another instance's run.
    pub followed: u64,
    /// Runs that took over work whose holder stopped renewing its lease.
    pub takeovers: u64,
    /// Runs stopped because their lease was lost or could not be renewed.
    pub lost_leases: u64,
    /// Results refused by their fence: a later run had started.
    pub refused_results: u64,
    /// Results made by other instances and stored here.
    pub results_from_others: u64,
    /// Runs that could not start because Redis was unreachable.
    pub refused_unreachable: u64,
    /// Sessions another instance counts more transcripts of (it heard the
    /// feed from an earlier point).
    #[serde(default)]
    pub numbering_mismatches: u64,
}

impl Counters {
    pub(super) fn counts(&self) -> ClusterCounts {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClusterCounts {
            ran_here: n(&self.ran_here),
            followed: n(&self.followed),
            takeovers: n(&self.takeovers),
            lost_leases: n(&self.lost_leases),
            refused_results: n(&self.refused_results),
            results_from_others: n(&self.results_from_others),
            refused_unreachable: n(&self.refused_unreachable),
            numbering_mismatches: n(&self.numbering_mismatches),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// How another instance's run ended, from the stream.
#[derive(Debug, Clone)]
pub(super) struct RemoteEnd {
    pub fence: u64,
    pub instance: String,
    pub outcome: Outcome,
    pub covered_generation: u64,
    pub error: Option<String>,
}

impl From<RunEnd> for RemoteEnd {
    fn from(end: RunEnd) -> Self {
        Self {
            fence: end.fence,
            instance: end.instance,
            outcome: outcome_named(&end.outcome),
            covered_generation: end.covered_generation,
            error: end.error,
        }
    }
}

/// An outcome as the cluster writes it; an unknown word counts as failed.
pub(super) fn outcome_named(word: &str) -> Outcome {
    match word {
        "ok" => Outcome::Ok,
        "timed_out" => Outcome::TimedOut,
        "cancelled" => Outcome::Cancelled,
        _ => Outcome::Failed,
    }
}

/// Where the stream reader leaves the end of a run a local one follows.
#[derive(Default)]
struct Watch {
    ended: Mutex<Option<RemoteEnd>>,
    notify: Notify,
}

impl Watch {
    /// The end of the run with `fence` (or of a later one).
    fn ended_for(&self, fence: u64) -> Option<RemoteEnd> {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        ended.as_ref().filter(|end| end.fence >= fence).cloned()
    }
}

/// The engine's side of the cluster.
pub(super) struct ClusterLink {
    pub cluster: Cluster,
    /// The local runs that may follow another instance's, by key.
    watches: Mutex<HashMap<Key, Arc<Watch>>>,
    /// Requests refused while Redis was unreachable, asked again later.
    deferred: Mutex<HashSet<Key>>,
    /// Sessions whose transcripts another instance counts differently,
    /// already said.
    told_apart: Mutex<HashSet<SessionId>>,
    pub counters: Counters,
}

/// Removes a run's watch when the run ends.
pub(super) struct Watching<'a> {
    link: &'a ClusterLink,
    key: Key,
    watch: Arc<Watch>,
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        let mut watches = self.link.watches.lock().unwrap_or_else(|e| e.into_inner());
        if watches
            .get(&self.key)
            .is_some_and(|w| Arc::ptr_eq(w, &self.watch))
        {
            watches.remove(&self.key);
        }
    }
}

impl ClusterLink {
    pub fn new(cluster: Cluster) -> Self {
        Self {
            cluster,
            watches: Mutex::default(),
            deferred: Mutex::default(),
            told_apart: Mutex::default(),
            counters: Counters::default(),
        }
    }

    pub fn instance(&self) -> &str {
        &self.cluster.config().instance
    }

    /// Starts listening for the end of runs of `key` elsewhere. Taken
    /// before asking for the lease, so an end that comes right after the
    /// answer is not missed. (One local run per key at a time: the state
    /// manager's slot.)
    pub fn watch(&self, key: Key) -> Watching<'_> {
        let watch = Arc::new(Watch::default());
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.insert(key.clone(), watch.clone());
        Watching {
            link: self,
            key,
            watch,
        }
    }

    /// The stream says a run of another instance ended: a local run
    /// following it ends the same way.
    pub fn remote_end(&self, session: &SessionId, op: Operation, end: RemoteEnd) {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(watch) = watches.get(&(session.clone(), op)) {
            let mut ended = watch.ended.lock().unwrap_or_else(|e| e.into_inner());
            if ended.as_ref().is_none_or(|old| old.fence < end.fence) {
                *ended = Some(end);
            }
            drop(ended);
            watch.notify.notify_waiters();
        }
    }

    /// Reads another instance's generation of `session` as this one's.
    /// Instances that heard the same feed from the same start count a
    /// session's transcripts alike; one that joined later (or lost its
    /// memory) counts fewer, and an end or result covering more than it
    /// holds is taken as covering what it holds. Said once per session.
    pub fn generation_here(
        &self,
        session: &SessionId,
        theirs: u64,
        instance: &str,
        ours: impl FnOnce() -> u64,
    ) -> u64 {
        let ours = ours();
        if theirs <= ours {
            return theirs;
        }
        let mut told = self.told_apart.lock().unwrap_or_else(|e| e.into_inner());
        if told.len() >= TOLD_APART_KEPT {
            told.clear();
        }
        if told.insert(session.clone()) {
            bump(&self.counters.numbering_mismatches);
            tracing::warn!(
                session_id = %session,
                %instance,
                theirs,
                ours,
                "instances count this session's transcripts differently: this one joined \
                 its feed later; it shows the others' results as covering what it holds"
            );
        }
        ours
    }

    /// Keeps a request for when Redis answers again.
    pub fn defer(&self, key: Key) {
        let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        deferred.insert(key);
    }

    /// The requests refused while Redis was unreachable, now to be asked again.
    pub fn take_deferred(&self) -> Vec<Key> {
        let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        deferred.drain().collect()
    }

    pub fn counted_refused_start(&self) {
        bump(&self.counters.refused_unreachable);
    }

    pub fn counted_result_from_others(&self) {
        bump(&self.counters.results_from_others);
    }

    pub fn counted_refused_result(&self) {
        bump(&self.counters.refused_results);
    }

    pub fn counted_lost_lease(&self) {
        bump(&self.counters.lost_leases);
    }

    pub fn counted_start(&self, takeover: bool) {
        bump(&self.counters.ran_here);
        if takeover {
            bump(&self.counters.takeovers);
        }
    }

    /// How often a held lease is renewed: a third of its TTL.
    pub fn renew_every(&self) -> Duration {
        (self.cluster.config().lease_ttl / 3).max(Duration::from_millis(10))
    }
}

/// Renews a held lease for as long as the run polls it.
pub(super) struct LeaseKeeper {
    pub lease: Lease,
    cluster: Cluster,
    every: tokio::time::Interval,
    troubles: tokio::sync::watch::Receiver<u64>,
}

impl LeaseKeeper {
    pub fn new(link: &ClusterLink, lease: Lease) -> Self {
        let every = link.renew_every();
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut troubles = link.cluster.troubles();
        troubles.borrow_and_update();
        Self {
            lease,
            cluster: link.cluster.clone(),
            every: interval,
            troubles,
        }
    }

    /// Renews the lease on time (and at once after any failed Redis call);
    /// returns only when it is lost, with why. Cancel-safe: a renewal cut
    /// short is simply made again.
    pub async fn lost(&mut self) -> Lost {
        loop {
            tokio::select! {
                _ = self.every.tick() => {}
                changed = self.troubles.changed() => {
                    if changed.is_err() {
                        // The cluster handle is gone: so is the lease.
                        return Lost::Unreachable("the cluster connection closed".into());
                    }
                    self.troubles.borrow_and_update();
                }
            }
            match self.cluster.renew(&self.lease).await {
                Ok(true) => {}
                Ok(false) => {
                    return Lost::Taken(format!(
                        "lost its lease (fence {}): a later run of this operation started",
                        self.lease.fence
                    ));
                }
                Err(e) => return Lost::Unreachable(format!("could not renew its lease: {e}")),
            }
        }
    }
}

/// How following another instance's run turned out.
pub(super) enum Followed {
    /// It ended; this run ends the same way.
    Ended(RemoteEnd),
    /// Its lease is gone with no end heard (the holder died): this run
    /// should take the work over.
    Abandoned,
    /// The operator stopped this run.
    Stopped,
}

/// Follows `holder`'s run of the guard's `(session, op)` until it ends:
/// the stream's word of its end, or, asked of Redis when the lease should
/// have expired (at most every third of the TTL), its end kept beside the
/// lease. A lease gone with no end means the holder died: noticed within
/// one TTL of its last renewal.
pub(super) async fn follow(
    link: &ClusterLink,
    watching: &Watching<'_>,
    guard: &RunGuard,
    mut holder: Holder,
) -> Followed {
    let (session, op) = (guard.session(), guard.op());
    let watch = &watching.watch;
    let cancel = guard.cancel_token();
    if !guard.mark_elsewhere(&holder.instance) {
        return Followed::Stopped;
    }
    bump(&link.counters.followed);
    let most = link.renew_every();
    let mut check_in = most;
    loop {
        let notified = watch.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(end) = watch.ended_for(holder.fence) {
            return Followed::Ended(end);
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Followed::Stopped,
            _ = &mut notified => continue,
            _ = tokio::time::sleep(check_in) => {}
        }
        match link.cluster.look(session, op).await {
            Ok(Look {
                holder: Some((now, left)),
                ..
            }) => {
                if now != holder {
                    holder = now;
                    guard.mark_elsewhere(&holder.instance);
                }
                check_in = (left + Duration::from_millis(20)).min(most);
            }
            Ok(Look {
                holder: None,
                last_end,
            }) => {
                // `finish` drops the lease and writes the end in one step:
                // no end of this run (or a later one) means its holder died.
                return match last_end.filter(|end| end.fence >= holder.fence) {
                    Some(end) => Followed::Ended(RemoteEnd::from(end)),
                    None => Followed::Abandoned,
                };
            }
            // Fail closed: keep following, ask again soon.
            Err(_) => check_in = Duration::from_secs(1).min(most),
        }
    }
}
