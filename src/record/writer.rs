//! The recorder: the engine hands it records without waiting, and a
//! thread of its own writes them.
//!
//! Handing a record over is a push onto a list behind a mutex held for
//! that push: the engine never waits for the disk, and never wakes the
//! writer. Every 10 ms the writer takes the whole list, writes it and
//! flushes, so a crash loses at most the last few milliseconds. When the
//! list is full (the disk is behind by 262 144 records), a record is
//! dropped and counted, and the writer says so in the file (`gap`). The
//! skips of one run that arrive in one batch are written as one record
//! with their count (`n`): under load they are most of what happens.
//!
//! The file rotates when it passes `max_bytes`, or when it is older than
//! `max_age`: `FILE` becomes `FILE.1`, `FILE.1` becomes `FILE.2`, and so on
//! up to `keep` files in all; the oldest goes. Each new file opens with a
//! header, and times keep counting from the recording's start.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Record;

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

/// Hands records to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

struct Inner {
    /// Records handed over and not yet taken by the writer.
    waiting: Mutex<Vec<Record>>,
    /// Dropped (the writer was behind) and not yet said in the file.
    lost: AtomicU64,
    written: Arc<AtomicU64>,
    closing: std::sync::atomic::AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// How often the writer takes what is waiting.
const EVERY: Duration = Duration::from_millis(10);

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("lost", &self.lost())
            .finish()
    }
}

impl Recorder {
    /// Opens (or appends to) the file and starts the writer, which opens
    /// it with `header` (and every file it rotates to); a clear error when
    /// the file cannot be written.
    pub fn start(options: RecordOptions, header: Record) -> Result<Self, String> {
        let file = open(&options.path)?;
        let written = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            size: file.metadata().map(|m| m.len()).unwrap_or(0),
            out: BufWriter::new(file),
            opened: std::time::Instant::now(),
            options,
            header,
            written: written.clone(),
            line: Vec::new(),
        };
        if writer.due() {
            writer.rotate()?;
        } else {
            writer.write_header()?;
        }
        let inner = Arc::new(Inner {
            waiting: Mutex::new(Vec::with_capacity(1024)),
            lost: AtomicU64::new(0),
            written,
            closing: std::sync::atomic::AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let shared = inner.clone();
        let thread = std::thread::Builder::new()
            .name("inflight-record".into())
            .spawn(move || writer.run(&shared))
            .map_err(|e| format!("cannot start the recording's writer: {e}"))?;
        *inner.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(Self { inner })
    }

    /// Hands a record over; never waits for the disk.
    pub fn record(&self, record: Record) {
        let mut waiting = self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.len() < WAITING_AT_MOST {
            waiting.push(record);
        } else {
            self.inner.lost.fetch_add(1, Ordering::Relaxed);
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
        self.inner.closing.store(true, Ordering::Release);
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            thread.thread().unpark();
            let deadline = std::time::Instant::now() + within;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// Records waiting for the writer at most; past this they are dropped
/// (and counted).
const WAITING_AT_MOST: usize = 262_144;

/// Where a run's skips are counted in a batch.
type SkipsOf =
    std::collections::HashMap<(crate::model::SessionId, crate::model::Operation, u64, bool), usize>;

/// Counts the skips of one run in a batch in the first one's record:
/// under load most records are skips, and what matters of them is how
/// many there were.
fn merge_skips(batch: &mut Vec<Record>, skips: &mut SkipsOf) {
    skips.clear();
    let mut kept = 0;
    for i in 0..batch.len() {
        if let Record::Skipped {
            session,
            op,
            running,
            pending,
            n,
            ..
        } = &batch[i]
        {
            let key = (session.clone(), *op, *running, *pending);
            let more = *n;
            if let Some(&first) = skips.get(&key) {
                if let Record::Skipped { n, .. } = &mut batch[first] {
                    *n += more;
                }
                continue;
            }
            skips.insert(key, kept);
        }
        batch.swap(kept, i);
        kept += 1;
    }
    batch.truncate(kept);
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
    /// One record's line, reused.
    line: Vec<u8>,
}

impl Writer {
    /// Takes what is waiting every few milliseconds, writes it and
    /// flushes; at close, the rest.
    fn run(mut self, shared: &Inner) {
        let mut taken = Vec::with_capacity(1024);
        let mut skips = std::collections::HashMap::new();
        let mut failed = false;
        loop {
            let closing = shared.closing.load(Ordering::Acquire);
            std::mem::swap(
                &mut taken,
                &mut *shared.waiting.lock().unwrap_or_else(|e| e.into_inner()),
            );
            let lost = shared.lost.swap(0, Ordering::Relaxed);
            if lost > 0 {
                // At the newest record's time: the lost ones were around it.
                let at = taken.iter().rev().find_map(Record::at).unwrap_or(0);
                taken.push(Record::Gap { at, lost });
            }
            merge_skips(&mut taken, &mut skips);
            for record in taken.drain(..) {
                if let Record::Header { .. } = record {
                    // A new segment (a server recorded from outside
                    // started again): its files open with it from now on.
                    self.header = record.clone();
                }
                if let Err(e) = self.write(&record)
                    && !failed
                {
                    tracing::error!("the recording stopped: {e}");
                    failed = true;
                }
            }
            if let Err(e) = self.out.flush()
                && !failed
            {
                tracing::error!("the recording stopped: {e}");
                failed = true;
            }
            if closing {
                return;
            }
            std::thread::park_timeout(EVERY);
        }
    }

    fn write(&mut self, record: &Record) -> Result<(), String> {
        if self.due() {
            self.rotate()?;
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, record).map_err(|e| e.to_string())?;
        self.line.push(b'\n');
        self.out
            .write_all(&self.line)
            .map_err(|e| format!("cannot write {}: {e}", self.options.path.display()))?;
        self.size += self.line.len() as u64;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Line;

    fn header() -> Record {
        crate::record::Tap::default().header()
    }

    fn line(n: usize) -> Record {
        Record::Transcript {
            at: n as u64,
            feed: Some(0),
            line: Line {
                session: crate::model::SessionId::parse("s1").unwrap(),
                seq: Some(n as u64),
                text: format!("line {n}: the quarterly numbers look fine"),
                speaker: None,
                start: None,
                end: None,
                is_final: true,
                kind: None,
            },
        }
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_a_bounded_number_of_files() {
        let dir = std::env::temp_dir().join(format!("inflight-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rec.jsonl");
        let options = RecordOptions {
            path: path.clone(),
            max_bytes: 4096,
            keep: 3,
            max_age: None,
        };
        assert_eq!(options.bound(), 3 * 4096);
        let recorder = Recorder::start(options, header()).unwrap();
        for n in 0..1000 {
            recorder.record(line(n));
        }
        recorder.close(Duration::from_secs(10));
        assert_eq!(recorder.lost(), 0);
        let numbered = |n: u32| dir.join(format!("rec.jsonl.{n}"));
        assert!(path.exists() && numbered(1).exists() && numbered(2).exists());
        assert!(!numbered(3).exists(), "three files in all");
        let mut last_seq = None;
        for file in [numbered(2), numbered(1), path.clone()] {
            let text = std::fs::read_to_string(&file).unwrap();
            let longest = text.lines().map(str::len).max().unwrap() as u64 + 1;
            assert!(
                (text.len() as u64) < 4096 + longest,
                "{} holds {} bytes",
                file.display(),
                text.len()
            );
            // Each file reads on its own, and they follow each other.
            let reading = crate::record::read(&file).unwrap();
            assert_eq!(reading.damage, None);
            for (_, record) in &reading.records {
                if let Record::Transcript { line, .. } = record {
                    if let Some(last) = last_seq {
                        assert_eq!(line.seq, Some(last + 1));
                    }
                    last_seq = line.seq;
                }
            }
        }
        assert_eq!(
            last_seq,
            Some(999),
            "the newest file ends with the last line"
        );
        // Started again on the same file: a new segment after the old.
        let recorder = Recorder::start(
            RecordOptions {
                path: path.clone(),
                max_bytes: 1 << 20,
                keep: 3,
                max_age: None,
            },
            header(),
        )
        .unwrap();
        recorder.record(line(1000));
        recorder.close(Duration::from_secs(10));
        let reading = crate::record::read(&path).unwrap();
        assert_eq!(reading.segment_starts.len(), 1);
        assert!(matches!(
            reading.records.last(),
            Some((_, Record::Transcript { line, .. })) if line.seq == Some(1000)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_skips_of_one_run_in_a_batch_are_one_record_with_their_count() {
        let skip = |session: &str, running: u64, at: u64| Record::Skipped {
            at,
            session: crate::model::SessionId::parse(session).unwrap(),
            op: crate::model::Operation::SUMMARY,
            running,
            pending: true,
            n: 1,
        };
        let mut batch = vec![
            skip("a", 1, 10),
            line(1),
            skip("b", 2, 11),
            skip("a", 1, 12),
            skip("a", 3, 13),
            skip("a", 1, 14),
        ];
        merge_skips(&mut batch, &mut SkipsOf::new());
        let counted = |r: &Record| match r {
            Record::Skipped {
                session,
                running,
                n,
                at,
                ..
            } => format!("{session}/{running}x{n}@{at}"),
            _ => "line".into(),
        };
        let got: Vec<String> = batch.iter().map(counted).collect();
        assert_eq!(got, ["a/1x3@10", "line", "b/2x1@11", "a/3x1@13"]);
    }

    #[test]
    fn a_file_that_cannot_be_written_is_a_clear_error() {
        let options = RecordOptions {
            path: "/nonexistent-dir/rec.jsonl".into(),
            max_bytes: 4096,
            keep: 1,
            max_age: None,
        };
        let error = Recorder::start(options, header()).unwrap_err();
        assert!(
            error.starts_with("cannot write the recording /nonexistent-dir/rec.jsonl"),
            "{error}"
        );
    }
}
