//! The state manager hammered from several threads at once: random starts,
//! finishes (with follow-ups), drops and forced stops over a few sessions.
//! Whatever the interleaving: never two current runs of one (session, op),
//! every answer accounted for in the statistics, nothing left in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use inflight::events::{EventBus, Outcome};
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

/// Ends a run and every follow-up it hands over; returns how many runs ended.
/// `strict`: no forced stops happen, so beliefs about held slots are exact.
fn finish_all(shared: &Shared, mut guard: RunGuard, key: usize, strict: bool) -> u64 {
    let mut ended = 0;
    loop {
        shared.held[key].fetch_sub(1, Ordering::SeqCst);
        let latest = || shared.generation.load(Ordering::SeqCst);
        ended += 1;
        match guard.finish(Outcome::Ok, None, &latest) {
            FinishOutcome::FollowUp(next) => {
                let before = shared.held[key].fetch_add(1, Ordering::SeqCst);
                if strict {
                    assert_eq!(before, 0, "a follow-up found its slot held");
                }
                next.mark_running(shared.generation.load(Ordering::SeqCst));
                guard = next;
            }
            FinishOutcome::Ended | FinishOutcome::Stale => return ended,
        }
    }
}

fn hammer(policy: Policy, with_stops: bool) {
    let shared = Arc::new(Shared {
        manager: ProcessingStateManager::new(
            StateConfig {
                policy: [policy; 2],
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
    });
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
                    let op = Operation::ALL[rng.usize(..2)];
                    let key = key_index(s, op);
                    match rng.u8(..10) {
                        0..=4 => {
                            shared.generation.fetch_add(1, Ordering::SeqCst);
                            match shared.manager.try_start(&shared.sessions[s], op) {
                                Admission::Started(guard) => {
                                    let before = shared.held[key].fetch_add(1, Ordering::SeqCst);
                                    if !with_stops {
                                        assert_eq!(
                                            before, 0,
                                            "two current runs of one (session, op)"
                                        );
                                    }
                                    guard.mark_running(shared.generation.load(Ordering::SeqCst));
                                    if let Some(old) = mine.insert(key, guard) {
                                        // Only possible after a forced stop freed the old one's slot.
                                        assert!(with_stops);
                                        assert!(matches!(
                                            old.finish(Outcome::Ok, None, &|| 0),
                                            FinishOutcome::Stale
                                        ));
                                        shared.held[key].fetch_sub(1, Ordering::SeqCst);
                                    }
                                }
                                Admission::Busy { .. } => {
                                    shared.busy_answers.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                        5..=7 => {
                            if let Some(guard) = mine.remove(&key) {
                                finish_all(&shared, guard, key, !with_stops);
                            }
                        }
                        8 => {
                            // Dropped unfinished: ends as cancelled.
                            if let Some(guard) = mine.remove(&key) {
                                shared.held[key].fetch_sub(1, Ordering::SeqCst);
                                drop(guard);
                            }
                        }
                        _ if with_stops => {
                            shared.manager.stop_processing(&shared.sessions[s], op);
                        }
                        _ => {}
                    }
                }
                for (key, guard) in mine {
                    finish_all(&shared, guard, key, !with_stops);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no thread panicked");
    }
    assert_eq!(
        shared.manager.in_flight_sessions(),
        0,
        "nothing left in flight"
    );
    let mut skipped = 0;
    for session in &shared.sessions {
        for op in Operation::ALL {
            let stats = shared.manager.op_view(session, op).stats;
            assert_eq!(
                stats.runs,
                stats.finished(),
                "{session} {op}: every run ended exactly once"
            );
            skipped += stats.skipped;
        }
    }
    assert_eq!(
        skipped,
        shared.busy_answers.load(Ordering::SeqCst),
        "every refusal counted"
    );
}

#[test]
fn coalesce_under_contention() {
    hammer(Policy::Coalesce, false);
}

#[test]
fn skip_under_contention() {
    hammer(Policy::Skip, false);
}

#[test]
fn forced_stops_under_contention_fence_the_old_runs() {
    hammer(Policy::Coalesce, true);
}
