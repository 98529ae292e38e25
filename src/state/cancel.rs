//! A run's stop signal: set once, by an operator's cancel or a stop of
//! everything, and awaited by the run while it waits for a permit and
//! during its calls.
//!
//! Every run in flight holds one, and tens of thousands can wait for a
//! permit at once, so it is a flag and a [`Notify`] behind one pointer (a
//! 64-byte block), where `tokio_util`'s `CancellationToken`, made for
//! trees of tokens, took 128.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Shared by a run's slot and its guard; clones stop together.
#[derive(Debug, Clone, Default)]
pub struct RunCancel(Arc<Signal>);

#[derive(Debug, Default)]
struct Signal {
    stopped: AtomicBool,
    wake: Notify,
}

impl RunCancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the run: every wait on [`RunCancel::cancelled`] ends. Once is
    /// enough; again changes nothing.
    pub fn cancel(&self) {
        if !self.0.stopped.swap(true, Ordering::AcqRel) {
            self.0.wake.notify_waiters();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }

    /// Ends once the run is stopped, at once when it already is.
    pub async fn cancelled(&self) {
        // Made before the flag is read, the wait already counts for
        // `notify_waiters`: a cancel in between still ends it.
        let woken = self.0.wake.notified();
        if self.is_cancelled() {
            return;
        }
        woken.await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll, Wake, Waker};

    use super::*;

    /// Counts the wakes it is given.
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn every_wait_ends_and_is_woken_when_the_run_is_cancelled() {
        let cancel = RunCancel::new();
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut waits: Vec<_> = (0..3).map(|_| Box::pin(cancel.cancelled())).collect();
        for wait in &mut waits {
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert!(!cancel.is_cancelled());
        cancel.clone().cancel();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 3, "every wait is woken");
        for wait in &mut waits {
            assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(()));
        }
        assert!(cancel.is_cancelled(), "clones share the flag");
        // A wait begun after the cancel ends at once; a second cancel
        // wakes nobody.
        cancel.cancel();
        let mut late = Box::pin(cancel.cancelled());
        assert_eq!(late.as_mut().poll(&mut cx), Poll::Ready(()));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_signal_fits_a_64_byte_block() {
        // The block holds the Arc's two counts beside it.
        assert!(std::mem::size_of::<Signal>() + 16 <= 64);
    }
}
