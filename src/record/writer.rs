//! The recorder: the engine hands it records without waiting, and a
//! thread of its own writes them.
//!
//! Handing a record over is a `try_send` on a bounded channel: the engine
//! never blocks on the disk. When the channel is full, the record is
//! dropped and counted, and the writer says so in the file (`gap`). The
//! writer drains what is waiting, writes it, and flushes whenever the
//! channel runs dry, so a crash loses at most what had not been drained.
//!
//! The file rotates when it passes `max_bytes`, or when it is older than
//! `max_age`: `FILE` becomes `FILE.1`, `FILE.1` becomes `FILE.2`, and so on
//! up to `keep` files in all; the oldest goes. Each new file opens with a
//! header, and times keep counting from the recording's start.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{FORMAT_VERSION, Record, Settings};

/// Records waiting for the writer at most; past this they are dropped
/// (and counted).
const CHANNEL: usize = 65_536;

/// Where and how much to record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordOptions {
    pub path: PathBuf,
    /// A file rotates when it passes this size.
    pub max_bytes: u64,
    /// Files kept in all, the one written included.
    pub keep: u32,
    /// A file rotates when it is this old, if set.
    pub max_age: Option<Duration>,
}

impl RecordOptions {
    /// The most the recording's files take on disk, about.
    pub fn bound(&self) -> u64 {
        self.max_bytes.saturating_mul(u64::from(self.keep.max(1)))
    }
}

enum Message {
    Record(Record),
    Close,
}

/// Hands records to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

struct Inner {
    sender: SyncSender<Message>,
    started: Instant,
    lost: AtomicU64,
    written: Arc<AtomicU64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("lost", &self.lost())
            .finish()
    }
}

impl Recorder {
    /// Opens (or appends to) the file and starts the writer; a clear error
    /// when the file cannot be written.
    pub fn start(options: RecordOptions, settings: Settings) -> Result<Self, String> {
        let file = open(&options.path)?;
        let started = Instant::now();
        let started_unix_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let header = Record::Header {
            version: FORMAT_VERSION,
            inflight: env!("CARGO_PKG_VERSION").to_string(),
            started_unix_us,
            settings,
        };
        let (sender, receiver) = std::sync::mpsc::sync_channel(CHANNEL);
        let written = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            size: file.metadata().map(|m| m.len()).unwrap_or(0),
            out: BufWriter::new(file),
            opened: std::time::Instant::now(),
            options,
            header,
            written: written.clone(),
        };
        if writer.due() {
            writer.rotate()?;
        } else {
            writer.write_header()?;
        }
        let thread = std::thread::Builder::new()
            .name("inflight-record".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| format!("cannot start the recording's writer: {e}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                sender,
                started,
                lost: AtomicU64::new(0),
                written,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Microseconds since the recording started.
    pub fn now(&self) -> u64 {
        self.inner.started.elapsed().as_micros() as u64
    }

    /// Hands a record over; never waits.
    pub fn record(&self, record: Record) {
        match self.inner.sender.try_send(Message::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.inner.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        let lost = self.inner.lost.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let gap = Record::Gap {
                at: self.now(),
                lost,
            };
            if self.inner.sender.try_send(Message::Record(gap)).is_err() {
                self.inner.lost.fetch_add(lost, Ordering::Relaxed);
            }
        }
    }

    /// An engine event, if it is one a recording keeps.
    pub fn event(&self, event: &crate::events::Event) {
        if let Some(record) = Record::of_event(self.now(), event) {
            self.record(record);
        }
    }

    /// Records dropped and not yet said in the file.
    pub fn lost(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.inner.written.load(Ordering::Relaxed)
    }

    /// Writes what is waiting, flushes, and stops the writer; waits for it
    /// at most `within`.
    pub fn close(&self, within: Duration) {
        let _ = self.inner.sender.send(Message::Close);
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let deadline = std::time::Instant::now() + within;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

fn open(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot write the recording {}: {e}", path.display()))
}

/// The writer thread's side.
struct Writer {
    out: BufWriter<File>,
    size: u64,
    opened: std::time::Instant,
    options: RecordOptions,
    header: Record,
    written: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Message>) {
        let mut failed = false;
        while let Ok(first) = receiver.recv() {
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Close => {
                        let _ = self.out.flush();
                        return;
                    }
                    Message::Record(record) => {
                        if let Err(e) = self.write(&record) {
                            if !failed {
                                tracing::error!("the recording stopped: {e}");
                            }
                            failed = true;
                        }
                    }
                }
                next = receiver.try_recv().ok();
            }
            if let Err(e) = self.out.flush()
                && !failed
            {
                tracing::error!("the recording stopped: {e}");
                failed = true;
            }
        }
        let _ = self.out.flush();
    }

    fn write(&mut self, record: &Record) -> Result<(), String> {
        if self.due() {
            self.rotate()?;
        }
        let mut line = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.out
            .write_all(&line)
            .map_err(|e| format!("cannot write {}: {e}", self.options.path.display()))?;
        self.size += line.len() as u64;
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn due(&self) -> bool {
        self.size >= self.options.max_bytes
            || self
                .options
                .max_age
                .is_some_and(|age| self.opened.elapsed() >= age)
    }

    /// `FILE` → `FILE.1` → … → `FILE.{keep-1}`; the oldest goes.
    fn rotate(&mut self) -> Result<(), String> {
        self.out
            .flush()
            .map_err(|e| format!("cannot write {}: {e}", self.options.path.display()))?;
        let path = &self.options.path;
        let numbered = |n: u32| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let keep = self.options.keep.max(1);
        if keep == 1 {
            let _ = std::fs::remove_file(path);
        } else {
            let _ = std::fs::remove_file(numbered(keep - 1));
            for n in (1..keep - 1).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(path, numbered(1))
                .map_err(|e| format!("cannot rotate {}: {e}", path.display()))?;
        }
        self.out = BufWriter::new(open(path)?);
        self.size = 0;
        self.opened = std::time::Instant::now();
        self.write_header()
    }

    /// Opens a file or a segment: the header again, so each file reads on
    /// its own.
    fn write_header(&mut self) -> Result<(), String> {
        let mut line = serde_json::to_vec(&self.header).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.out
            .write_all(&line)
            .map_err(|e| format!("cannot write {}: {e}", self.options.path.display()))?;
        self.size += line.len() as u64;
        Ok(())
    }
}
