//! A recording of the embedded demo made on a paused clock: exact and
//! repeatable, for the tests and benchmarks of replay. Its meetings play at
//! their own pace, each a little after the one before and again under a
//! new id when it ends, as the demo's feed plays them, to the builtin model
//! at 2–6 s a call.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::RecordOptions;
use crate::engine::{Engine, EngineConfig};
use crate::llm::LatencyRange;
use crate::llm::builtin::BuiltinBackend;
use crate::model::SessionId;

/// Records `seconds` of the demo into `path` (replaced). Call it on a
/// runtime whose clock is paused, or it takes that long.
pub async fn record_demo(path: &Path, seconds: u64) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let engine = Engine::new(
        EngineConfig::default(),
        Arc::new(BuiltinBackend::new(LatencyRange {
            min: Duration::from_secs(2),
            max: Duration::from_secs(6),
        })),
    );
    let recorder = engine.events().tap().record_into(RecordOptions {
        path: path.to_path_buf(),
        max_bytes: 1 << 30,
        keep: 1,
        max_age: None,
    })?;
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut plays = Vec::new();
    for (n, meeting) in crate::feed::meetings::embedded().into_iter().enumerate() {
        let engine = engine.clone();
        plays.push(tokio::spawn(async move {
            let mut round = 0;
            let mut at = start + Duration::from_secs(n as u64 * 3);
            while at < end {
                let Ok(id) = SessionId::parse(&format!("{}-{round}", meeting.session)) else {
                    return;
                };
                let mut last = 0.0;
                for line in &meeting.lines {
                    let offset = line.start.unwrap_or(last);
                    last = offset;
                    tokio::time::sleep_until(at + Duration::from_secs_f64(offset)).await;
                    if tokio::time::Instant::now() >= end {
                        return;
                    }
                    let mut line = line.clone();
                    line.session_id = id.clone();
                    engine.ingest(line, Some(0));
                }
                engine.end_session(&id, Some(0));
                at = tokio::time::Instant::now() + Duration::from_secs(5);
                round += 1;
            }
        }));
    }
    for play in plays {
        let _ = play.await;
    }
    engine.drain(Duration::from_secs(30)).await;
    recorder.close(Duration::from_secs(30));
    Ok(())
}
