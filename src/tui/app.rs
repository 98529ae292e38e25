//! The dashboard's state and its update rules — no terminal, no I/O.
//!
//! The main loop feeds [`App`] snapshots and keys; [`App::handle_key`]
//! answers with [`Command`]s (trigger, cancel, quit) that the loop carries
//! out against the engine, reporting back through [`App::show_triggered`]
//! and [`App::show_cancelled`]. Views only read an `App`.

use std::cell::Cell;
use std::time::SystemTime;

use tokio::time::Instant;
use tracing::Level;

use super::keymap::{self, Action, Context, Key};
use super::theme::Theme;
use crate::engine::{SessionDetail, SessionRow, Snapshot, TriggerAnswer};
use crate::events::RunId;
use crate::format;
use crate::logs::{LogBuffer, LogLine};
use crate::model::{Operation, SessionId};
use crate::state::Phase;

/// Which screen is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Table,
    Detail,
}

/// Columns the table can be sorted by, in the order `o` walks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortColumn {
    Session,
    Transcripts,
    Summary,
    MindMap,
    Skipped,
    Failures,
    Age,
}

impl SortColumn {
    const ORDER: [SortColumn; 7] = [
        SortColumn::Session,
        SortColumn::Transcripts,
        SortColumn::Summary,
        SortColumn::MindMap,
        SortColumn::Skipped,
        SortColumn::Failures,
        SortColumn::Age,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortColumn::Session => "session",
            SortColumn::Transcripts => "transcripts",
            SortColumn::Summary => "summary",
            SortColumn::MindMap => "mind map",
            SortColumn::Skipped => "skipped",
            SortColumn::Failures => "failures",
            SortColumn::Age => "age",
        }
    }

    fn next(self) -> Self {
        let i = Self::ORDER.iter().position(|c| *c == self).unwrap_or(0);
        Self::ORDER[(i + 1) % Self::ORDER.len()]
    }
}

/// What a line of text input edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputTarget {
    SessionFilter,
    LogSearch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub target: InputTarget,
    pub buffer: String,
}

/// How a message reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Info,
    Good,
    Warn,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub text: String,
    pub tone: Tone,
}

/// What the main loop must do for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Trigger {
        session: SessionId,
        ops: Vec<Operation>,
    },
    Cancel {
        session: SessionId,
    },
    /// Read a session memory no longer holds from the database.
    OpenStored {
        session: SessionId,
    },
    Quit,
}

/// The log pane's state.
#[derive(Debug, Clone)]
pub struct LogPane {
    pub visible: bool,
    pub focused: bool,
    /// Stick to the newest line; scrolling up turns it off, reaching the bottom on.
    pub follow: bool,
    /// Lines scrolled up from the newest.
    pub offset: usize,
    /// The most verbose level shown.
    pub level: Level,
    /// Only lines of the selected session.
    pub scoped: bool,
    pub search: String,
    /// The lines that pass the filters, oldest first.
    pub lines: Vec<LogLine>,
    seen_version: u64,
}

impl Default for LogPane {
    fn default() -> Self {
        Self {
            visible: true,
            focused: false,
            follow: true,
            offset: 0,
            level: Level::INFO,
            scoped: false,
            search: String::new(),
            lines: Vec::new(),
            seen_version: u64::MAX,
        }
    }
}

/// The whole dashboard state.
pub struct App {
    pub theme: Theme,
    pub snapshot: Snapshot,
    /// Indices into `snapshot.sessions`: filtered and sorted.
    pub order: Vec<usize>,
    /// Position in `order`.
    pub selected: usize,
    selected_id: Option<SessionId>,
    pub sort: SortColumn,
    pub descending: bool,
    pub filter: String,
    pub input: Option<Input>,
    pub screen: Screen,
    pub help: bool,
    /// The feeds overlay is up.
    pub feeds: bool,
    pub paused: bool,
    pub message: Option<Message>,
    pub log: LogPane,
    pub detail: Option<SessionDetail>,
    /// The details shown were read from the database (memory forgot the
    /// session): they stay as read, not refreshed from snapshots.
    pub stored: bool,
    /// Rows the table showed at the last draw (for paging and scrolling).
    pub table_rows: Cell<usize>,
    /// First row the table showed at the last draw.
    pub table_offset: Cell<usize>,
    pub quit: bool,
    /// How the dashboard is tied to its engine.
    pub link: super::source::Link,
    /// Why triggers and cancels are refused here (a viewer's token).
    pub read_only: Option<String>,
}

impl App {
    pub fn new(theme: Theme, snapshot: Snapshot) -> Self {
        let mut app = Self {
            theme,
            snapshot,
            order: Vec::new(),
            selected: 0,
            selected_id: None,
            sort: SortColumn::Session,
            descending: false,
            filter: String::new(),
            input: None,
            screen: Screen::Table,
            help: false,
            feeds: false,
            paused: false,
            message: None,
            log: LogPane::default(),
            detail: None,
            stored: false,
            table_rows: Cell::new(10),
            table_offset: Cell::new(0),
            quit: false,
            link: super::source::Link::Embedded,
            read_only: None,
        };
        app.reorder();
        app
    }

    /// Takes a new snapshot (ignored while frozen).
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        if self.paused {
            return;
        }
        self.snapshot = snapshot;
        self.reorder();
    }

    pub fn set_detail(&mut self, detail: Option<SessionDetail>) {
        if !self.paused {
            self.detail = detail;
        }
    }

    /// Re-reads the log buffer when it changed or the filters did.
    pub fn refresh_logs(&mut self, logs: &LogBuffer, force: bool) {
        if self.paused {
            return;
        }
        let version = logs.version();
        if version == self.log.seen_version && !force {
            return;
        }
        self.log.seen_version = version;
        let level = self.log.level;
        let scope = self
            .log
            .scoped
            .then(|| self.selected_id.as_ref().map(|s| s.as_str().to_string()))
            .flatten();
        let search = self.log.search.to_lowercase();
        let before = self.log.lines.len();
        self.log.lines = logs.lines_where(|line| {
            line.level <= level
                && scope
                    .as_ref()
                    .is_none_or(|s| line.session.as_deref() == Some(s.as_str()))
                && (search.is_empty() || line.text.to_lowercase().contains(&search))
        });
        // Keep the view still while scrolled up: new lines push the offset.
        if !self.log.follow && self.log.lines.len() > before && !force {
            self.log.offset += self.log.lines.len() - before;
        }
        self.log.offset = self.log.offset.min(self.log.lines.len().saturating_sub(1));
    }

    /// The session under the cursor.
    pub fn selected_row(&self) -> Option<&SessionRow> {
        self.order
            .get(self.selected)
            .map(|i| &self.snapshot.sessions[*i])
    }

    pub fn context(&self) -> Context {
        if self.input.is_some() {
            Context::Input
        } else if self.help {
            Context::Help
        } else if self.feeds {
            Context::Feeds
        } else if self.log.focused && self.log.visible {
            Context::Log
        } else if self.screen == Screen::Detail {
            Context::Detail
        } else {
            Context::Table
        }
    }

    /// Filters and sorts the rows, keeping the selected session selected.
    fn reorder(&mut self) {
        let filter = self.filter.to_lowercase();
        let sessions = &self.snapshot.sessions;
        let mut order: Vec<usize> = (0..sessions.len())
            .filter(|i| {
                filter.is_empty() || sessions[*i].id.as_str().to_lowercase().contains(&filter)
            })
            .collect();
        let now = self.snapshot.taken_at;
        let key = |row: &SessionRow| -> (u64, u64) {
            match self.sort {
                SortColumn::Session => (0, 0),
                SortColumn::Transcripts => (row.transcripts, 0),
                SortColumn::Summary => op_rank(row, Operation::Summary, now),
                SortColumn::MindMap => op_rank(row, Operation::MindMap, now),
                SortColumn::Skipped => (row.ops.iter().map(|o| o.skipped).sum(), 0),
                SortColumn::Failures => (row.ops.iter().map(|o| o.failures()).sum(), 0),
                // Sessions never heard from sort as the oldest.
                SortColumn::Age => (
                    row.last_transcript_at.map_or(u64::MAX, |t| {
                        now.saturating_duration_since(t).as_millis() as u64
                    }),
                    0,
                ),
            }
        };
        // Sessions stay sorted by id within equal keys (snapshot order is by id).
        order.sort_by(|a, b| {
            let (ra, rb) = (&sessions[*a], &sessions[*b]);
            let ordering = key(ra).cmp(&key(rb));
            let ordering = if self.sort == SortColumn::Session {
                ra.id.cmp(&rb.id)
            } else {
                ordering
            };
            if self.descending {
                ordering.reverse()
            } else {
                ordering
            }
        });
        self.order = order;
        self.selected = self
            .selected_id
            .as_ref()
            .and_then(|id| self.order.iter().position(|i| &sessions[*i].id == id))
            .unwrap_or_else(|| self.selected.min(self.order.len().saturating_sub(1)));
        self.remember_selection();
    }

    fn remember_selection(&mut self) {
        self.selected_id = self.selected_row().map(|r| r.id.clone());
    }

    fn move_selection(&mut self, to: usize) {
        self.selected = to.min(self.order.len().saturating_sub(1));
        self.remember_selection();
        if self.log.scoped {
            self.log.seen_version = u64::MAX;
        }
    }

    /// Applies a key; returns what the main loop must do.
    pub fn handle_key(&mut self, key: Key) -> Vec<Command> {
        let context = self.context();
        match keymap::action_for(key, context) {
            Some(action) => self.apply(action),
            // Typing: any other printable key is text.
            None if context == Context::Input => self.edit_input(key),
            None => Vec::new(),
        }
    }

    fn apply(&mut self, action: Action) -> Vec<Command> {
        let page = self.table_rows.get().max(1);
        let in_log = self.context() == Context::Log;
        match action {
            Action::Quit => {
                self.quit = true;
                return vec![Command::Quit];
            }
            Action::Help => self.help = true,
            Action::Feeds => self.feeds = true,
            Action::Close => {
                self.help = false;
                self.feeds = false;
            }
            Action::InputKeep | Action::InputClear | Action::InputErase => {
                return self.finish_input(action);
            }
            Action::Up if in_log => self.scroll_log_up(1),
            Action::Down if in_log => self.scroll_log_down(1),
            Action::PageUp if in_log => self.scroll_log_up(page),
            Action::PageDown if in_log => self.scroll_log_down(page),
            Action::Top if in_log => self.scroll_log_up(usize::MAX / 2),
            Action::Bottom if in_log => self.scroll_log_down(usize::MAX / 2),
            Action::Up => self.move_selection(self.selected.saturating_sub(1)),
            Action::Down => self.move_selection(self.selected + 1),
            Action::PageUp => self.move_selection(self.selected.saturating_sub(page)),
            Action::PageDown => self.move_selection(self.selected + page),
            Action::Top => self.move_selection(0),
            Action::Bottom => self.move_selection(usize::MAX),
            Action::Open => {
                if self.selected_row().is_some() {
                    self.screen = Screen::Detail;
                    self.detail = None;
                }
            }
            Action::Back => {
                if in_log {
                    self.log.focused = false;
                } else {
                    self.screen = Screen::Table;
                    self.detail = None;
                    self.stored = false;
                }
            }
            action if action.changes_the_engine() && self.read_only.is_some() => {
                let why = self.read_only.clone().unwrap_or_default();
                self.say(&format!("{why}: triggers and cancels are off"), Tone::Warn);
            }
            Action::TriggerSummary => return self.trigger(vec![Operation::Summary]),
            Action::TriggerMindMap => return self.trigger(vec![Operation::MindMap]),
            Action::TriggerBoth => return self.trigger(Operation::ALL.to_vec()),
            Action::Cancel => {
                if let Some(row) = self.selected_row() {
                    return vec![Command::Cancel {
                        session: row.id.clone(),
                    }];
                }
                self.say("no session selected", Tone::Warn);
            }
            Action::Filter => {
                let (target, buffer) = if in_log {
                    (InputTarget::LogSearch, self.log.search.clone())
                } else {
                    (InputTarget::SessionFilter, self.filter.clone())
                };
                self.input = Some(Input { target, buffer });
            }
            Action::SortNext => {
                self.sort = self.sort.next();
                self.descending = !matches!(self.sort, SortColumn::Session);
                self.reorder();
                self.say(&format!("sorted by {}", self.sort.name()), Tone::Info);
            }
            Action::SortReverse => {
                self.descending = !self.descending;
                self.reorder();
            }
            Action::FocusLog => {
                self.log.visible = true;
                self.log.focused = !self.log.focused;
            }
            Action::ToggleLog => {
                self.log.visible = !self.log.visible;
                if !self.log.visible {
                    self.log.focused = false;
                }
            }
            Action::LogLevel => {
                self.log.level = match self.log.level {
                    Level::ERROR => Level::WARN,
                    Level::WARN => Level::INFO,
                    Level::INFO => Level::DEBUG,
                    Level::DEBUG => Level::TRACE,
                    _ => Level::ERROR,
                };
                self.log.seen_version = u64::MAX;
                self.say(
                    &format!("log shows {} and above", self.log.level),
                    Tone::Info,
                );
            }
            Action::LogScope => {
                self.log.scoped = !self.log.scoped;
                self.log.seen_version = u64::MAX;
                let scope = match (&self.log.scoped, &self.selected_id) {
                    (true, Some(id)) => format!("log scoped to {id}"),
                    _ => "log shows every session".to_string(),
                };
                self.say(&scope, Tone::Info);
            }
            Action::Freeze => {
                self.paused = !self.paused;
                let text = if self.paused {
                    "display frozen; data keeps coming (space resumes)"
                } else {
                    "live again"
                };
                self.say(text, Tone::Info);
            }
        }
        Vec::new()
    }

    fn trigger(&mut self, ops: Vec<Operation>) -> Vec<Command> {
        match self.selected_row() {
            Some(row) => vec![Command::Trigger {
                session: row.id.clone(),
                ops,
            }],
            None => {
                self.say("no session selected", Tone::Warn);
                Vec::new()
            }
        }
    }

    /// Shows a session read from the database, or says it was not found.
    pub fn show_stored(&mut self, session: &SessionId, detail: Option<SessionDetail>) {
        match detail {
            Some(detail) => {
                self.screen = Screen::Detail;
                self.detail = Some(detail);
                self.stored = true;
            }
            None => self.say(
                &format!("{session} · not in memory, nor in the database"),
                Tone::Warn,
            ),
        }
    }

    /// A key typed into the line being edited.
    fn edit_input(&mut self, key: Key) -> Vec<Command> {
        let Some(input) = self.input.as_mut() else {
            return Vec::new();
        };
        match key {
            Key::Char(c) if !c.is_control() && input.buffer.chars().count() < 64 => {
                input.buffer.push(c)
            }
            _ => return Vec::new(),
        }
        let (target, buffer) = (input.target, input.buffer.clone());
        self.apply_input(target, buffer);
        Vec::new()
    }

    /// Enter keeps the line, Esc clears it (both stop typing), Backspace
    /// erases a character.
    fn finish_input(&mut self, action: Action) -> Vec<Command> {
        let Some(input) = self.input.as_mut() else {
            return Vec::new();
        };
        let target = input.target;
        match action {
            Action::InputErase => {
                input.buffer.pop();
                let buffer = input.buffer.clone();
                self.apply_input(target, buffer);
            }
            Action::InputClear => {
                self.input = None;
                self.apply_input(target, String::new());
            }
            _ => {
                let buffer = input.buffer.clone();
                self.input = None;
                self.apply_input(target, buffer.clone());
                // A session id that no row matches: look for it on disk.
                if target == InputTarget::SessionFilter
                    && self.order.is_empty()
                    && let Ok(session) = SessionId::parse(buffer.trim())
                {
                    return vec![Command::OpenStored { session }];
                }
            }
        }
        Vec::new()
    }

    fn apply_input(&mut self, target: InputTarget, text: String) {
        match target {
            InputTarget::SessionFilter => {
                self.filter = text;
                self.reorder();
            }
            InputTarget::LogSearch => {
                self.log.search = text;
                self.log.seen_version = u64::MAX;
            }
        }
    }

    fn scroll_log_up(&mut self, n: usize) {
        let max = self.log.lines.len().saturating_sub(1);
        self.log.offset = self.log.offset.saturating_add(n).min(max);
        self.log.follow = self.log.offset == 0;
    }

    fn scroll_log_down(&mut self, n: usize) {
        self.log.offset = self.log.offset.saturating_sub(n);
        self.log.follow = self.log.offset == 0;
    }

    pub fn say(&mut self, text: &str, tone: Tone) {
        self.message = Some(Message {
            text: text.to_string(),
            tone,
        });
    }

    /// Reports the engine's answers to a trigger.
    pub fn show_triggered(
        &mut self,
        session: &SessionId,
        answers: &[(Operation, TriggerAnswer)],
        now: SystemTime,
    ) {
        let parts: Vec<String> = answers
            .iter()
            .map(|(op, answer)| match answer {
                TriggerAnswer::Started { run_id } => {
                    format!("{} started (run {run_id})", op.label())
                }
                TriggerAnswer::Pending {
                    running_run_id,
                    since,
                } => format!(
                    "{} pending: run {running_run_id} busy {}",
                    op.label(),
                    format::duration(now.duration_since(*since).unwrap_or_default())
                ),
                TriggerAnswer::Skipped {
                    running_run_id,
                    since,
                } => format!(
                    "{} skipped: run {running_run_id} busy {}",
                    op.label(),
                    format::duration(now.duration_since(*since).unwrap_or_default())
                ),
            })
            .collect();
        let tone = if answers
            .iter()
            .all(|(_, a)| matches!(a, TriggerAnswer::Started { .. }))
        {
            Tone::Good
        } else {
            Tone::Warn
        };
        self.say(&format!("{session} · {}", parts.join(" · ")), tone);
    }

    /// Reports what a cancel stopped.
    pub fn show_cancelled(&mut self, session: &SessionId, stopped: &[(Operation, Option<RunId>)]) {
        let parts: Vec<String> = stopped
            .iter()
            .filter_map(|(op, run)| run.map(|id| format!("{} cancelled (run {id})", op.label())))
            .collect();
        if parts.is_empty() {
            self.say(
                &format!("{session} · nothing running to cancel"),
                Tone::Info,
            );
        } else {
            self.say(&format!("{session} · {}", parts.join(" · ")), Tone::Good);
        }
    }
}

/// Sort key of an op's state: running before queued before idle, longer first.
fn op_rank(row: &SessionRow, op: Operation, now: Instant) -> (u64, u64) {
    let op = &row.ops[op.index()];
    match &op.in_flight {
        Some(run) => {
            let rank = if run.phase == Phase::Running { 3 } else { 2 };
            (
                rank,
                now.saturating_duration_since(run.admitted).as_millis() as u64,
            )
        }
        None => (1, op.last_duration.map_or(0, |d| d.as_millis() as u64)),
    }
}
