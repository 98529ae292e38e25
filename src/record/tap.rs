//! Where the engine's records go: to the file (`--record`), to the
//! clients recording it over the API (`inflight record --from`), or, with
//! neither, nowhere, at the cost of one atomic load.
//!
//! The tap lives on the engine's event bus from the start. Its clock is
//! the engine's: every record's `at` counts from the tap's start, and the
//! header it gives says when that was, so a file written here and one
//! written by a client from the live stream read the same.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{FORMAT_VERSION, Record, Recorder, Settings};

/// Records a live client may fall behind by before it is told of a gap.
pub const LIVE_BUFFER: usize = 16_384;

pub struct Tap {
    started: Instant,
    started_unix_us: u64,
    settings: OnceLock<Settings>,
    file: OnceLock<Recorder>,
    live: broadcast::Sender<Arc<Record>>,
    /// Live clients now; kept by their [`Live`] guards.
    clients: AtomicUsize,
}

impl Default for Tap {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            started_unix_us: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            settings: OnceLock::new(),
            file: OnceLock::new(),
            live: broadcast::channel(LIVE_BUFFER).0,
            clients: AtomicUsize::new(0),
        }
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("file", &self.file.get().is_some())
            .field("clients", &self.clients.load(Ordering::Relaxed))
            .finish()
    }
}

/// A live client's subscription: counted while it lives.
pub struct Live {
    tap: Arc<Tap>,
    pub records: broadcast::Receiver<Arc<Record>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.tap.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tap {
    /// The engine's settings, for headers; set once, when the engine is.
    pub fn set_settings(&self, settings: Settings) {
        let _ = self.settings.set(settings);
    }

    /// What opens a recording of this engine.
    pub fn header(&self) -> Record {
        Record::Header {
            version: FORMAT_VERSION,
            inflight: env!("CARGO_PKG_VERSION").to_string(),
            started_unix_us: self.started_unix_us,
            settings: self
                .settings
                .get()
                .cloned()
                .unwrap_or_else(|| Settings::of(&crate::engine::EngineConfig::default())),
        }
    }

    /// Writes every record from now on to the file `options` names (its
    /// header this tap's); once. The recorder, to close at the end.
    pub fn record_into(&self, options: super::RecordOptions) -> Result<Recorder, String> {
        if self.file.get().is_some() {
            return Err("the engine records already".into());
        }
        let recorder = Recorder::start(options, self.header())?;
        self.file
            .set(recorder.clone())
            .map_err(|_| "the engine records already".to_string())?;
        Ok(recorder)
    }

    /// A live client from now on.
    pub fn subscribe(self: &Arc<Self>) -> Live {
        self.clients.fetch_add(1, Ordering::Relaxed);
        Live {
            tap: self.clone(),
            records: self.live.subscribe(),
        }
    }

    /// Whether anything records: callers build no record otherwise.
    pub fn active(&self) -> bool {
        self.file.get().is_some() || self.clients.load(Ordering::Relaxed) > 0
    }

    /// Microseconds since the tap started.
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Hands a record to the file and the live clients; never waits.
    pub fn record(&self, record: Record) {
        let live = self.clients.load(Ordering::Relaxed) > 0;
        match (self.file.get(), live) {
            (Some(file), true) => {
                file.record(record.clone());
                let _ = self.live.send(Arc::new(record));
            }
            (Some(file), false) => file.record(record),
            (None, true) => {
                let _ = self.live.send(Arc::new(record));
            }
            (None, false) => {}
        }
    }

    /// An engine event, if it is one a recording keeps.
    pub fn event(&self, event: &crate::events::Event) {
        if self.active()
            && let Some(record) = Record::of_event(self.now(), event)
        {
            self.record(record);
        }
    }
}
