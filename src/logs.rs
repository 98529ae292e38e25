//! The live log: a `tracing` layer that keeps the newest log lines in memory
//! for the dashboard's log pane.
//!
//! In dashboard mode nothing may write to the terminal behind the UI's back,
//! so instead of a stdout formatter the process installs [`CaptureLayer`],
//! which formats each event into one [`LogLine`] (message plus fields, with
//! control characters removed) and pushes it into a bounded [`LogBuffer`].

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::text;

/// How many lines the buffer keeps.
pub const LOG_CAPACITY: usize = 5000;
/// Longest log line kept or written, in bytes; longer ones are cut with `…`.
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// One captured log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Grows by one per line; views use it to notice new lines.
    pub number: u64,
    pub at: SystemTime,
    pub level: Level,
    /// The `session_id` field, when the event has one.
    pub session: Option<String>,
    /// The message followed by the other fields, `key=value`.
    pub text: String,
}

#[derive(Default)]
struct Lines {
    lines: VecDeque<LogLine>,
    next_number: u64,
}

/// The newest [`LOG_CAPACITY`] log lines, shared by the layer and the views.
#[derive(Clone, Default)]
pub struct LogBuffer {
    inner: Arc<Mutex<Lines>>,
}

impl LogBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Lines> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, at: SystemTime, level: Level, session: Option<String>, text: String) {
        let mut lines = self.lock();
        let number = lines.next_number;
        lines.next_number += 1;
        if lines.lines.len() == LOG_CAPACITY {
            lines.lines.pop_front();
        }
        lines.lines.push_back(LogLine {
            number,
            at,
            level,
            session,
            text,
        });
    }

    /// The number the next line will get: changes whenever a line arrives.
    pub fn version(&self) -> u64 {
        self.lock().next_number
    }

    /// Up to `limit` lines numbered `after` or later that pass `keep`,
    /// oldest first, and the number to ask from next time.
    pub fn after(&self, after: u64, limit: usize, keep: impl Fn(&LogLine) -> bool) -> Page {
        let lines = self.lock();
        let oldest = lines.lines.front().map_or(lines.next_number, |l| l.number);
        let mut page = Page {
            lines: Vec::new(),
            next: lines.next_number,
            missed: after < oldest && after < lines.next_number && after > 0,
        };
        for line in lines.lines.iter().filter(|l| l.number >= after) {
            if page.lines.len() == limit {
                page.next = line.number;
                break;
            }
            if keep(line) {
                page.lines.push(line.clone());
            }
        }
        page
    }

    /// Drops every line; the numbers go on, so views read the buffer again.
    pub fn clear(&self) {
        let mut lines = self.lock();
        lines.lines.clear();
        lines.next_number += 1;
    }

    /// Adds a line read from elsewhere (another process's log), numbered here.
    pub fn push_line(&self, line: LogLine) {
        self.push(line.at, line.level, line.session, line.text);
    }

    /// A copy of the lines that pass `keep`, oldest first.
    pub fn lines_where(&self, keep: impl Fn(&LogLine) -> bool) -> Vec<LogLine> {
        self.lock()
            .lines
            .iter()
            .filter(|l| keep(l))
            .cloned()
            .collect()
    }
}

/// Lines read with [`LogBuffer::after`].
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub lines: Vec<LogLine>,
    /// The first number not read yet.
    pub next: u64,
    /// Lines from the one asked for were pushed out before being read.
    pub missed: bool,
}

impl std::fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBuffer").finish_non_exhaustive()
    }
}

/// A `tracing` layer writing into a [`LogBuffer`].
pub struct CaptureLayer {
    buffer: LogBuffer,
}

impl CaptureLayer {
    pub fn new(buffer: LogBuffer) -> Self {
        Self { buffer }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    session: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "session_id" => self.session = Some(value.to_string()),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "session_id" => self.session = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = fields.message;
        if let Some(session) = &fields.session {
            let _ = write!(line, " session_id={session}");
        }
        line.push_str(&fields.rest);
        let mut clean = text::strip_controls(&line).into_owned();
        cap(&mut clean, MAX_LOG_LINE_BYTES);
        let session = fields
            .session
            .map(|s| text::strip_controls(&s).into_owned());
        self.buffer
            .push(SystemTime::now(), *event.metadata().level(), session, clean);
    }
}

/// Cuts `line` to `max` bytes, ending it with `…` when something was cut.
fn cap(line: &mut String, max: usize) {
    if line.len() > max {
        text::cut_to(line, max - '…'.len_utf8());
        line.push('…');
    }
}

/// `serve`'s log output: each line (one event) goes to stdout whole, cut to
/// [`MAX_LOG_LINE_BYTES`], so no input can make a log line huge.
#[derive(Debug, Clone, Copy, Default)]
pub struct CappedStdout;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CappedStdout {
    type Writer = CappedLine<std::io::Stdout>;

    fn make_writer(&'a self) -> Self::Writer {
        CappedLine::new(std::io::stdout())
    }
}

/// One event's formatted text, written to `out` on drop, cut to the cap.
pub struct CappedLine<W: std::io::Write> {
    text: Vec<u8>,
    out: W,
}

impl<W: std::io::Write> CappedLine<W> {
    pub fn new(out: W) -> Self {
        Self {
            text: Vec::new(),
            out,
        }
    }
}

impl<W: std::io::Write> std::io::Write for CappedLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Keep a little past the cap to know it was passed; drop the rest.
        let room = (MAX_LOG_LINE_BYTES + 1).saturating_sub(self.text.len());
        self.text.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: std::io::Write> Drop for CappedLine<W> {
    fn drop(&mut self) {
        if self.text.is_empty() {
            return;
        }
        let mut line = String::from_utf8_lossy(&self.text).into_owned();
        if line.len() > MAX_LOG_LINE_BYTES {
            cap(&mut line, MAX_LOG_LINE_BYTES - 1);
            line.push('\n');
        }
        let _ = self.out.write_all(line.as_bytes());
        let _ = self.out.flush();
    }
}

/// Log sites of our dependencies that print secrets, each capped at a level
/// where it says nothing: the WebSocket client's handshake prints the whole
/// request, feed headers (`Authorization: …`) and all, at TRACE.
const SECRET_SITES: [&str; 1] = ["tungstenite::handshake::client=debug"];

/// `filter` with [`SECRET_SITES`] capped, whatever `RUST_LOG` or
/// `--log-level` asked for: header values are never logged.
pub fn without_secrets(mut filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    for site in SECRET_SITES {
        if let Ok(directive) = site.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_become_clean_lines_with_their_session() {
        let buffer = LogBuffer::new();
        let subscriber = tracing_subscriber::registry().with(CaptureLayer::new(buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                session_id = "s-1",
                op = "summary",
                run_id = 7u64,
                "processing started"
            );
            tracing::warn!("evil \u{1b}[2Jtext");
        });
        let lines = buffer.lines_where(|_| true);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].session.as_deref(), Some("s-1"));
        assert_eq!(
            lines[0].text,
            "processing started session_id=s-1 op=summary run_id=7"
        );
        assert_eq!(lines[1].level, Level::WARN);
        assert_eq!(lines[1].text, "evil text");
        assert_eq!(buffer.version(), 2);
    }

    #[test]
    fn log_lines_are_capped() {
        let buffer = LogBuffer::new();
        let subscriber = tracing_subscriber::registry().with(CaptureLayer::new(buffer.clone()));
        let huge = "x".repeat(MAX_LOG_LINE_BYTES * 10);
        tracing::subscriber::with_default(subscriber, || tracing::warn!("{huge}"));
        let lines = buffer.lines_where(|_| true);
        assert!(
            lines[0].text.len() <= MAX_LOG_LINE_BYTES,
            "{}",
            lines[0].text.len()
        );
        assert!(lines[0].text.ends_with('…'));

        let mut out = Vec::new();
        {
            let mut line = CappedLine::new(&mut out);
            for _ in 0..100 {
                std::io::Write::write_all(&mut line, huge.as_bytes()).unwrap();
            }
            std::io::Write::write_all(&mut line, b"\n").unwrap();
        }
        assert!(out.len() <= MAX_LOG_LINE_BYTES, "{}", out.len());
        assert!(out.ends_with("…\n".as_bytes()));
        let mut short = Vec::new();
        {
            let mut line = CappedLine::new(&mut short);
            std::io::Write::write_all(&mut line, b"ok line\n").unwrap();
        }
        assert_eq!(short, b"ok line\n");
    }

    #[test]
    fn the_buffer_is_bounded() {
        let buffer = LogBuffer::new();
        for i in 0..(LOG_CAPACITY + 10) {
            buffer.push(SystemTime::UNIX_EPOCH, Level::INFO, None, i.to_string());
        }
        let lines = buffer.lines_where(|_| true);
        assert_eq!(lines.len(), LOG_CAPACITY);
        assert_eq!(lines[0].text, "10");
    }
}
