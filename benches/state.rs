//! Admission throughput: `try_start` + `finish` pairs over 1 000 sessions, on
//! one thread and on two, against a bare `Mutex<HashMap>` insert + remove —
//! the floor any lock-based manager pays.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use inflight::events::{EventBus, Outcome};
use inflight::model::{Operation, SessionId};
use inflight::state::{Admission, ProcessingStateManager, StateConfig};

const SESSIONS: usize = 1000;

fn sessions() -> Vec<SessionId> {
    (0..SESSIONS)
        .map(|i| SessionId::parse(&format!("s{i}")).expect("valid id"))
        .collect()
}

/// One admission and its finish, as the runner does it.
fn pair(manager: &Arc<ProcessingStateManager>, session: &SessionId, op: Operation) {
    if let Admission::Started(guard) = manager.try_start(session, op) {
        black_box(guard.finish(Outcome::Ok, None, &|| 0));
    }
}

fn pairs_on_threads(threads: usize, iters: u64) -> Duration {
    let manager = ProcessingStateManager::new(StateConfig::default(), EventBus::new());
    let sessions = Arc::new(sessions());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (manager, sessions) = (manager.clone(), sessions.clone());
            scope.spawn(move || {
                // Each thread works its own half of the sessions.
                for i in 0..(iters as usize / threads) {
                    let session = &sessions[(i * threads + t) % SESSIONS];
                    pair(&manager, session, inflight::ops::BUILT_IN[i & 1]);
                }
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission");
    group.throughput(Throughput::Elements(1));

    let manager = ProcessingStateManager::new(StateConfig::default(), EventBus::new());
    let ids = sessions();
    let mut i = 0usize;
    group.bench_function("try_start+finish, 1 thread", |b| {
        b.iter(|| {
            pair(&manager, &ids[i % SESSIONS], inflight::ops::BUILT_IN[i & 1]);
            i += 1;
        })
    });

    group.bench_function("try_start+finish, 2 threads", |b| {
        b.iter_custom(|iters| pairs_on_threads(2, iters))
    });

    let floor: Mutex<HashMap<(SessionId, Operation), u64>> = Mutex::new(HashMap::new());
    let mut j = 0usize;
    group.bench_function("bare Mutex<HashMap> insert+remove", |b| {
        b.iter(|| {
            let key = (ids[j % SESSIONS].clone(), inflight::ops::BUILT_IN[j & 1]);
            let mut map = floor.lock().unwrap_or_else(|e| e.into_inner());
            map.insert(key.clone(), j as u64);
            black_box(map.remove(&key));
            j += 1;
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
