//! The LLM permits: at most `--llm-concurrency` calls at once, handed out
//! by need rather than by arrival.
//!
//! A run waiting for a permit names its *priority*: the arrival number of
//! the oldest transcript its operation has not covered yet (see
//! `SessionStore::oldest_uncovered`). When a permit comes free it goes to
//! the waiter with the lowest number, so the session that has waited
//! longest for fresh results goes first, whatever order the runs were
//! admitted in; a follow-up does not queue behind newer work. Ties go to the
//! earlier waiter. A backlog's later steps (see `runner.rs`) name the next
//! arrival number instead: they queue behind everything said so far, so a
//! long catch-up takes turns with the live sessions.
//!
//! A run waits in one of two ways. Its first wait is a [`QueuedRun`] in
//! the queue ([`Permits::enter`]): a small record with no task of its own,
//! given a task only once it holds a permit; under overload tens of
//! thousands wait at once, and each costs its record, not a parked future.
//! A backlog's later steps, which wait in the middle of a run, await
//! [`Permits::acquire`] instead. Both kinds share one order.
//!
//! Waiting is cancel-safe: a waiter dropped before it is served leaves the
//! queue; one dropped after it was handed a permit gives it back, and the
//! permit goes to the next waiter. A queued run that was stopped meanwhile
//! is passed over when its turn comes, and the operator's stop takes it
//! out at once ([`Permits::forget_stopped`]).
//!
//! The limit adapts to the server. Many servers take fewer calls at once
//! than `--llm-concurrency` and answer the rest badly rather than refuse
//! them (llama.cpp's Python server streams empty answers to concurrent
//! calls). A call that fails that way while others were in flight halves
//! the limit in effect (down to one); [`RAISE_AFTER`] successes in a row
//! raise it by one again, up to the cap. Lowering never cuts a call short:
//! permits over the new limit retire as their calls end. A server that
//! says how many calls it takes at once (llama.cpp's `total_slots`) lowers
//! the cap to that for as long as it says so.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Successes in a row that raise a lowered limit by one.
pub const RAISE_AFTER: u32 = 20;

/// The queue and the count of permits out; one short lock.
#[derive(Debug)]
struct Inner {
    capacity: usize,
    /// Calls the server says it takes at once, when it says.
    server_slots: Option<usize>,
    /// Calls at once in effect: the capacity, or less as learnt.
    limit: usize,
    /// Calls that succeeded since the limit last changed or a call failed.
    successes: u32,
    out: usize,
    closed: bool,
    /// Waiters by (priority, ticket).
    waiting: BTreeMap<(u64, u64), Entry>,
    next_ticket: u64,
}

/// Someone in the queue.
enum Entry {
    /// A task awaiting [`Permits::acquire`].
    Task(oneshot::Sender<Permit>),
    /// A run with no task yet, started when it is served.
    Run(Box<dyn QueuedRun>),
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entry::Task(_) => "Task",
            Entry::Run(_) => "Run",
        })
    }
}

/// A run waiting for its first permit without a task of its own.
pub trait QueuedRun: Send {
    /// Which run it is.
    fn run_id(&self) -> u64;
    /// It was stopped while it waited: it leaves the queue unserved.
    fn is_stopped(&self) -> bool;
    /// Its permit: it starts now (on a task of its own).
    fn start(self: Box<Self>, permit: Permit);
    /// The permits were closed before its turn.
    fn refuse(self: Box<Self>);
}

/// What a section under the lock handed out or passed over, to be done
/// once the lock is let go: a run started or dropped may take the lock
/// again (its permit coming back).
#[derive(Default)]
struct AfterUnlock {
    start: Vec<(Box<dyn QueuedRun>, Permit)>,
    passed_over: Vec<Box<dyn QueuedRun>>,
}

impl AfterUnlock {
    fn run(self) {
        drop(self.passed_over);
        for (run, permit) in self.start {
            run.start(permit);
        }
    }
}

/// The permits; clone the handle freely.
#[derive(Debug, Clone)]
pub struct Permits {
    inner: Arc<Mutex<Inner>>,
}

/// One LLM call's right to run; given back when dropped.
#[derive(Debug)]
pub struct Permit {
    permits: Option<Permits>,
    /// Calls in flight, this one counted, when it was handed out.
    alongside: usize,
}

/// How a call went, for the limit to learn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    Ok,
    /// Failed the way a server does when it takes fewer calls at once than
    /// it is sent: an empty answer, 429 or 503, a connection dropped.
    Crowded,
    /// Failed in a way that says nothing of concurrency.
    Other,
}

/// The permits were closed: the engine is going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl Inner {
    /// Puts `entry` in the queue behind everyone of its priority; answers
    /// its key.
    fn queue(&mut self, priority: u64, entry: Entry) -> (u64, u64) {
        let key = (priority, self.next_ticket);
        self.next_ticket += 1;
        self.waiting.insert(key, entry);
        key
    }

    /// The most calls at once: the cap, or the server's slots when fewer.
    fn ceiling(&self) -> usize {
        self.server_slots
            .map_or(self.capacity, |slots| slots.min(self.capacity))
    }
}

impl Permits {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                capacity: capacity.max(1),
                server_slots: None,
                limit: capacity.max(1),
                successes: 0,
                out: 0,
                closed: false,
                waiting: BTreeMap::new(),
                next_ticket: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every section leaves the queue consistent; a poison changes nothing.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a permit; lower `priority` goes first.
    pub async fn acquire(&self, priority: u64) -> Result<Permit, Closed> {
        let (key, receiver) = {
            let mut inner = self.lock();
            if inner.closed {
                return Err(Closed);
            }
            if let Some(permit) = self.free_permit(&mut inner) {
                return Ok(permit);
            }
            let (sender, receiver) = oneshot::channel();
            (inner.queue(priority, Entry::Task(sender)), receiver)
        };
        let mut waiter = Waiter {
            permits: self,
            key,
            served: false,
        };
        let result = receiver.await;
        waiter.served = true;
        result.map_err(|_| Closed)
    }

    /// Puts `run` in the queue with `priority` (lower goes first), or
    /// starts it at once when a permit is free and nobody waits.
    pub fn enter(&self, priority: u64, run: Box<dyn QueuedRun>) {
        let mut inner = self.lock();
        if inner.closed {
            drop(inner);
            run.refuse();
            return;
        }
        if let Some(permit) = self.free_permit(&mut inner) {
            drop(inner);
            run.start(permit);
            return;
        }
        inner.queue(priority, Entry::Run(run));
    }

    /// A permit now if one is free and nobody waits; never queues.
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        self.free_permit(&mut inner)
    }

    /// A permit, when one is free and nobody waits for it.
    fn free_permit(&self, inner: &mut Inner) -> Option<Permit> {
        if inner.out >= inner.limit || !inner.waiting.is_empty() {
            return None;
        }
        inner.out += 1;
        Some(self.permit(inner.out))
    }

    /// Takes the queued runs that were stopped out of the queue now,
    /// rather than when their turn comes; answers how many.
    pub fn forget_stopped(&self) -> usize {
        // Dropped once the lock is let go: a run's drop ends it.
        let mut stopped = Vec::new();
        {
            let mut inner = self.lock();
            let keys: Vec<(u64, u64)> = inner
                .waiting
                .iter()
                .filter(|(_, entry)| matches!(entry, Entry::Run(run) if run.is_stopped()))
                .map(|(key, _)| *key)
                .collect();
            stopped.extend(keys.iter().filter_map(|key| inner.waiting.remove(key)));
        }
        stopped.len()
    }

    fn permit(&self, alongside: usize) -> Permit {
        Permit {
            permits: Some(self.clone()),
            alongside,
        }
    }

    /// Calls at once in effect (see the module docs).
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Learns from how the call under `permit` ended: a crowded failure
    /// with other calls in flight halves the limit; [`RAISE_AFTER`]
    /// successes in a row raise it by one.
    /// Returns whether the call was crowded out: it failed the way an
    /// overloaded server answers while other calls were in flight, so the
    /// same call, made alone, may well succeed.
    pub fn learn(&self, permit: &Permit, end: CallEnd) -> bool {
        let mut later = AfterUnlock::default();
        let mut inner = self.lock();
        let before = inner.limit;
        let crowded_out = end == CallEnd::Crowded && (permit.alongside > 1 || inner.out > 1);
        match end {
            CallEnd::Ok => {
                inner.successes += 1;
                if inner.successes >= RAISE_AFTER && inner.limit < inner.ceiling() {
                    inner.limit += 1;
                    inner.successes = 0;
                    // The new room goes to the best waiter at once.
                    if inner.out < inner.limit {
                        self.hand_on(&mut inner, true, &mut later);
                    }
                }
            }
            CallEnd::Crowded if permit.alongside > 1 || inner.out > 1 => {
                inner.limit = (inner.limit / 2).max(1);
                inner.successes = 0;
            }
            CallEnd::Crowded | CallEnd::Other => inner.successes = 0,
        }
        let (after, cap) = (inner.limit, inner.capacity);
        drop(inner);
        later.run();
        if after < before {
            tracing::warn!(
                limit = after,
                cap,
                "the LLM server fails calls made alongside others; fewer at once from now on"
            );
        } else if after > before {
            tracing::info!(
                limit = after,
                "the LLM server keeps up; one more call at once"
            );
        }
        crowded_out
    }

    /// Calls in flight now.
    pub fn in_use(&self) -> usize {
        self.lock().out
    }

    /// Runs waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Each queued run's place in the queue (0: next served), by run id;
    /// the waiting steps of runs under way count as places too.
    pub fn places(&self) -> std::collections::HashMap<u64, usize> {
        self.lock()
            .waiting
            .values()
            .enumerate()
            .filter_map(|(place, entry)| match entry {
                Entry::Run(run) => Some((run.run_id(), place)),
                Entry::Task(_) => None,
            })
            .collect()
    }

    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// What the server says of its slots now (`None`: it says nothing).
    /// Fewer than the limit lower it at once; more let it grow back, as
    /// successes raise it.
    pub fn server_slots(&self, slots: Option<usize>) {
        let mut later = AfterUnlock::default();
        let mut inner = self.lock();
        let slots = slots.filter(|n| *n > 0);
        if inner.server_slots == slots {
            return;
        }
        inner.server_slots = slots;
        let ceiling = inner.ceiling();
        if inner.limit > ceiling {
            inner.limit = ceiling;
            drop(inner);
            tracing::info!(
                limit = ceiling,
                "the LLM server takes {ceiling} call(s) at once; no more are sent together"
            );
        } else if inner.limit < ceiling && slots.is_some() {
            // The server said how many it takes: no need to learn it.
            inner.limit = ceiling;
            while inner.out < inner.limit && !inner.waiting.is_empty() {
                self.hand_on(&mut inner, true, &mut later);
            }
            drop(inner);
            later.run();
        }
    }

    /// Refuses every waiter and every later acquire.
    pub fn close(&self) {
        let waiting = {
            let mut inner = self.lock();
            inner.closed = true;
            std::mem::take(&mut inner.waiting)
        };
        for waiter in waiting.into_values() {
            if let Entry::Run(run) = waiter {
                run.refuse();
            }
        }
    }

    /// A permit came back: hand it to the best waiter still waiting,
    /// unless the limit was lowered below the permits out.
    fn release(&self) {
        let mut later = AfterUnlock::default();
        let mut inner = self.lock();
        if inner.out > inner.limit {
            inner.out -= 1;
            return;
        }
        self.hand_on(&mut inner, false, &mut later);
        drop(inner);
        later.run();
    }

    /// Gives a permit to the best waiter still waiting: one coming back
    /// (`fresh` false: `out` stays) or a new one (`fresh`: `out` grows if
    /// someone takes it).
    fn hand_on(&self, inner: &mut Inner, fresh: bool, later: &mut AfterUnlock) {
        while let Some((_, waiter)) = inner.waiting.pop_first() {
            let alongside = if fresh { inner.out + 1 } else { inner.out };
            // The permit moves to the waiter without passing through `out`.
            let permit = Permit {
                permits: Some(self.clone()),
                alongside,
            };
            let served = match waiter {
                Entry::Task(sender) => match sender.send(permit) {
                    Ok(()) => true,
                    Err(mut unsent) => {
                        // The waiter left: forget this permit, try the next one.
                        unsent.permits = None;
                        false
                    }
                },
                Entry::Run(run) if run.is_stopped() => {
                    let mut unused = permit;
                    unused.permits = None;
                    later.passed_over.push(run);
                    false
                }
                Entry::Run(run) => {
                    later.start.push((run, permit));
                    true
                }
            };
            if served {
                if fresh {
                    inner.out += 1;
                }
                return;
            }
        }
        if !fresh {
            inner.out -= 1;
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(permits) = self.permits.take() {
            permits.release();
        }
    }
}

/// Takes a waiter out of the queue when its future is dropped unserved.
struct Waiter<'a> {
    permits: &'a Permits,
    key: (u64, u64),
    served: bool,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if !self.served {
            // If the permit was sent meanwhile, the receiver drops it and
            // its Drop hands it on; either way the queue forgets us.
            self.permits.lock().waiting.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll};

    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn free_permits_are_taken_at_once_up_to_the_cap() {
        let permits = Permits::new(2);
        let a = permits.acquire(5).await.unwrap();
        let _b = permits.acquire(9).await.unwrap();
        assert_eq!(permits.in_use(), 2);
        let mut third = pin!(permits.acquire(1));
        assert!(poll_once(third.as_mut()).is_pending());
        assert_eq!(permits.waiting(), 1);
        drop(a);
        let Poll::Ready(Ok(_third)) = poll_once(third.as_mut()) else {
            panic!("the freed permit goes to the waiter");
        };
        assert_eq!(permits.in_use(), 2);
        assert_eq!(permits.waiting(), 0);
    }

    #[tokio::test]
    async fn a_freed_permit_goes_to_the_lowest_priority_then_the_earliest() {
        let permits = Permits::new(1);
        let held = permits.acquire(0).await.unwrap();
        let mut late_old = pin!(permits.acquire(3));
        let mut early_new = pin!(permits.acquire(7));
        let mut later_old = pin!(permits.acquire(3));
        assert!(poll_once(late_old.as_mut()).is_pending());
        assert!(poll_once(early_new.as_mut()).is_pending());
        assert!(poll_once(later_old.as_mut()).is_pending());
        drop(held);
        let Poll::Ready(Ok(first)) = poll_once(late_old.as_mut()) else {
            panic!("priority 3, first in, goes first");
        };
        assert!(poll_once(early_new.as_mut()).is_pending());
        assert!(poll_once(later_old.as_mut()).is_pending());
        drop(first);
        assert!(poll_once(early_new.as_mut()).is_pending(), "7 waits for 3");
        let Poll::Ready(Ok(second)) = poll_once(later_old.as_mut()) else {
            panic!("the other 3 comes next");
        };
        drop(second);
        assert!(matches!(poll_once(early_new.as_mut()), Poll::Ready(Ok(_))));
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_loses_nothing_for_the_others() {
        let permits = Permits::new(1);
        let held = permits.acquire(0).await.unwrap();
        {
            let mut leaving = pin!(permits.acquire(1));
            assert!(poll_once(leaving.as_mut()).is_pending());
        }
        assert_eq!(permits.waiting(), 0, "gone from the queue");
        // Served but dropped before it looked: the permit passes on.
        let mut served_then_gone = Box::pin(permits.acquire(1));
        assert!(poll_once(served_then_gone.as_mut()).is_pending());
        let mut next = pin!(permits.acquire(2));
        assert!(poll_once(next.as_mut()).is_pending());
        drop(held);
        drop(served_then_gone);
        let Poll::Ready(Ok(_next)) = poll_once(next.as_mut()) else {
            panic!("the permit passed on");
        };
        assert_eq!(permits.in_use(), 1);
    }

    #[tokio::test]
    async fn crowded_failures_halve_the_limit_and_successes_raise_it_again() {
        let permits = Permits::new(4);
        let calls: Vec<Permit> = futures_util::future::join_all((0..4).map(|p| permits.acquire(p)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let mut fifth = Box::pin(permits.acquire(9));
        assert!(poll_once(fifth.as_mut()).is_pending());
        // An empty answer while three others ran: half as many at once.
        assert!(
            permits.learn(&calls[0], CallEnd::Crowded),
            "crowded out: worth asking again"
        );
        assert_eq!(permits.limit(), 2);
        let mut calls = calls.into_iter();
        // Ending calls retire their permits until two are out.
        drop(calls.next());
        drop(calls.next());
        assert_eq!(permits.in_use(), 2);
        assert!(poll_once(fifth.as_mut()).is_pending(), "no room yet");
        let third = calls.next().unwrap();
        permits.learn(&third, CallEnd::Crowded);
        assert_eq!(permits.limit(), 1);
        drop(third);
        let last = calls.next().unwrap();
        // Alone, a failure says nothing of concurrency; nor does another kind.
        drop(last);
        let Poll::Ready(Ok(alone)) = poll_once(fifth.as_mut()) else {
            panic!("one at a time now");
        };
        assert!(
            !permits.learn(&alone, CallEnd::Crowded),
            "alone, an empty answer is the server's own"
        );
        assert!(!permits.learn(&alone, CallEnd::Other));
        assert_eq!(permits.limit(), 1, "never below one");
        // A long run of successes makes room for one more, handed to the
        // waiter at once.
        let mut waiting = Box::pin(permits.acquire(1));
        assert!(poll_once(waiting.as_mut()).is_pending());
        for _ in 0..RAISE_AFTER - 1 {
            permits.learn(&alone, CallEnd::Ok);
        }
        assert_eq!(permits.limit(), 1);
        permits.learn(&alone, CallEnd::Other);
        for _ in 0..RAISE_AFTER - 1 {
            permits.learn(&alone, CallEnd::Ok);
        }
        assert_eq!(permits.limit(), 1, "a failure starts the count again");
        permits.learn(&alone, CallEnd::Ok);
        assert_eq!(permits.limit(), 2);
        let Poll::Ready(Ok(_second)) = poll_once(waiting.as_mut()) else {
            panic!("the new room goes to the waiter");
        };
        assert_eq!(permits.in_use(), 2);
        for _ in 0..RAISE_AFTER * 10 {
            permits.learn(&alone, CallEnd::Ok);
        }
        assert_eq!(permits.limit(), 4, "up to the cap, no further");
    }

    #[tokio::test]
    async fn a_server_that_names_its_slots_caps_the_calls_at_once() {
        let permits = Permits::new(4);
        permits.server_slots(Some(1));
        assert_eq!(permits.limit(), 1);
        let only = permits.acquire(0).await.unwrap();
        let mut second = Box::pin(permits.acquire(1));
        let mut third = Box::pin(permits.acquire(2));
        assert!(poll_once(second.as_mut()).is_pending());
        // Successes do not raise it past what the server says.
        for _ in 0..RAISE_AFTER * 3 {
            permits.learn(&only, CallEnd::Ok);
        }
        assert_eq!(permits.limit(), 1);
        // The server now says three (restarted with more slots): both
        // waiters are served at once, without learning it call by call.
        permits.server_slots(Some(3));
        assert_eq!(permits.limit(), 3);
        assert!(matches!(poll_once(second.as_mut()), Poll::Ready(Ok(_))));
        assert!(matches!(poll_once(third.as_mut()), Poll::Ready(Ok(_))));
        // More slots than the cap: the cap holds.
        permits.server_slots(Some(16));
        assert_eq!(permits.limit(), 4);
        // Saying nothing again leaves what was learnt.
        permits.server_slots(None);
        assert_eq!(permits.limit(), 4);
    }

    #[tokio::test]
    async fn closing_refuses_waiters_and_later_calls() {
        let permits = Permits::new(1);
        let _held = permits.acquire(0).await.unwrap();
        let mut waiting = pin!(permits.acquire(1));
        assert!(poll_once(waiting.as_mut()).is_pending());
        permits.close();
        assert!(matches!(
            poll_once(waiting.as_mut()),
            Poll::Ready(Err(Closed))
        ));
        assert_eq!(permits.acquire(0).await.unwrap_err(), Closed);
    }

    /// A queued run that notes what happened to it.
    struct Noted {
        name: &'static str,
        /// Its run id: its name's first letter.
        id: u64,
        stopped: Arc<std::sync::atomic::AtomicBool>,
        log: Arc<Mutex<Vec<String>>>,
        /// Permits the started runs hold, as their tasks would.
        held: Arc<Mutex<Vec<Permit>>>,
        /// Started or refused: what a drop would not say.
        settled: bool,
    }

    impl QueuedRun for Noted {
        fn run_id(&self) -> u64 {
            self.id
        }
        fn is_stopped(&self) -> bool {
            self.stopped.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn start(mut self: Box<Self>, permit: Permit) {
            self.log
                .lock()
                .unwrap()
                .push(format!("start {}", self.name));
            self.held.lock().unwrap().push(permit);
            self.settled = true;
        }
        fn refuse(mut self: Box<Self>) {
            self.log
                .lock()
                .unwrap()
                .push(format!("refuse {}", self.name));
            self.settled = true;
        }
    }

    impl Drop for Noted {
        fn drop(&mut self) {
            if !self.settled {
                self.log.lock().unwrap().push(format!("drop {}", self.name));
            }
        }
    }

    #[derive(Default)]
    struct Runs {
        log: Arc<Mutex<Vec<String>>>,
        held: Arc<Mutex<Vec<Permit>>>,
    }

    impl Runs {
        fn run(&self, name: &'static str) -> (Box<Noted>, Arc<std::sync::atomic::AtomicBool>) {
            let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let run = Box::new(Noted {
                name,
                id: u64::from(name.as_bytes()[0]),
                stopped: stopped.clone(),
                log: self.log.clone(),
                held: self.held.clone(),
                settled: false,
            });
            (run, stopped)
        }
        fn log(&self) -> Vec<String> {
            std::mem::take(&mut *self.log.lock().unwrap())
        }
        /// The oldest started run's call ends.
        fn end_first(&self) {
            let permit = self.held.lock().unwrap().remove(0);
            drop(permit);
        }
    }

    #[tokio::test]
    async fn queued_runs_start_in_the_same_order_as_waiting_tasks() {
        let permits = Permits::new(1);
        let runs = Runs::default();
        permits.enter(5, runs.run("first").0);
        assert_eq!(
            runs.log(),
            ["start first"],
            "a free permit starts it at once"
        );
        assert_eq!(permits.in_use(), 1);
        permits.enter(7, runs.run("late").0);
        let mut task = pin!(permits.acquire(6));
        assert!(poll_once(task.as_mut()).is_pending());
        permits.enter(3, runs.run("old").0);
        assert_eq!(permits.waiting(), 3);
        assert!(runs.log().is_empty(), "nothing starts without a permit");
        runs.end_first();
        assert_eq!(runs.log(), ["start old"], "lowest priority first");
        runs.end_first();
        assert!(
            runs.log().is_empty(),
            "the task at 6 goes before the run at 7"
        );
        let Poll::Ready(Ok(task_permit)) = poll_once(task.as_mut()) else {
            panic!("the task was served");
        };
        drop(task_permit);
        assert_eq!(runs.log(), ["start late"]);
        assert_eq!(permits.in_use(), 1);
        assert_eq!(permits.waiting(), 0);
    }

    #[tokio::test]
    async fn queued_runs_of_the_same_priority_all_start_first_come_first() {
        let permits = Permits::new(1);
        let runs = Runs::default();
        permits.enter(0, runs.run("running").0);
        for name in ["a", "b", "c"] {
            permits.enter(4, runs.run(name).0);
        }
        assert_eq!(permits.waiting(), 3, "none replaced another");
        runs.log();
        for _ in 0..3 {
            runs.end_first();
        }
        assert_eq!(runs.log(), ["start a", "start b", "start c"]);
    }

    #[tokio::test]
    async fn a_stopped_run_is_passed_over_or_forgotten_at_once() {
        let permits = Permits::new(1);
        let runs = Runs::default();
        permits.enter(0, runs.run("running").0);
        let (run, stop_a) = runs.run("a");
        permits.enter(1, run);
        let (run, stop_b) = runs.run("b");
        permits.enter(2, run);
        permits.enter(3, runs.run("c").0);
        runs.log();
        // Stopped and still in the queue: passed over when its turn comes.
        stop_a.store(true, std::sync::atomic::Ordering::SeqCst);
        runs.end_first();
        assert_eq!(runs.log(), ["drop a", "start b"]);
        assert_eq!(permits.in_use(), 1, "the permit went to b, not to a");
        // Stopped, then forgotten: out of the queue before any turn.
        let (run, stop_d) = runs.run("d");
        permits.enter(4, run);
        stop_d.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(permits.forget_stopped(), 1);
        assert_eq!(runs.log(), ["drop d"]);
        assert_eq!(permits.waiting(), 1);
        drop(stop_b);
        runs.end_first();
        assert_eq!(runs.log(), ["start c"]);
    }

    #[tokio::test]
    async fn closing_refuses_queued_runs_and_later_ones() {
        let permits = Permits::new(1);
        let runs = Runs::default();
        permits.enter(0, runs.run("running").0);
        permits.enter(1, runs.run("queued").0);
        runs.log();
        permits.close();
        assert_eq!(runs.log(), ["refuse queued"]);
        permits.enter(2, runs.run("late").0);
        assert_eq!(runs.log(), ["refuse late"]);
        assert!(permits.try_acquire().is_none());
    }

    #[tokio::test]
    async fn each_queued_run_knows_its_place() {
        let permits = Permits::new(1);
        let runs = Runs::default();
        permits.enter(0, runs.run("running").0);
        permits.enter(5, runs.run("b").0);
        permits.enter(1, runs.run("a").0);
        let waiting = permits.acquire(3);
        let mut waiting = std::pin::pin!(waiting);
        assert!(poll_once(waiting.as_mut()).is_pending());
        permits.enter(9, runs.run("c").0);
        let places = permits.places();
        assert_eq!(places.len(), 3, "the waiting task has a place, not an id");
        assert_eq!(
            (
                places[&u64::from(b'a')],
                places[&u64::from(b'b')],
                places[&u64::from(b'c')]
            ),
            (0, 2, 3),
            "in the order they will be served, the task's place counted"
        );
    }

    #[tokio::test]
    async fn try_acquire_never_jumps_the_queue() {
        let permits = Permits::new(2);
        let runs = Runs::default();
        let first = permits.try_acquire().expect("a free permit");
        permits.enter(0, runs.run("a").0);
        assert_eq!(runs.log(), ["start a"]);
        assert!(permits.try_acquire().is_none(), "both out");
        permits.enter(1, runs.run("b").0);
        drop(first);
        assert_eq!(runs.log(), ["start b"]);
        runs.end_first();
        assert!(permits.try_acquire().is_some(), "free, with nobody waiting");
    }
}
