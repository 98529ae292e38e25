//! What inflight logs when it acts on its own: refusals at a bounded rate,
//! housekeeping only when it did something.
//!
//! Log lines are captured per thread. These tests live in a binary of their
//! own so that no test without a capture hits the same log sites at the same
//! time (tracing caches, per site, whether anyone listens).

#[path = "integration/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{final_line, sid};
use inflight::engine::{Appended, Engine, EngineConfig, SessionLimits};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::Operation;

fn engine(sessions: SessionLimits) -> Engine {
    let config = EngineConfig {
        automatic_ops: Vec::new(),
        sessions,
        ..Default::default()
    };
    Engine::new(config, Arc::new(BuiltinBackend::new(LatencyRange::ZERO)))
}

#[test]
fn refusals_are_logged_at_a_bounded_rate() {
    let (logs, _capture) = common::capture_logs();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let limits = SessionLimits {
            max_sessions: 1,
            ..Default::default()
        };
        let engine = engine(limits);
        engine.ingest(final_line("kept", 1, "hi"), None);
        for i in 0..150 {
            let appended = engine.ingest(final_line(&format!("new-{i}"), 1, "hi"), None);
            assert_eq!(appended, Appended::Refused);
        }
        assert_eq!(engine.refused_sessions(), 150);
    });
    let counts: Vec<String> = logs
        .lines_where(|l| l.text.contains("new session refused"))
        .iter()
        .filter_map(|l| {
            l.text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("refused="))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        counts,
        ["1", "2", "3", "10", "100"],
        "150 refusals, 5 lines"
    );
}

#[test]
fn housekeeping_says_what_it_did_and_only_then() {
    let (logs, _capture) = common::capture_logs();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let limits = SessionLimits {
            idle_after: Duration::from_secs(600),
            forget_after: Duration::from_secs(1800),
            ..Default::default()
        };
        let engine = engine(limits);
        let mut events = engine.subscribe();
        engine.ingest(final_line("quiet", 1, "hello"), None);
        assert_eq!(engine.end_idle(), 0);
        assert_eq!(engine.forget_ended(Duration::from_secs(1800)), 0);
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(engine.end_idle(), 1);
        common::wait_until(&mut events, Duration::from_secs(10), "final runs", || {
            engine.is_idle()
        })
        .await;
        tokio::time::advance(Duration::from_secs(1800)).await;
        assert_eq!(engine.forget_ended(Duration::from_secs(1800)), 1);
        assert!(!engine.holds(&sid("quiet")));
        assert_eq!(
            engine.state().op_view(&sid("quiet"), Operation::SUMMARY),
            Default::default()
        );
    });
    let said = |what: &str| -> Vec<String> {
        logs.lines_where(|l| l.text.contains(what))
            .into_iter()
            .map(|l| l.text)
            .collect()
    };
    // Once each, when there was something to do; nothing for the calls that
    // found nothing.
    assert_eq!(
        said("ended sessions silent"),
        ["ended sessions silent for 10m sessions=1"]
    );
    assert_eq!(
        said("forgot sessions"),
        ["forgot sessions that ended over 30m ago sessions=1"]
    );
}
