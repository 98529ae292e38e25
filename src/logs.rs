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
        let clean = text::strip_controls(&line).into_owned();
        let session = fields
            .session
            .map(|s| text::strip_controls(&s).into_owned());
        self.buffer
            .push(SystemTime::now(), *event.metadata().level(), session, clean);
    }
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
