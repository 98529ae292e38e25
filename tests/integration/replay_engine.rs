//! A feed → engine over a real WebSocket on loopback: eight sessions of
//! sixty transcripts each. Coalesce keeps every session fresh; the original
//! skip leaves sessions stale. Both are asserted on the same script: the
//! difference is the point.
//!
//! The script is driven by the engine's own state, not by the clock. The
//! model answers only when the test opens its gate. Line 1 starts a run per
//! (session, op); lines 2–58 arrive while those runs are held, so every one
//! of them meets a busy slot. The gate opens and everything settles. Then
//! line 59 starts a run; once it reads the session and is held at the gate,
//! line 60 and the session's end arrive. Skip drops both requests, so its
//! last summary covers 59 of 60 lines; coalesce runs once more.

use crate::common;

use crate::common::feed;

use std::sync::Arc;
use std::time::Duration;

use common::{final_line, sid};
use inflight::engine::{Engine, EngineConfig};
use inflight::feed::{client, protocol};
use inflight::llm::builtin::BuiltinBackend;
use inflight::llm::probe::ConcurrencyProbe;
use inflight::llm::{
    Backend, BackendInfo, BoxFuture, LatencyRange, LlmError, LlmRequest, LlmResponse, Progress,
};
use inflight::model::{Operation, SessionId};
use inflight::state::{Policy, StateConfig};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const SESSIONS: usize = 8;
const TRANSCRIPTS: u64 = 60;
const RUNS_AT_ONCE: u64 = SESSIONS as u64 * 2;

/// A model that answers only while its gate is open.
struct Gated {
    inner: BuiltinBackend,
    open: watch::Receiver<bool>,
}

impl Backend for Gated {
    fn info(&self) -> BackendInfo {
        self.inner.info()
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            let mut open = self.open.clone();
            if open.wait_for(|open| *open).await.is_err() {
                return Err(LlmError::other("the gate went away"));
            }
            self.inner.generate(request, progress).await
        })
    }
}

fn line(session: &SessionId, seq: u64) -> Message {
    let text = format!("Point {seq} about the budget and the release plan.");
    Message::text(protocol::transcript_frame(&final_line(
        session.as_str(),
        seq,
        &text,
    )))
}

fn end(session: &SessionId) -> Message {
    Message::text(format!(
        r#"{{"type":"session_end","session_id":"{session}"}}"#
    ))
}

struct Outcome {
    engine: Engine,
    sessions: Vec<SessionId>,
    max_overlap: usize,
}

async fn run_load(policy: Policy) -> Outcome {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (addr, feed) = feed::driven_feed().await;
    let (gate, open) = watch::channel(false);
    let probe = ConcurrencyProbe::new(Arc::new(Gated {
        inner: BuiltinBackend::new(LatencyRange::ZERO),
        open,
    }));
    let config = EngineConfig {
        state: StateConfig {
            policy: inflight::ops::OpMap::filled_with(|_| policy),
            // Far past anything here: the runs held at the gate wait
            // for the test's own steps, on a machine however loaded.
            op_timeout: Duration::from_secs(3600),
            ..Default::default()
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
    let send = |frame: Message| feed.send(frame).expect("the feed runs");
    let limit = Duration::from_secs(30);

    // Line 1 starts a run of each op of each session; the model holds them.
    sessions.iter().for_each(|s| send(line(s, 1)));
    common::wait_until(&mut events, limit, "the first runs held", || {
        engine.snapshot().totals.running == RUNS_AT_ONCE
    })
    .await;
    // Lines 2–58 all meet busy slots.
    for seq in 2..=58 {
        sessions.iter().for_each(|s| send(line(s, seq)));
    }
    common::wait_until(&mut events, limit, "line 58 in", || {
        sessions.iter().all(|s| engine.generation(s) == 58)
    })
    .await;
    gate.send_replace(true);
    common::wait_until(&mut events, limit, "the first wave settled", || {
        common::is_idle_and(&engine, &sessions, 58)
    })
    .await;

    // Line 59 starts a run that reads the session and is held; line 60 and
    // the end arrive while it is in flight.
    gate.send_replace(false);
    sessions.iter().for_each(|s| send(line(s, 59)));
    common::wait_until(&mut events, limit, "the line-59 runs held", || {
        engine.snapshot().totals.running == RUNS_AT_ONCE
    })
    .await;
    for s in &sessions {
        send(line(s, 60));
        send(end(s));
    }
    common::wait_until(&mut events, limit, "line 60 and the ends in", || {
        let snapshot = engine.snapshot();
        sessions.iter().all(|s| engine.generation(s) == TRANSCRIPTS)
            && snapshot.sessions.iter().all(|row| row.ended)
    })
    .await;
    gate.send_replace(true);
    common::wait_until(&mut events, limit, "all runs done", || {
        common::is_idle_and(&engine, &sessions, TRANSCRIPTS)
    })
    .await;
    Outcome {
        max_overlap: probe.max_overlap(),
        engine,
        sessions,
    }
}

/// No run failed or timed out; else every session's run history, to
/// see which and why.
fn assert_no_run_failed(engine: &Engine, sessions: &[SessionId]) {
    let counts = engine.snapshot().totals.counts;
    if counts.failed == 0 && counts.timed_out == 0 {
        return;
    }
    let histories: Vec<String> = sessions
        .iter()
        .filter_map(|s| engine.session_detail(s, 0))
        .map(|d| format!("{}: {:#?}", d.row.id, d.history))
        .collect();
    panic!(
        "{} failed, {} timed out:\n{}",
        counts.failed,
        counts.timed_out,
        histories.join("\n")
    );
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
    assert_no_run_failed(&engine, &sessions);
    let snapshot = engine.snapshot();
    assert!(
        snapshot.totals.counts.skipped > 0,
        "a fast feed must meet busy slots"
    );
    assert!(
        snapshot.totals.counts.follow_ups > 0,
        "skipped requests come back as follow-ups"
    );
    for session in &sessions {
        for op in inflight::ops::BUILT_IN {
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
        snapshot.totals.counts.runs < requests / 4,
        "{} runs for {requests} requests",
        snapshot.totals.counts.runs
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
    assert_no_run_failed(&engine, &sessions);
    let snapshot = engine.snapshot();
    assert!(snapshot.totals.counts.skipped > 0);
    assert_eq!(
        snapshot.totals.counts.follow_ups, 0,
        "skip never runs again by itself"
    );
    let stale = sessions
        .iter()
        .filter(|s| covered(&engine, s, Operation::SUMMARY) < TRANSCRIPTS)
        .count();
    assert_eq!(
        stale, SESSIONS,
        "the original skip leaves every session with its last line never summarised"
    );
    for session in &sessions {
        assert_eq!(
            covered(&engine, session, Operation::SUMMARY),
            TRANSCRIPTS - 1
        );
    }
}
