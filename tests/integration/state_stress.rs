//! The state manager hammered from several threads at once: random starts,
//! finishes (with follow-ups), drops and forced stops over a few sessions.
//! Whatever the interleaving: never two current runs of one (session, op),
//! every answer accounted for in the statistics, nothing left in flight.
//!
//! With forced stops, a thread's guard can lose its slot at any moment, so
//! each key keeps a model of its current run id, updated under a per-key lock
//! in the same step as the manager call. Every answer is checked against it:
//! a finish is `Stale` exactly when its guard no longer holds the slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use inflight::events::{EventBus, Outcome, RunId};
use inflight::model::{Operation, SessionId};
use inflight::state::{
    Admission, FinishOutcome, Policy, ProcessingStateManager, RunGuard, StateConfig,
};

const THREADS: usize = 4;
const ROUNDS: usize = 100_000;
const SESSIONS: usize = 6;

fn key_index(session: usize, op: Operation) -> usize {
    session * 2 + op.index()
}

struct Shared {
    manager: Arc<ProcessingStateManager>,
    sessions: Vec<SessionId>,
    /// Runs each thread believes it holds, per key; a stop may make a belief stale.
    held: Vec<AtomicUsize>,
    generation: AtomicU64,
    busy_answers: AtomicU64,
}

/// Ends a run and every follow-up it hands over. Without forced stops,
/// beliefs about held slots are exact: a finish is never stale.
fn finish_all(shared: &Shared, mut guard: RunGuard, key: usize) {
    loop {
        shared.held[key].fetch_sub(1, Ordering::SeqCst);
        let latest = || shared.generation.load(Ordering::SeqCst);
        match guard.finish(Outcome::Ok, None, &latest) {
            FinishOutcome::FollowUp(next) => {
                let before = shared.held[key].fetch_add(1, Ordering::SeqCst);
                assert_eq!(before, 0, "a follow-up found its slot held");
                assert!(
                    next.mark_running(shared.generation.load(Ordering::SeqCst))
                        .is_some()
                );
                guard = next;
            }
            FinishOutcome::Ended => return,
            FinishOutcome::Stale => panic!("a stale finish without any forced stop"),
        }
    }
}

fn shared(policy: Policy) -> Arc<Shared> {
    Arc::new(Shared {
        manager: ProcessingStateManager::new(
            StateConfig {
                policy: inflight::ops::OpMap::filled_with(|_| policy),
                ..Default::default()
            },
            EventBus::new(),
        ),
        sessions: (0..SESSIONS)
            .map(|i| SessionId::parse(&format!("s{i}")).unwrap())
            .collect(),
        held: (0..SESSIONS * 2).map(|_| AtomicUsize::new(0)).collect(),
        generation: AtomicU64::new(0),
        busy_answers: AtomicU64::new(0),
    })
}

/// Nothing in flight, every run ended exactly once, every refusal counted.
fn check_the_books(shared: &Shared) {
    assert_eq!(
        shared.manager.in_flight_sessions(),
        0,
        "nothing left in flight"
    );
    let mut skipped = 0;
    for session in &shared.sessions {
        for op in inflight::ops::BUILT_IN {
            let stats = shared.manager.op_view(session, op).stats;
            assert_eq!(
                stats.counts.runs,
                stats.counts.ended(),
                "{session} {op}: every run ended exactly once"
            );
            skipped += stats.counts.skipped;
        }
    }
    assert_eq!(
        skipped,
        shared.busy_answers.load(Ordering::SeqCst),
        "every refusal counted"
    );
}

fn hammer(policy: Policy) {
    let shared = shared(policy);
    let start = Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (shared, start) = (shared.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut rng = fastrand::Rng::with_seed(t as u64 + 1);
                let mut mine: HashMap<usize, RunGuard> = HashMap::new();
                for _ in 0..ROUNDS {
                    let s = rng.usize(..SESSIONS);
                    let op = inflight::ops::BUILT_IN[rng.usize(..2)];
                    let key = key_index(s, op);
                    match rng.u8(..10) {
                        0..=4 => {
                            shared.generation.fetch_add(1, Ordering::SeqCst);
                            match shared.manager.try_start(&shared.sessions[s], op) {
                                Admission::Started(guard) => {
                                    let before = shared.held[key].fetch_add(1, Ordering::SeqCst);
                                    assert_eq!(before, 0, "two current runs of one (session, op)");
                                    assert!(
                                        guard
                                            .mark_running(shared.generation.load(Ordering::SeqCst))
                                            .is_some()
                                    );
                                    assert!(
                                        mine.insert(key, guard).is_none(),
                                        "started while this thread held the slot"
                                    );
                                }
                                Admission::Busy { .. } => {
                                    shared.busy_answers.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                        5..=7 => {
                            if let Some(guard) = mine.remove(&key) {
                                finish_all(&shared, guard, key);
                            }
                        }
                        8 => {
                            // Dropped unfinished: ends as cancelled.
                            if let Some(guard) = mine.remove(&key) {
                                shared.held[key].fetch_sub(1, Ordering::SeqCst);
                                drop(guard);
                            }
                        }
                        _ => {}
                    }
                }
                for (key, guard) in mine {
                    finish_all(&shared, guard, key);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no thread panicked");
    }
    check_the_books(&shared);
}

/// What a key's model knows: the run that holds its slot, if any.
type Model = Mutex<Option<RunId>>;

/// Finishes a run and every follow-up it hands over, under the key's model
/// lock, checking each answer against the model. Returns whether it was stale.
fn finish_checked(shared: &Shared, model: &Model, mut guard: RunGuard, key: usize) -> bool {
    let (session, op) = (&shared.sessions[key / 2], inflight::ops::BUILT_IN[key % 2]);
    let mut current = model.lock().unwrap();
    let mut stale = false;
    loop {
        let holds = *current == Some(guard.run_id());
        let latest = || shared.generation.load(Ordering::SeqCst);
        match guard.finish(Outcome::Ok, None, &latest) {
            FinishOutcome::Stale => {
                assert!(!holds, "a finish of the slot's own run was called stale");
                stale = true;
                break;
            }
            FinishOutcome::Ended => {
                assert!(holds, "a stopped run's finish ended the slot");
                *current = None;
                break;
            }
            FinishOutcome::FollowUp(next) => {
                assert!(holds, "a stopped run's finish handed the slot on");
                assert!(next.is_follow_up());
                *current = Some(next.run_id());
                assert!(
                    next.mark_running(shared.generation.load(Ordering::SeqCst))
                        .is_some()
                );
                guard = next;
            }
        }
    }
    assert_eq!(
        shared.manager.is_processing(session, Some(op)),
        current.is_some()
    );
    stale
}

fn hammer_with_stops() {
    let shared = shared(Policy::Coalesce);
    let models: Arc<Vec<Model>> = Arc::new((0..SESSIONS * 2).map(|_| Mutex::new(None)).collect());
    let stale_finishes = Arc::new(AtomicU64::new(0));
    let start = Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (shared, models, stale_finishes, start) = (
                shared.clone(),
                models.clone(),
                stale_finishes.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                let mut rng = fastrand::Rng::with_seed(t as u64 + 100);
                let mut mine: HashMap<usize, RunGuard> = HashMap::new();
                let finish = |guard, key| {
                    if finish_checked(&shared, &models[key], guard, key) {
                        stale_finishes.fetch_add(1, Ordering::SeqCst);
                    }
                };
                for _ in 0..ROUNDS {
                    let s = rng.usize(..SESSIONS);
                    let op = inflight::ops::BUILT_IN[rng.usize(..2)];
                    let key = key_index(s, op);
                    let session = &shared.sessions[s];
                    match rng.u8(..10) {
                        0..=4 => {
                            let mut current = models[key].lock().unwrap();
                            shared.generation.fetch_add(1, Ordering::SeqCst);
                            match shared.manager.try_start(session, op) {
                                Admission::Started(guard) => {
                                    assert_eq!(*current, None, "two current runs of one key");
                                    *current = Some(guard.run_id());
                                    assert!(!guard.is_follow_up());
                                    assert!(
                                        guard
                                            .mark_running(shared.generation.load(Ordering::SeqCst))
                                            .is_some()
                                    );
                                    drop(current);
                                    if let Some(old) = mine.insert(key, guard) {
                                        // Its slot was freed by a stop: stale.
                                        finish(old, key);
                                    }
                                }
                                Admission::Busy { run_id, .. } => {
                                    assert_eq!(*current, Some(run_id), "busy names the holder");
                                    shared.busy_answers.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                        5..=7 => {
                            if let Some(guard) = mine.remove(&key) {
                                finish(guard, key);
                            }
                        }
                        8 => {
                            // Dropped unfinished: ends as cancelled if it still holds the slot.
                            if let Some(guard) = mine.remove(&key) {
                                let mut current = models[key].lock().unwrap();
                                if *current == Some(guard.run_id()) {
                                    *current = None;
                                }
                                drop(guard);
                                assert_eq!(
                                    shared.manager.is_processing(session, Some(op)),
                                    current.is_some()
                                );
                            }
                        }
                        _ => {
                            let mut current = models[key].lock().unwrap();
                            assert_eq!(
                                shared.manager.stop_processing(session, op),
                                *current,
                                "a stop ends exactly the current run"
                            );
                            *current = None;
                        }
                    }
                }
                for (key, guard) in mine {
                    finish(guard, key);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no thread panicked");
    }
    assert!(
        stale_finishes.load(Ordering::SeqCst) > 0,
        "the run met stopped runs finishing late"
    );
    check_the_books(&shared);
}

#[test]
fn coalesce_under_contention() {
    hammer(Policy::Coalesce);
}

#[test]
fn skip_under_contention() {
    hammer(Policy::Skip);
}

#[test]
fn forced_stops_under_contention_fence_the_old_runs() {
    hammer_with_stops();
}
