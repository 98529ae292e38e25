//! The outbox: the deliveries waiting to go out, per endpoint and
//! (session, op, event) one slot.
//!
//! A slot holds at most one delivery waiting and remembers the revision in
//! flight. A newer delivery replaces the one waiting (counted as
//! superseded); an older one is dropped. A delivery that failed goes back
//! only if nothing newer came meanwhile. One attempt per slot is in flight
//! at a time, so a receiver never gets a revision after a newer one.
//!
//! The outbox is bounded by the deliveries waiting, across endpoints: past
//! the bound a new slot is refused and counted (a waiting one is never
//! thrown out for it). Given-up deliveries become dead letters, the newest
//! [`DEAD_KEPT`] of them kept for the API and the dashboard.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::EventKind;
use crate::model::{Operation, SessionId};

/// Dead letters kept in memory (the database keeps them all).
pub const DEAD_KEPT: usize = 100;

/// Where a delivery goes and what it is about: one slot of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub endpoint: usize,
    pub session: SessionId,
    /// None for a session's own events (`session_end`).
    pub op: Option<Operation>,
    pub event: EventKind,
}

/// One delivery: a body for an endpoint, and its attempts so far.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key: Key,
    pub revision: u64,
    pub id: String,
    pub body: Arc<str>,
    /// When its event happened: its age counts from here.
    pub created: SystemTime,
    pub attempts: u32,
    /// Not sent before this (a retry's backoff).
    pub not_before: Instant,
    pub last_error: Option<String>,
}

impl Delivery {
    pub fn new(key: Key, revision: u64, id: String, body: Arc<str>, created: SystemTime) -> Self {
        Self {
            key,
            revision,
            id,
            body,
            created,
            attempts: 0,
            not_before: Instant::now(),
            last_error: None,
        }
    }
}

/// A delivery given up: kept to be read, never sent again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub endpoint: usize,
    pub id: String,
    pub event: EventKind,
    pub session_id: String,
    pub operation: Option<String>,
    pub revision: u64,
    pub attempts: u32,
    pub error: String,
    /// Unix seconds.
    pub created_at: f64,
    pub died_at: f64,
}

/// One endpoint's counters, since start; only grow.
#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    superseded: AtomicU64,
    dead: AtomicU64,
    overflow: AtomicU64,
}

/// One endpoint as views and `/metrics` read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointView {
    pub url: String,
    pub events: Vec<EventKind>,
    /// Deliveries the receiver took (2xx).
    pub delivered: u64,
    /// Attempts that failed (each retry's too).
    pub failed: u64,
    /// Failed attempts put back to be tried again.
    pub retried: u64,
    /// Deliveries dropped because a newer one of the same slot came first.
    pub superseded: u64,
    /// Deliveries given up (dead letters).
    pub dead: u64,
    /// Deliveries refused because the outbox was full.
    pub overflow: u64,
    /// Waiting or in flight now.
    pub pending: u64,
    /// The age of the oldest of them, in seconds.
    pub oldest_pending_seconds: Option<f64>,
    /// The newest dead letter's delivery and why it was given up.
    #[serde(default)]
    pub last_dead: Option<String>,
}

#[derive(Default)]
struct Slot {
    waiting: Option<Delivery>,
    /// The revision of the attempt out now.
    in_flight: Option<(u64, SystemTime)>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<Key, Slot>,
    waiting: usize,
    dead: VecDeque<DeadLetter>,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterFailure {
    /// Back in its slot, to be tried at its `not_before`.
    Retrying,
    /// A newer delivery came meanwhile: this one is dropped.
    Superseded,
    /// Given up.
    Dead(DeadLetter),
}

/// The deliveries waiting, per slot; see the module docs.
pub struct Outbox {
    inner: Mutex<Inner>,
    counters: Vec<Counters>,
    /// Wakes an endpoint's sender when a delivery comes.
    wake: Vec<Notify>,
    max_pending: usize,
}

fn unix(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Outbox {
    pub fn new(endpoints: usize, max_pending: usize) -> Self {
        Self {
            inner: Mutex::default(),
            counters: (0..endpoints).map(|_| Counters::default()).collect(),
            wake: (0..endpoints).map(|_| Notify::new()).collect(),
            max_pending,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, endpoint: usize, pick: impl Fn(&Counters) -> &AtomicU64) {
        if let Some(counters) = self.counters.get(endpoint) {
            pick(counters).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes a delivery in; false when it is not kept (not newer than
    /// what its slot holds, or a new slot past the bound).
    pub fn offer(&self, delivery: Delivery) -> bool {
        let endpoint = delivery.key.endpoint;
        let mut inner = self.lock();
        let full = inner.waiting >= self.max_pending;
        let Inner { slots, waiting, .. } = &mut *inner;
        let replaced = match slots.get_mut(&delivery.key) {
            Some(slot) => {
                let newest = slot
                    .waiting
                    .as_ref()
                    .map(|w| w.revision)
                    .max(slot.in_flight.map(|(r, _)| r));
                if newest.is_some_and(|newest| newest >= delivery.revision) {
                    drop(inner);
                    self.count(endpoint, |c| &c.superseded);
                    return false;
                }
                // A slot's newest is always taken, bound or not: latest wins.
                let replaced = slot.waiting.replace(delivery).is_some();
                if !replaced {
                    *waiting += 1;
                }
                replaced
            }
            None if full => {
                drop(inner);
                self.count(endpoint, |c| &c.overflow);
                return false;
            }
            None => {
                slots.insert(
                    delivery.key.clone(),
                    Slot {
                        waiting: Some(delivery),
                        in_flight: None,
                    },
                );
                *waiting += 1;
                false
            }
        };
        drop(inner);
        if replaced {
            self.count(endpoint, |c| &c.superseded);
        }
        if let Some(wake) = self.wake.get(endpoint) {
            wake.notify_one();
        }
        true
    }

    /// Up to `most` deliveries of `endpoint` due by `now`, each marked in
    /// flight; and when the next one waiting falls due.
    pub fn take_due(
        &self,
        endpoint: usize,
        now: Instant,
        most: usize,
    ) -> (Vec<Delivery>, Option<Instant>) {
        if most == 0 {
            // Nothing may go out now: the sender looks again when an
            // attempt ends.
            return (Vec::new(), None);
        }
        let mut inner = self.lock();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        let Inner { slots, waiting, .. } = &mut *inner;
        for (key, slot) in slots.iter_mut() {
            if key.endpoint != endpoint || slot.in_flight.is_some() {
                continue;
            }
            let Some(delivery) = &slot.waiting else {
                continue;
            };
            if delivery.not_before > now {
                next = Some(next.map_or(delivery.not_before, |n| n.min(delivery.not_before)));
                continue;
            }
            if let Some(delivery) = slot.waiting.take() {
                *waiting -= 1;
                slot.in_flight = Some((delivery.revision, delivery.created));
                due.push(delivery);
            }
            if due.len() >= most {
                // Full: the rest is looked at when an attempt ends, so a
                // long backlog is not scanned once per delivery.
                next = None;
                break;
            }
        }
        (due, next)
    }

    /// Resolves when a delivery for `endpoint` comes.
    pub fn woken(&self, endpoint: usize) -> Option<&Notify> {
        self.wake.get(endpoint)
    }

    /// The receiver took it.
    pub fn delivered(&self, delivery: &Delivery) {
        self.end_flight(&delivery.key);
        self.count(delivery.key.endpoint, |c| &c.delivered);
    }

    /// An attempt failed: back to its slot at `retry_at` unless something
    /// newer waits there; given up, with `error`, when `retry_at` is none.
    pub fn failed(
        &self,
        mut delivery: Delivery,
        retry_at: Option<Instant>,
        error: String,
    ) -> AfterFailure {
        let endpoint = delivery.key.endpoint;
        delivery.attempts += 1;
        let mut inner = self.lock();
        let Inner {
            slots,
            waiting,
            dead,
        } = &mut *inner;
        let Some(slot) = slots.get_mut(&delivery.key) else {
            return AfterFailure::Superseded;
        };
        slot.in_flight = None;
        let after = match retry_at {
            _ if slot.waiting.is_some() => AfterFailure::Superseded,
            Some(at) => {
                delivery.not_before = at;
                delivery.last_error = Some(error);
                slot.waiting = Some(delivery);
                *waiting += 1;
                AfterFailure::Retrying
            }
            None => {
                slots.remove(&delivery.key);
                let letter = DeadLetter {
                    endpoint,
                    id: delivery.id.clone(),
                    event: delivery.key.event,
                    session_id: delivery.key.session.to_string(),
                    operation: delivery.key.op.map(|op| op.as_str().to_string()),
                    revision: delivery.revision,
                    attempts: delivery.attempts,
                    error,
                    created_at: unix(delivery.created),
                    died_at: unix(SystemTime::now()),
                };
                if dead.len() >= DEAD_KEPT {
                    dead.pop_front();
                }
                dead.push_back(letter.clone());
                AfterFailure::Dead(letter)
            }
        };
        drop(inner);
        self.count(endpoint, |c| &c.failed);
        match &after {
            AfterFailure::Retrying => self.count(endpoint, |c| &c.retried),
            AfterFailure::Superseded => self.count(endpoint, |c| &c.superseded),
            AfterFailure::Dead(_) => self.count(endpoint, |c| &c.dead),
        }
        after
    }

    /// A dead letter read back from the database at start.
    pub fn restore_dead(&self, letter: DeadLetter) {
        let mut inner = self.lock();
        if inner.dead.len() >= DEAD_KEPT {
            inner.dead.pop_front();
        }
        inner.dead.push_back(letter);
    }

    /// The newest dead letters, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock().dead.iter().cloned().collect()
    }

    /// Each endpoint's counters and what waits for it now.
    pub fn views(&self, endpoints: &[super::Endpoint]) -> Vec<EndpointView> {
        let now = SystemTime::now();
        let mut pending = vec![(0u64, None::<SystemTime>); endpoints.len()];
        let mut last_dead = vec![None; endpoints.len()];
        {
            let inner = self.lock();
            for letter in &inner.dead {
                if let Some(slot) = last_dead.get_mut(letter.endpoint) {
                    *slot = Some(format!("{}: {}", letter.id, letter.error));
                }
            }
            for (key, slot) in &inner.slots {
                let Some(entry) = pending.get_mut(key.endpoint) else {
                    continue;
                };
                let oldest = slot
                    .waiting
                    .as_ref()
                    .map(|w| w.created)
                    .into_iter()
                    .chain(slot.in_flight.map(|(_, created)| created))
                    .min();
                if let Some(oldest) = oldest {
                    entry.0 += 1;
                    entry.1 = Some(entry.1.map_or(oldest, |o: SystemTime| o.min(oldest)));
                }
            }
        }
        endpoints
            .iter()
            .zip(&self.counters)
            .zip(pending)
            .zip(last_dead)
            .map(|(((endpoint, c), (pending, oldest)), last_dead)| {
                let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
                EndpointView {
                    url: endpoint.shown_url(),
                    events: endpoint.events.clone(),
                    delivered: n(&c.delivered),
                    failed: n(&c.failed),
                    retried: n(&c.retried),
                    superseded: n(&c.superseded),
                    dead: n(&c.dead),
                    overflow: n(&c.overflow),
                    pending,
                    oldest_pending_seconds: oldest
                        .map(|o| now.duration_since(o).map_or(0.0, |d| d.as_secs_f64())),
                    last_dead,
                }
            })
            .collect()
    }

    fn end_flight(&self, key: &Key) {
        let mut inner = self.lock();
        if let Some(slot) = inner.slots.get_mut(key) {
            slot.in_flight = None;
            if slot.waiting.is_none() {
                inner.slots.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(endpoint: usize, session: &str) -> Key {
        Key {
            endpoint,
            session: SessionId::parse(session).unwrap(),
            op: Some(Operation::SUMMARY),
            event: EventKind::Result,
        }
    }

    fn delivery(session: &str, revision: u64) -> Delivery {
        Delivery::new(
            key(0, session),
            revision,
            format!("{session}:{revision}"),
            format!("{{\"revision\":{revision}}}").into(),
            SystemTime::now(),
        )
    }

    fn due(outbox: &Outbox) -> Vec<u64> {
        let (due, _) = outbox.take_due(0, Instant::now(), 100);
        due.iter().map(|d| d.revision).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_newest_waiting_wins_and_an_older_one_is_dropped() {
        let outbox = Outbox::new(1, 100);
        assert!(outbox.offer(delivery("a", 3)));
        assert!(outbox.offer(delivery("a", 5)), "newer replaces");
        assert!(!outbox.offer(delivery("a", 4)), "older is dropped");
        assert!(outbox.offer(delivery("b", 1)));
        let mut sent = due(&outbox);
        sent.sort();
        assert_eq!(sent, [1, 5]);
        let view = &outbox.views(&[endpoint()])[0];
        assert_eq!((view.superseded, view.pending), (2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_revision_is_never_sent_after_a_newer_one() {
        let outbox = Outbox::new(1, 100);
        outbox.offer(delivery("a", 1));
        let (mut out, _) = outbox.take_due(0, Instant::now(), 10);
        let first = out.pop().unwrap();
        // While 1 is out, 2 comes: it waits for 1's attempt to end.
        assert!(outbox.offer(delivery("a", 2)));
        assert!(due(&outbox).is_empty(), "one attempt per slot at a time");
        // 1 fails: 2 waits, so 1 is dropped, not tried again.
        let after = outbox.failed(first, Some(Instant::now()), "500".into());
        assert_eq!(after, AfterFailure::Superseded);
        assert_eq!(due(&outbox), [2]);
        // An offer of what is out or older changes nothing.
        assert!(!outbox.offer(delivery("a", 2)));
        assert!(!outbox.offer(delivery("a", 1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_attempt_waits_its_backoff_and_a_given_up_one_is_a_dead_letter() {
        let outbox = Outbox::new(1, 100);
        outbox.offer(delivery("a", 7));
        let (mut out, _) = outbox.take_due(0, Instant::now(), 10);
        let later = Instant::now() + std::time::Duration::from_secs(4);
        assert_eq!(
            outbox.failed(out.pop().unwrap(), Some(later), "503".into()),
            AfterFailure::Retrying
        );
        let (now, next) = outbox.take_due(0, Instant::now(), 10);
        assert!(now.is_empty());
        assert_eq!(next, Some(later));
        tokio::time::advance(std::time::Duration::from_secs(4)).await;
        let (mut out, _) = outbox.take_due(0, Instant::now(), 10);
        let again = out.pop().unwrap();
        assert_eq!(again.attempts, 1);
        let AfterFailure::Dead(letter) = outbox.failed(again, None, "refused with 404".into())
        else {
            panic!("given up")
        };
        assert_eq!((letter.revision, letter.attempts), (7, 2));
        // Unix seconds, of today.
        assert!(letter.created_at > 1.7e9 && letter.died_at >= letter.created_at);
        assert_eq!(outbox.dead_letters(), [letter]);
        let view = &outbox.views(&[endpoint()])[0];
        assert_eq!(
            (view.failed, view.retried, view.dead, view.pending),
            (2, 1, 1, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_a_new_slot_is_refused_and_counted_but_a_slot_keeps_its_newest() {
        let outbox = Outbox::new(1, 2);
        assert!(outbox.offer(delivery("a", 1)));
        assert!(outbox.offer(delivery("b", 1)));
        assert!(!outbox.offer(delivery("c", 1)), "a third slot is refused");
        assert!(
            outbox.offer(delivery("a", 2)),
            "an existing slot's newest is taken"
        );
        let view = &outbox.views(&[endpoint()])[0];
        assert_eq!((view.overflow, view.pending), (1, 2));
        assert!(view.oldest_pending_seconds.is_some());
    }

    fn endpoint() -> super::super::Endpoint {
        super::super::Endpoint {
            url: reqwest::Url::parse("http://127.0.0.1:9/hook").unwrap(),
            secret: Arc::from(&b"s"[..]),
            events: vec![EventKind::Result],
            operations: Vec::new(),
            kinds: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_made_frees_its_place_under_the_bound() {
        let outbox = Outbox::new(1, 1);
        assert!(outbox.offer(delivery("a", 1)));
        assert!(!outbox.offer(delivery("b", 1)), "full");
        let (mut out, _) = outbox.take_due(0, Instant::now(), 10);
        // Out, not waiting: the bound counts what waits.
        assert!(outbox.offer(delivery("b", 1)));
        outbox.delivered(&out.pop().unwrap());
        let view = &outbox.views(&[endpoint()])[0];
        assert_eq!((view.delivered, view.pending, view.overflow), (1, 1, 1));
        let (out, _) = outbox.take_due(0, Instant::now(), 10);
        outbox.delivered(&out[0]);
        assert!(outbox.offer(delivery("c", 1)), "room again");
        assert_eq!(outbox.views(&[endpoint()])[0].delivered, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_newest_dead_letters_are_kept_in_memory() {
        let outbox = Outbox::new(1, 1000);
        let letter = |revision: u64| DeadLetter {
            endpoint: 0,
            id: format!("r{revision}"),
            event: EventKind::Result,
            session_id: "a".into(),
            operation: Some("summary".into()),
            revision,
            attempts: 1,
            error: "404".into(),
            created_at: 1.8e9,
            died_at: 1.8e9,
        };
        for revision in 0..DEAD_KEPT as u64 + 5 {
            outbox.restore_dead(letter(revision));
        }
        let kept = outbox.dead_letters();
        assert_eq!(kept.len(), DEAD_KEPT);
        assert_eq!(kept[0].revision, 5, "the oldest go first");
        // Given up now: one more, the oldest out.
        outbox.offer(delivery("z", 1));
        let (mut out, _) = outbox.take_due(0, Instant::now(), 10);
        outbox.failed(out.pop().unwrap(), None, "gone".into());
        let kept = outbox.dead_letters();
        assert_eq!(kept.len(), DEAD_KEPT);
        assert_eq!(
            (kept[0].revision, kept[DEAD_KEPT - 1].id.as_str()),
            (6, "z:1")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_set_of_attempts_takes_no_more_and_waits_for_one_to_end() {
        let outbox = Outbox::new(1, 100);
        for s in ["a", "b", "c"] {
            outbox.offer(delivery(s, 1));
        }
        let (out, next) = outbox.take_due(0, Instant::now(), 2);
        assert_eq!((out.len(), next), (2, None));
        assert!(outbox.take_due(0, Instant::now(), 0).0.is_empty());
        let (rest, _) = outbox.take_due(0, Instant::now(), 2);
        assert_eq!(rest.len(), 1);
        assert!(outbox.woken(0).is_some() && outbox.woken(1).is_none());
    }
}
