//! The writer's queue: bounded like a `sync_channel`, but holding only the
//! memory of what waits in it.
//!
//! `std::sync::mpsc::sync_channel(n)` sets aside and touches `n` slots when
//! it is made: with room for 65 536 writes of about 190 bytes, 12 MB of
//! resident memory for as long as the process runs, whether anything waits
//! or not. This queue is an unbounded channel (memory in blocks, given back
//! as the writer takes what is in them) with a count beside it: a write
//! past the bound is handed back, as a full `sync_channel` would, and the
//! caller drops and counts it.
//!
//! Asks that are not writes (flush, prune, close) go past the bound: they
//! are few, and a stop must never wait for room.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// Why a write was handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<T> {
    /// `bound` writes are waiting already.
    Full(T),
    /// The writer is gone (the process is stopping).
    Gone(T),
}

/// A queue for at most `bound` writes at once.
pub fn bounded<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    let (sender, receiver) = mpsc::channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    (
        Sender {
            inner: sender,
            waiting: waiting.clone(),
            bound,
        },
        Receiver {
            inner: receiver,
            waiting,
        },
    )
}

#[derive(Debug)]
pub struct Sender<T> {
    inner: mpsc::Sender<T>,
    waiting: Arc<AtomicUsize>,
    bound: usize,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            waiting: self.waiting.clone(),
            bound: self.bound,
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item` unless `bound` items wait already; never blocks.
    pub fn try_send(&self, item: T) -> Result<(), Refused<T>> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.bound {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full(item));
        }
        self.send_counted(item)
    }

    /// Queues `item` whatever waits (an ask, not a write); never blocks.
    pub fn send_past_bound(&self, item: T) -> Result<(), Refused<T>> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.send_counted(item)
    }

    /// Sends an item already counted in `waiting`; a writer that is gone
    /// hands it back, uncounted.
    fn send_counted(&self, item: T) -> Result<(), Refused<T>> {
        self.inner.send(item).map_err(|mpsc::SendError(item)| {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            Refused::Gone(item)
        })
    }

    /// How many items wait now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
pub struct Receiver<T> {
    inner: mpsc::Receiver<T>,
    waiting: Arc<AtomicUsize>,
}

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone and nothing waits.
    pub fn recv(&self) -> Option<T> {
        let item = self.inner.recv().ok()?;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        Some(item)
    }

    /// The next item within `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let item = self.inner.recv_timeout(timeout)?;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_past_the_bound_is_handed_back_until_one_is_taken() {
        let (sender, receiver) = bounded(2);
        assert_eq!(sender.try_send(1), Ok(()));
        assert_eq!(sender.try_send(2), Ok(()));
        assert_eq!(sender.try_send(3), Err(Refused::Full(3)));
        assert_eq!(sender.waiting(), 2);
        assert_eq!(receiver.recv(), Some(1));
        assert_eq!(sender.waiting(), 1);
        assert_eq!(sender.try_send(4), Ok(()));
        assert_eq!(sender.try_send(5), Err(Refused::Full(5)));
        assert_eq!(receiver.recv(), Some(2));
        assert_eq!(receiver.recv_timeout(Duration::ZERO), Ok(4));
        assert_eq!(sender.waiting(), 0);
        assert_eq!(
            receiver.recv_timeout(Duration::ZERO),
            Err(RecvTimeoutError::Timeout)
        );
    }

    #[test]
    fn an_ask_goes_past_the_bound_and_counts_against_it() {
        let (sender, receiver) = bounded(1);
        assert_eq!(sender.try_send("write"), Ok(()));
        assert_eq!(sender.send_past_bound("close"), Ok(()));
        assert_eq!(sender.waiting(), 2);
        assert_eq!(receiver.recv(), Some("write"));
        // The ask still waits: no room yet.
        assert_eq!(sender.try_send("late"), Err(Refused::Full("late")));
        assert_eq!(receiver.recv(), Some("close"));
        assert_eq!(sender.try_send("late"), Ok(()));
    }

    #[test]
    fn a_gone_writer_hands_everything_back_and_frees_its_count() {
        let (sender, receiver) = bounded(4);
        drop(receiver);
        assert_eq!(sender.try_send(1), Err(Refused::Gone(1)));
        assert_eq!(sender.send_past_bound(2), Err(Refused::Gone(2)));
        assert_eq!(sender.waiting(), 0);
    }

    #[test]
    fn the_writer_hears_that_every_sender_is_gone() {
        let (sender, receiver) = bounded(4);
        assert_eq!(sender.try_send(1), Ok(()));
        drop(sender);
        assert_eq!(receiver.recv(), Some(1));
        assert_eq!(receiver.recv(), None);
        assert_eq!(
            receiver.recv_timeout(Duration::ZERO),
            Err(RecvTimeoutError::Disconnected)
        );
    }
}
