//! A backend that wraps another and measures it: calls made, and the most
//! calls ever open at once for a single `(session, op)` — which inflight
//! promises is never more than one. Used by tests and the load harness.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Backend, BackendInfo, BoxFuture, LlmError, LlmRequest, LlmResponse, Progress};
use crate::model::{Operation, SessionId};

type Key = (SessionId, Operation);

pub struct ConcurrencyProbe {
    inner: Arc<dyn Backend>,
    /// Per key: calls open now, most ever open.
    open: Mutex<HashMap<Key, (usize, usize)>>,
    calls: AtomicU64,
}

impl ConcurrencyProbe {
    pub fn new(inner: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            open: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
        })
    }

    /// The most calls ever open at once for any single `(session, op)`.
    pub fn max_overlap(&self) -> usize {
        self.lock().values().map(|(_, max)| *max).max().unwrap_or(0)
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (usize, usize)>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Closes its call's count however the call ends (done, failed, dropped).
struct Open<'a> {
    probe: &'a ConcurrencyProbe,
    key: Key,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.probe.lock().get_mut(&self.key) {
            entry.0 -= 1;
        }
    }
}

impl Backend for ConcurrencyProbe {
    fn info(&self) -> BackendInfo {
        self.inner.info()
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            let key = (request.session.clone(), request.op);
            self.calls.fetch_add(1, Ordering::Relaxed);
            {
                let mut open = self.lock();
                let entry = open.entry(key.clone()).or_default();
                entry.0 += 1;
                entry.1 = entry.1.max(entry.0);
            }
            let _open = Open { probe: self, key };
            self.inner.generate(request, progress).await
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        self.inner.check()
    }
}
