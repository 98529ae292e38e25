//! Replay feed → engine over a real WebSocket on loopback: eight sessions of
//! sixty transcripts each, against a builtin LLM that needs 200 ms a call.
//! Coalesce keeps every session fresh; the seed's skip leaves sessions stale.
//! Both are asserted on the same feed: the difference is the point.
//!
//! The feed sends each session a transcript every 10 ms (800 transcripts/s
//! in all, twenty per LLM call) for 58 lines. Then the speakers pause (every
//! run ends), line 59 comes, and line 60 with the session's end follows
//! 100 ms later — while the run line 59 started is still calling the LLM. The
//! seed drops both requests, so its last summary covers 59 of 60 lines;
//! coalesce runs once more. (A burst that lands entirely before the first
//! run reads the session would leave nothing for either policy to skip:
//! transcripts must keep arriving while runs are in flight, as they do live.)

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{final_line, sid};
use inflight::engine::{Engine, EngineConfig};
use inflight::feed::meetings::Meeting;
use inflight::feed::{client, replay};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::llm::probe::ConcurrencyProbe;
use inflight::model::{Operation, SessionId};
use inflight::state::{Policy, StateConfig};
use tokio_util::sync::CancellationToken;

const SESSIONS: usize = 8;
const TRANSCRIPTS: u64 = 60;

fn meetings() -> Vec<Meeting> {
    (0..SESSIONS)
        .map(|i| {
            let name = format!("load-{i}");
            Meeting {
                session: sid(&name),
                lines: (1..=TRANSCRIPTS)
                    .map(|seq| {
                        let mut line = final_line(
                            &name,
                            seq,
                            &format!("Point {seq} about the budget and the release plan."),
                        );
                        line.start = Some(end_time(seq) - 0.005);
                        line.end = Some(end_time(seq));
                        line
                    })
                    .collect(),
            }
        })
        .collect()
}

/// When line `seq` is sent, in seconds from the start (played at speed 1).
fn end_time(seq: u64) -> f64 {
    match seq {
        1..=58 => seq as f64 * 0.010,
        59 => 0.58 + 0.6,
        _ => 0.58 + 0.6 + 0.1,
    }
}

struct Outcome {
    engine: Engine,
    sessions: Vec<SessionId>,
    max_overlap: usize,
}

async fn run_load(policy: Policy) -> Outcome {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let options = replay::ReplayOptions {
        speed: 1.0,
        partials: false,
        ..Default::default()
    };
    let addr = replay::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        meetings(),
        options,
        shutdown.clone(),
    )
    .await
    .expect("replay server binds");
    let probe = ConcurrencyProbe::new(Arc::new(BuiltinBackend::new(LatencyRange::fixed(
        Duration::from_millis(200),
    ))));
    let config = EngineConfig {
        state: StateConfig {
            policy: [policy; 2],
            op_timeout: Duration::from_secs(30),
        },
        // Every (session, op) gets a permit at once, so runs read the
        // session the moment they are admitted.
        llm_concurrency: SESSIONS * 2,
        ..Default::default()
    };
    let engine = Engine::new(config, probe.clone());
    let mut events = engine.subscribe();
    client::spawn(
        engine.clone(),
        format!("ws://{addr}/"),
        client::FeedOptions::default(),
        shutdown.clone(),
    );
    let sessions: Vec<SessionId> = (0..SESSIONS).map(|i| sid(&format!("load-{i}"))).collect();
    common::wait_until(
        &mut events,
        Duration::from_secs(60),
        "all transcripts in and all runs done",
        || {
            common::is_idle_and(&engine, &sessions, TRANSCRIPTS)
                && engine.snapshot().sessions.iter().all(|s| s.ended)
        },
    )
    .await;
    Outcome {
        max_overlap: probe.max_overlap(),
        engine,
        sessions,
    }
}

fn covered(engine: &Engine, session: &SessionId, op: Operation) -> u64 {
    engine
        .result(session, op)
        .map_or(0, |r| r.covered_generation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesce_keeps_every_session_fresh_without_overlap() {
    let Outcome {
        engine,
        sessions,
        max_overlap,
    } = run_load(Policy::Coalesce).await;
    assert_eq!(
        max_overlap, 1,
        "never two runs of one (session, op) at once"
    );
    let snapshot = engine.snapshot();
    assert!(
        snapshot.totals.skipped > 0,
        "a fast feed must meet busy slots"
    );
    assert!(
        snapshot.totals.follow_ups > 0,
        "skipped requests come back as follow-ups"
    );
    for session in &sessions {
        for op in Operation::ALL {
            assert_eq!(
                covered(&engine, session, op),
                TRANSCRIPTS,
                "{session} {op}: the final result covers the last transcript"
            );
        }
    }
    // No backlog: far fewer LLM calls than requests.
    let requests = (SESSIONS as u64) * TRANSCRIPTS * 2;
    assert!(
        snapshot.totals.runs < requests / 4,
        "{} runs for {requests} requests",
        snapshot.totals.runs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_drops_requests_and_leaves_sessions_stale() {
    let Outcome {
        engine,
        sessions,
        max_overlap,
    } = run_load(Policy::Skip).await;
    assert_eq!(
        max_overlap, 1,
        "never two runs of one (session, op) at once"
    );
    let snapshot = engine.snapshot();
    assert!(snapshot.totals.skipped > 0);
    assert_eq!(
        snapshot.totals.follow_ups, 0,
        "skip never runs again by itself"
    );
    let stale = sessions
        .iter()
        .filter(|s| covered(&engine, s, Operation::Summary) < TRANSCRIPTS)
        .count();
    assert_eq!(
        stale, SESSIONS,
        "the seed's skip leaves every session with its last line never summarised"
    );
    for session in &sessions {
        assert_eq!(
            covered(&engine, session, Operation::Summary),
            TRANSCRIPTS - 1
        );
    }
}
