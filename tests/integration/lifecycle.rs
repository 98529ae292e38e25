//! Sessions come and go for weeks: silence ends them, speaking again
//! revives them, forgetting is atomic with ingest, a replay cannot bring a
//! forgotten session back, and the store never holds more than its limit.

use crate::common;

use crate::common::feed;

use std::sync::Arc;
use std::time::Duration;

use common::{final_line, sid};
use inflight::engine::{Appended, Engine, EngineConfig, SessionLimits};
use inflight::events::Event;
use inflight::feed::client;
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::Operation;
use inflight::state::StateConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

fn engine(sessions: SessionLimits, automatic: Vec<Operation>) -> Engine {
    let config = EngineConfig {
        state: StateConfig {
            op_timeout: Duration::from_secs(3600),
            ..Default::default()
        },
        automatic_ops: automatic,
        sessions,
        ..Default::default()
    };
    Engine::new(config, Arc::new(BuiltinBackend::new(LatencyRange::ZERO)))
}

fn runs(engine: &Engine, session: &str) -> u64 {
    engine
        .session_detail(&sid(session), 0)
        .map_or(0, |d| d.row.ops.values().map(|o| o.counts.runs).sum())
}

/// Waits until no run is in flight.
async fn settle(engine: &Engine, events: &mut tokio::sync::broadcast::Receiver<Event>) {
    common::wait_until(events, Duration::from_secs(10), "runs done", || {
        engine.is_idle()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn silence_ends_a_session_with_its_final_runs_and_then_it_is_forgotten() {
    let limits = SessionLimits {
        idle_after: Duration::from_secs(600),
        forget_after: Duration::from_secs(1800),
        ..Default::default()
    };
    let engine = engine(limits, Vec::new());
    let mut events = engine.subscribe();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(engine.clone().housekeeping(stop));
    // A feed that never sends session_end (Deepgram, a crashed feed).
    engine.ingest(final_line("quiet", 1, "We ship on Friday."), None);
    engine.ingest(final_line("chatty", 1, "Hello."), None);

    tokio::time::advance(Duration::from_secs(300)).await;
    engine.ingest(final_line("chatty", 2, "Still here."), None);
    tokio::time::advance(Duration::from_secs(301)).await;
    // "quiet" was silent for 601 s: ended, and its final runs asked for.
    let ended = common::next_matching(&mut events, Duration::from_secs(30), |e| match e {
        Event::OpQueued { session, .. } => Some(session.clone()),
        _ => None,
    })
    .await;
    assert_eq!(ended, sid("quiet"));
    settle(&engine, &mut events).await;
    let snapshot = engine.snapshot();
    let row = |name: &str| {
        snapshot
            .sessions
            .iter()
            .find(|s| s.id == sid(name))
            .unwrap()
    };
    assert!(row("quiet").ended, "silence ends a session");
    assert!(!row("chatty").ended, "chatty spoke 301 s ago");
    assert_eq!(runs(&engine, "quiet"), 2, "one final run of each operation");
    assert!(inflight::ops::BUILT_IN.iter().all(|op| {
        engine
            .result(&sid("quiet"), *op)
            .is_some_and(|r| r.covered_generation == 1)
    }));

    // Forgotten --forget-after later, like any ended session.
    tokio::time::advance(Duration::from_secs(1800)).await;
    common::wait_until(
        &mut events,
        Duration::from_secs(30),
        "quiet forgotten",
        || !engine.holds(&sid("quiet")),
    )
    .await;
    assert!(engine.session_detail(&sid("quiet"), 0).is_none());
}

#[test]
fn a_session_that_speaks_after_its_end_is_live_and_each_end_asks_for_final_runs() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let engine = engine(SessionLimits::default(), Vec::new());
        let mut events = engine.subscribe();
        engine.ingest(final_line("s", 1, "one"), None);
        engine.end_session(&sid("s"), None);
        settle(&engine, &mut events).await;
        assert_eq!(runs(&engine, "s"), 2);
        // A replayed end asks for nothing.
        engine.end_session(&sid("s"), None);
        assert_eq!(runs(&engine, "s"), 2);

        engine.ingest(final_line("s", 2, "two"), None);
        assert!(
            !engine.snapshot().sessions[0].ended,
            "speaking again makes it live"
        );
        engine.end_session(&sid("s"), None);
        settle(&engine, &mut events).await;
        assert_eq!(
            runs(&engine, "s"),
            4,
            "the second end asks for final runs again"
        );
        assert_eq!(
            engine
                .result(&sid("s"), Operation::SUMMARY)
                .map(|r| r.covered_generation),
            Some(2)
        );
    });
}

#[tokio::test(start_paused = true)]
async fn a_replay_cannot_bring_a_forgotten_session_back() {
    let engine = engine(SessionLimits::default(), inflight::ops::BUILT_IN.to_vec());
    let mut events = engine.subscribe();
    for seq in 1..=5 {
        engine.ingest(final_line("old", seq, "words"), None);
    }
    engine.end_session(&sid("old"), None);
    settle(&engine, &mut events).await;
    let runs_before = engine.snapshot().totals.counts.runs;
    assert_eq!(engine.forget_ended(Duration::ZERO), 1);
    assert!(!engine.holds(&sid("old")));

    // The feed replays the whole session: nothing comes back, no LLM work.
    for seq in 1..=5 {
        assert_eq!(
            engine.ingest(final_line("old", seq, "words"), None),
            Appended::Duplicate
        );
    }
    engine.end_session(&sid("old"), None);
    assert!(!engine.holds(&sid("old")), "a replayed end creates nothing");
    assert!(engine.is_idle(), "no run started");
    assert!(runs_before > 0);
    assert_eq!(
        engine.snapshot().totals.counts.runs,
        runs_before,
        "no new run; the process's counts keep the forgotten session's runs"
    );

    // Something new under the same id is a new life of it.
    assert_eq!(
        engine.ingest(final_line("old", 6, "new words"), None),
        Appended::Final { generation: 1 }
    );
    assert!(engine.holds(&sid("old")));
}

#[tokio::test]
async fn a_full_store_refuses_new_sessions_and_says_so_per_feed() {
    let limits = SessionLimits {
        max_sessions: 2,
        ..Default::default()
    };
    let engine = engine(limits, Vec::new());
    let mut events = engine.subscribe();
    let frames: Vec<Message> = ["a", "b", "c", "d", "a", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Message::text(format!(
                r#"{{"type":"transcript","session_id":"{name}","seq":{},"text":"hi"}}"#,
                i + 1
            ))
        })
        .chain([Message::text(
            r#"{"type":"transcript","session_id":"b","seq":99,"text":"last"}"#,
        )])
        .collect();
    let (addr, _up) = feed::one_client_feed(frames).await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    client::spawn(
        engine.clone(),
        format!("ws://{addr}/"),
        Default::default(),
        shutdown,
    );
    common::wait_until(
        &mut events,
        Duration::from_secs(10),
        "the last line",
        || engine.generation(&sid("b")) == 2,
    )
    .await;
    let snapshot = engine.snapshot();
    let ids: Vec<String> = snapshot.sessions.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(ids, ["a", "b"], "never more than --max-sessions");
    assert_eq!(snapshot.refused_sessions, 3, "c, d and c again");
    assert_eq!(snapshot.feeds[0].refused_sessions, 3, "counted on the feed");
    assert_eq!(
        snapshot.feeds[0].transcripts, 4,
        "a, b, a again and b's last"
    );
    assert_eq!(engine.generation(&sid("a")), 2);
    assert!(!engine.holds(&sid("c")));
}

/// A thread that forgets ended sessions as fast as it can until `stop`;
/// it answers how many went.
fn forget_until(
    engine: &Engine,
    runtime: &tokio::runtime::Runtime,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let engine = engine.clone();
    let runtime = runtime.handle().clone();
    std::thread::spawn(move || {
        let _enter = runtime.enter();
        let mut forgotten = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            forgotten += engine.forget_ended(Duration::ZERO);
        }
        forgotten
    })
}

/// Threads ingest and end sessions while another forgets ended ones as
/// fast as it can: a transcript is never lost to a forget, and no session
/// is left with statistics but no store entry.
#[test]
fn forgetting_is_atomic_with_ingest() {
    const SESSIONS: usize = 8;
    const ROUNDS: u64 = 30_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _enter = runtime.enter();
    let engine = engine(SessionLimits::default(), Vec::new());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forgetter = forget_until(&engine, &runtime, stop.clone());
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let engine = engine.clone();
            let runtime = runtime.handle().clone();
            std::thread::spawn(move || {
                // Runs are spawned on the runtime's workers.
                let _enter = runtime.enter();
                let mut rng = fastrand::Rng::with_seed(w);
                let mut seq = [0u64; SESSIONS];
                // Per session: was the last thing done to it an ingest?
                let mut live = [false; SESSIONS];
                let mut since_end = [0u64; SESSIONS];
                for _ in 0..ROUNDS {
                    let i = rng.usize(..SESSIONS);
                    let name = format!("w{w}-s{i}");
                    if rng.bool() {
                        seq[i] += 1;
                        let appended = engine.ingest(final_line(&name, seq[i], "x"), None);
                        assert!(matches!(appended, Appended::Final { .. }), "{appended:?}");
                        live[i] = true;
                        since_end[i] += 1;
                        // A session is forgotten only after an end: every
                        // transcript since this worker's last end is held.
                        let held = engine.generation(&sid(&name));
                        assert!(
                            held >= since_end[i],
                            "{name}: {held} transcripts held, {} sent since its end",
                            since_end[i]
                        );
                    } else {
                        engine.end_session(&sid(&name), None);
                        live[i] = false;
                        since_end[i] = 0;
                    }
                }
                live
            })
        })
        .collect();
    let outcomes: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let forgotten = forgetter.join().unwrap();
    assert!(forgotten > 0, "the race was run");
    for (w, live) in outcomes.iter().enumerate() {
        for (i, live) in live.iter().enumerate() {
            let name = format!("w{w}-s{i}");
            if *live {
                assert!(
                    engine.holds(&sid(&name)),
                    "{name}: a live session was forgotten"
                );
                let detail = engine.session_detail(&sid(&name), 1).unwrap();
                let last = detail.content.recent.last().map(|t| t.text.clone());
                assert_eq!(last.as_deref(), Some("x"), "{name}");
                assert!(detail.row.transcripts >= 1);
            }
        }
    }
    // Let every run end, forget what ended, then check for leftovers.
    runtime.block_on(async {
        let mut events = engine.subscribe();
        settle(&engine, &mut events).await;
    });
    engine.forget_ended(Duration::ZERO);
    for w in 0..2 {
        for i in 0..SESSIONS {
            let session = sid(&format!("w{w}-s{i}"));
            if !engine.holds(&session) {
                for op in inflight::ops::BUILT_IN {
                    assert_eq!(
                        engine.state().op_view(&session, op),
                        Default::default(),
                        "{session}: statistics left behind for a forgotten session"
                    );
                }
            }
        }
    }
}

/// Two sources speak for the same sessions: one sends each a line while
/// the other ends it at once, and housekeeping forgets ended sessions as
/// fast as it can. A forget that comes between a line going in and the
/// runs it asks for must not leave those runs, nor their statistics, for
/// a session nothing holds any more: nothing would ever forget them.
#[test]
fn a_session_ended_by_one_source_while_another_speaks_leaves_nothing_behind() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const SESSIONS: usize = 20_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _enter = runtime.enter();
    let config = EngineConfig {
        state: StateConfig {
            op_timeout: Duration::from_secs(3600),
            ..Default::default()
        },
        automatic_ops: inflight::ops::BUILT_IN.to_vec(),
        // No final runs: an ended session can be forgotten at once.
        end_ops: Vec::new(),
        // Room for all: runs still in flight keep ended sessions held.
        sessions: SessionLimits {
            max_sessions: SESSIONS,
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = Engine::new(config, Arc::new(BuiltinBackend::new(LatencyRange::ZERO)));
    let name = |i: usize| format!("shared-{i}");
    let spoken = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let forgetter = forget_until(&engine, &runtime, stop.clone());
    let ender = {
        let (engine, spoken) = (engine.clone(), spoken.clone());
        let runtime = runtime.handle().clone();
        std::thread::spawn(move || {
            let _enter = runtime.enter();
            for i in 0..SESSIONS {
                // End each session the moment its line makes it held.
                while spoken.load(Ordering::Acquire) <= i {
                    std::hint::spin_loop();
                }
                let session = sid(&name(i));
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while !engine.holds(&session) {
                    assert!(std::time::Instant::now() < deadline, "{session} never held");
                    std::hint::spin_loop();
                }
                engine.end_session(&session, Some(1));
            }
        })
    };
    for i in 0..SESSIONS {
        spoken.store(i + 1, Ordering::Release);
        let appended = engine.ingest(final_line(&name(i), 1, "x"), Some(0));
        assert!(matches!(appended, Appended::Final { .. }), "{appended:?}");
    }
    ender.join().unwrap();
    runtime.block_on(async {
        let mut events = engine.subscribe();
        settle(&engine, &mut events).await;
    });
    stop.store(true, Ordering::Relaxed);
    let forgotten = forgetter.join().unwrap() + engine.forget_ended(Duration::ZERO);
    assert_eq!(forgotten, SESSIONS, "every session ended and went");
    let left: Vec<String> = (0..SESSIONS)
        .map(|i| sid(&name(i)))
        .filter(|session| {
            inflight::ops::BUILT_IN
                .iter()
                .any(|op| engine.state().op_view(session, *op) != Default::default())
        })
        .map(|session| session.to_string())
        .collect();
    assert!(
        left.is_empty(),
        "{} forgotten sessions keep runs or statistics, {:?} among them",
        left.len(),
        &left[..left.len().min(3)]
    );
    assert!(engine.is_idle());
}

/// A feed's memory dies with its sessions: after a session is forgotten, a
/// reconnecting feed is not asked to resume it.
#[tokio::test]
async fn a_reconnecting_feed_resumes_only_the_sessions_still_held() {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (hellos, mut hello) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let (cut, mut cut_now) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        for connection in 1..=2 {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            let first = ws.next().await.unwrap().unwrap();
            let _ = hellos.send(serde_json::from_str(first.to_text().unwrap()).unwrap());
            if connection == 1 {
                for frame in [
                    r#"{"type":"transcript","session_id":"gone","seq":1,"text":"a"}"#,
                    r#"{"type":"transcript","session_id":"gone","seq":2,"text":"b"}"#,
                    r#"{"type":"session_end","session_id":"gone"}"#,
                    r#"{"type":"transcript","session_id":"kept","seq":7,"text":"c"}"#,
                ] {
                    ws.send(Message::text(frame)).await.unwrap();
                }
                cut_now.recv().await;
                let _ = ws.close(None).await;
            } else {
                while let Some(Ok(_)) = ws.next().await {}
            }
        }
    });
    let engine = engine(SessionLimits::default(), Vec::new());
    let mut events = engine.subscribe();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let options = client::FeedOptions {
        backoff_min: Duration::from_millis(10),
        ..Default::default()
    };
    client::spawn(engine.clone(), format!("ws://{addr}/"), options, shutdown);
    let first = tokio::time::timeout(Duration::from_secs(10), hello.recv())
        .await
        .expect("the feed connects")
        .unwrap();
    assert_eq!(first["resume"], serde_json::json!({}));
    common::wait_until(
        &mut events,
        Duration::from_secs(10),
        "both sessions in",
        || engine.generation(&sid("kept")) == 1,
    )
    .await;
    settle(&engine, &mut events).await;
    assert_eq!(engine.forget_ended(Duration::ZERO), 1);
    cut.send(()).unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), hello.recv())
        .await
        .expect("the feed reconnects")
        .unwrap();
    assert_eq!(
        second["resume"],
        serde_json::json!({"kept": 7}),
        "the forgotten session is not in the resume list"
    );
}
