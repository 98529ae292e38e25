//! Token progress of the runs calling the LLM right now, by run id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::events::RunId;
use crate::llm::Progress;

/// Progress of one running call and when it began streaming.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub progress: Arc<Progress>,
    pub since: Instant,
}

#[derive(Debug, Default)]
pub struct ProgressBoard {
    runs: Mutex<HashMap<RunId, Tracked>>,
}

impl ProgressBoard {
    /// Tracks `progress` until the returned handle is dropped.
    pub fn track(&self, run_id: RunId, progress: Arc<Progress>) -> TrackedRun<'_> {
        self.lock().insert(
            run_id,
            Tracked {
                progress,
                since: Instant::now(),
            },
        );
        TrackedRun {
            board: self,
            run_id,
        }
    }

    /// `(tokens so far, tokens per second)` of a running call.
    pub fn rate(&self, run_id: RunId) -> Option<(u64, f64)> {
        let runs = self.lock();
        let tracked = runs.get(&run_id)?;
        let tokens = tracked.progress.tokens();
        let secs = tracked.since.elapsed().as_secs_f64();
        Some((
            tokens,
            if secs > 0.0 {
                tokens as f64 / secs
            } else {
                0.0
            },
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Tracked>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes its run from the board when dropped (however the run ends).
pub struct TrackedRun<'a> {
    board: &'a ProgressBoard,
    run_id: RunId,
}

impl Drop for TrackedRun<'_> {
    fn drop(&mut self) {
        self.board.lock().remove(&self.run_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn rates_are_tokens_over_streaming_time_while_tracked() {
        let board = ProgressBoard::default();
        let progress = Arc::new(Progress::default());
        let tracked = board.track(7, progress.clone());
        progress.add_tokens(4);
        // No time has passed: no rate yet, not a division by zero.
        assert_eq!(board.rate(7), Some((4, 0.0)));
        tokio::time::advance(Duration::from_secs(2)).await;
        progress.add_tokens(6);
        assert_eq!(board.rate(7), Some((10, 5.0)));
        assert_eq!(board.rate(8), None, "another run is not tracked");
        drop(tracked);
        assert_eq!(board.rate(7), None, "the run left the board when it ended");
    }
}
