//! Pacing: the feeds wait for the writer when it falls behind.
//!
//! A feed can send far faster than the disk takes its lines. Unpaced, the
//! writer's queue grew through a burst (40 000 writes waiting at the end of
//! 10 000 sessions × 20 lines, on two cores), and with it the lines the
//! store must hold until the file has them: the largest part of the peak's
//! memory. Now a feed stops reading at a frame's end while more than
//! [`PACE_WRITES`] writes wait, and reads on as soon as the writer has
//! taken a batch: the backlog stays in the peer's socket, bounded by the
//! kernel, and every line is still written.
//!
//! Only a healthy writer paces. One that cannot write (a full disk, a lock
//! held past the busy timeout) says `degraded`, and the feeds read on as
//! before: the engine goes on in memory and a full queue drops writes and
//! counts them. Runs and results never wait: they are bounded by the runs
//! in flight, not by what a feed sends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use super::BATCH_ROWS;

/// Writes waiting for the writer past which the feeds wait: four batches,
/// so the writer always finds a full one.
pub const PACE_WRITES: usize = 4 * BATCH_ROWS;

/// Wakes the feeds waiting for the writer.
#[derive(Debug, Default)]
pub struct Pace {
    moved: Notify,
    /// The writer's thread has ended: nothing waiting will move again.
    stopped: AtomicBool,
}

impl Pace {
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The writer took a batch, failed one, or stopped: whoever waits
    /// looks again.
    pub fn tell(&self) {
        self.moved.notify_waiters();
    }

    /// Waits until `behind` says no, looking again each time the writer
    /// moves.
    pub async fn until(&self, behind: impl Fn() -> bool) {
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            // Registered before looking, so a move in between is not lost.
            moved.as_mut().enable();
            if !behind() {
                return;
            }
            moved.await;
        }
    }
}

/// Tells the waiting feeds when the writer's thread ends, however it ends.
pub struct TellOnExit(pub Arc<Pace>);

impl Drop for TellOnExit {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.tell();
    }
}
