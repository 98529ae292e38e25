//! The dashboard's state and its update rules — no terminal, no I/O.
//!
//! The main loop feeds [`App`] snapshots and keys; [`App::handle_key`]
//! answers with [`Command`]s (trigger, cancel, quit) that the loop carries
//! out against the engine, reporting back through [`App::show_triggered`]
//! and [`App::show_cancelled`]. Each pane keeps its own state (see
//! `panes.rs`); views only read an `App`.

pub use super::messages::{MESSAGE_FOR, Message, Tone, shared_failure};

use super::keymap::{self, Action, Context, Key};
pub use super::panes::{DetailPane, LogPane, SessionsTable, SortColumn};
use super::theme::Theme;
use crate::engine::{SessionDetail, SessionRow, Snapshot};
use crate::logs::LogBuffer;
use crate::model::{Operation, SessionId};
use crate::tui::source::Link;

/// Which screen is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Table,
    Detail,
}

/// What a line of text input edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputTarget {
    SessionFilter,
    LogSearch,
    /// A time for the replay to go to.
    ReplayTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub target: InputTarget,
    pub buffer: String,
}

/// What the main loop must do for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Trigger {
        session: SessionId,
        ops: Vec<Operation>,
    },
    /// Cancel the runs of these operations on the session.
    Cancel {
        session: SessionId,
        ops: Vec<Operation>,
    },
    /// Read a session memory no longer holds from the database.
    OpenStored {
        session: SessionId,
    },
    /// Lift the session's own budget.
    LiftBudget {
        session: SessionId,
    },
    /// Raise the session's own budget by one more of itself.
    RaiseBudget {
        session: SessionId,
    },
    /// Move the replay.
    Replay(crate::record::Control),
    Quit,
}

/// The whole dashboard state: the snapshot shown, one state object per
/// pane, and what is up on screen.
pub struct App {
    pub theme: Theme,
    pub snapshot: Snapshot,
    pub table: SessionsTable,
    pub log: LogPane,
    pub details: DetailPane,
    pub input: Option<Input>,
    pub screen: Screen,
    pub help: bool,
    /// The feeds overlay is up.
    pub feeds: bool,
    /// The spend overlay is up.
    pub spend: bool,
    /// The table shows its cost column (when there are prices).
    pub show_cost: bool,
    pub paused: bool,
    pub message: Option<Message>,
    /// One failure shared by several sessions, said once for them all.
    pub alert: Option<String>,
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
            table: SessionsTable::default(),
            input: None,
            screen: Screen::Table,
            help: false,
            feeds: false,
            spend: false,
            show_cost: true,
            paused: false,
            message: None,
            alert: None,
            log: LogPane::default(),
            details: DetailPane::default(),
            quit: false,
            link: super::source::Link::Embedded,
            read_only: None,
        };
        app.table.reorder(&app.snapshot);
        app.alert = shared_failure(&app.snapshot);
        app
    }

    /// Takes a new snapshot (ignored while frozen).
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        if self.paused {
            return;
        }
        self.snapshot = snapshot;
        self.table.reorder(&self.snapshot);
        self.alert = shared_failure(&self.snapshot);
    }

    pub fn set_detail(&mut self, detail: Option<SessionDetail>) {
        if !self.paused {
            self.details.detail = detail;
        }
    }

    /// Re-reads the log buffer when it changed or the filters did.
    pub fn refresh_logs(&mut self, logs: &LogBuffer, force: bool) {
        if !self.paused {
            self.log.refresh(logs, self.table.selected_id(), force);
        }
    }

    /// Sizes the sessions table for a screen of `width` × `height`: its
    /// page, and a scroll that keeps the selection in view.
    pub fn fit(&mut self, width: u16, height: u16) {
        let page = super::views::table_page(ratatui::layout::Rect::new(0, 0, width, height), self);
        self.table.fit(page);
    }

    /// The session under the cursor.
    pub fn selected_row(&self) -> Option<&SessionRow> {
        self.table.selected_row(&self.snapshot)
    }

    fn move_selection(&mut self, to: usize) {
        self.table.select(to, &self.snapshot);
        if self.log.scoped {
            self.log.refilter();
        }
    }

    pub fn context(&self) -> Context {
        if self.input.is_some() {
            Context::Input
        } else if self.help {
            Context::Help
        } else if self.feeds {
            Context::Feeds
        } else if self.spend {
            Context::Spend
        } else if self.log.focused && self.log.visible {
            Context::Log
        } else if self.screen == Screen::Detail {
            Context::Detail
        } else {
            Context::Table
        }
    }

    /// Applies a key; returns what the main loop must do.
    pub fn handle_key(&mut self, key: Key) -> Vec<Command> {
        let context = self.context();
        match keymap::action_for(key, context, &self.snapshot.operations) {
            Some(action) => self.apply(action),
            // Typing: any other printable key is text.
            None if context == Context::Input => self.edit_input(key),
            None => Vec::new(),
        }
    }

    fn apply(&mut self, action: Action) -> Vec<Command> {
        let page = self.table.page.max(1);
        let in_log = self.context() == Context::Log;
        match action {
            Action::Quit => {
                self.quit = true;
                return vec![Command::Quit];
            }
            Action::Help => self.help = true,
            Action::Feeds => self.feeds = true,
            Action::Spend => self.spend = true,
            Action::ToggleCost => {
                self.show_cost = !self.show_cost;
                let text = match (self.snapshot.currency.is_empty(), self.show_cost) {
                    (true, _) => "no price table: the config file's [[prices]] gives costs",
                    (false, true) => "cost column shown",
                    (false, false) => "cost column hidden (x shows it)",
                };
                self.say(text, Tone::Info);
            }
            Action::Close => {
                self.help = false;
                self.feeds = false;
                self.spend = false;
            }
            Action::InputKeep | Action::InputClear | Action::InputErase => {
                return self.finish_input(action);
            }
            Action::Up if in_log => self.log.scroll_up(1),
            Action::Down if in_log => self.log.scroll_down(1),
            Action::PageUp if in_log => self.log.scroll_up(page),
            Action::PageDown if in_log => self.log.scroll_down(page),
            Action::Top if in_log => self.log.scroll_up(usize::MAX / 2),
            Action::Bottom if in_log => self.log.scroll_down(usize::MAX / 2),
            Action::Up => self.move_selection(self.table.selected.saturating_sub(1)),
            Action::Down => self.move_selection(self.table.selected + 1),
            Action::PageUp => self.move_selection(self.table.selected.saturating_sub(page)),
            Action::PageDown => self.move_selection(self.table.selected + page),
            Action::Top => self.move_selection(0),
            Action::Bottom => self.move_selection(usize::MAX),
            Action::Open => {
                if self.selected_row().is_some() {
                    self.screen = Screen::Detail;
                    self.details.detail = None;
                }
            }
            Action::Back => {
                if in_log {
                    self.log.focused = false;
                } else {
                    self.screen = Screen::Table;
                    self.details = DetailPane::default();
                }
            }
            action if action.changes_the_engine() && self.read_only.is_some() => {
                let why = self.read_only.clone().unwrap_or_default();
                self.say(&format!("{why}: triggers and cancels are off"), Tone::Warn);
            }
            Action::Trigger(op) => return self.trigger(vec![op]),
            Action::TriggerAll => return self.trigger(self.shown_ops()),
            Action::LiftBudget | Action::RaiseBudget => {
                if let Some(row) = self.selected_row() {
                    let session = row.id.clone();
                    return vec![if action == Action::LiftBudget {
                        Command::LiftBudget { session }
                    } else {
                        Command::RaiseBudget { session }
                    }];
                }
                self.say("no session selected", Tone::Warn);
            }
            Action::Cancel => {
                let ops = self.shown_ops();
                if let Some(row) = self.selected_row() {
                    return vec![Command::Cancel {
                        session: row.id.clone(),
                        ops,
                    }];
                }
                self.say("no session selected", Tone::Warn);
            }
            Action::Filter => {
                let (target, buffer) = if in_log {
                    (InputTarget::LogSearch, self.log.search.clone())
                } else {
                    (InputTarget::SessionFilter, self.table.filter.clone())
                };
                self.input = Some(Input { target, buffer });
            }
            Action::SortNext => {
                let cost = self.show_cost && !self.snapshot.currency.is_empty();
                self.table.sort = self.table.sort.next(&self.shown_ops(), cost);
                self.table.descending = !matches!(self.table.sort, SortColumn::Session);
                self.table.reorder(&self.snapshot);
                self.say(&format!("sorted by {}", self.table.sort.name()), Tone::Info);
            }
            Action::SortReverse => {
                self.table.descending = !self.table.descending;
                self.table.reorder(&self.snapshot);
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
                self.log.next_level();
                self.say(
                    &format!("log shows {} and above", self.log.level),
                    Tone::Info,
                );
            }
            Action::LogScope => {
                self.log.scoped = !self.log.scoped;
                self.log.refilter();
                let scope = match (&self.log.scoped, self.table.selected_id()) {
                    (true, Some(id)) => format!("log scoped to {id}"),
                    _ => "log shows every session".to_string(),
                };
                self.say(&scope, Tone::Info);
            }
            Action::ReplayToggle
            | Action::ReplayStep
            | Action::ReplayBack
            | Action::ReplayForward
            | Action::ReplaySlower
            | Action::ReplayFaster
            | Action::ReplaySeek => return self.move_replay(action),
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

    /// The operations the source runs (the server's, when attached).
    pub fn shown_ops(&self) -> Vec<Operation> {
        self.snapshot.operations.iter().map(|d| d.op).collect()
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
                self.details = DetailPane {
                    detail: Some(detail),
                    stored: true,
                };
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
    /// A key that moves a replay: the command for it, or why not.
    fn move_replay(&mut self, action: Action) -> Vec<Command> {
        use crate::record::Control;
        let Link::Replay(_) = &self.link else {
            self.say(
                "not a replay: `inflight replay FILE` plays a recording",
                Tone::Warn,
            );
            return Vec::new();
        };
        let control = match action {
            Action::ReplayToggle => Control::Toggle,
            Action::ReplayStep => Control::Step,
            Action::ReplayBack => Control::SeekBy(-10),
            Action::ReplayForward => Control::SeekBy(10),
            Action::ReplaySlower => Control::Slower,
            Action::ReplayFaster => Control::Faster,
            _ => {
                self.input = Some(Input {
                    target: InputTarget::ReplayTime,
                    buffer: String::new(),
                });
                return Vec::new();
            }
        };
        vec![Command::Replay(control)]
    }

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
                if target == InputTarget::ReplayTime {
                    return self.seek_to(&buffer);
                }
                self.apply_input(target, buffer.clone());
                // A session id that no row matches: look for it on disk.
                if target == InputTarget::SessionFilter
                    && self.table.order.is_empty()
                    && let Ok(session) = SessionId::parse(buffer.trim())
                {
                    return vec![Command::OpenStored { session }];
                }
            }
        }
        Vec::new()
    }

    /// The replay goes to `text`: seconds or `m:ss` into the recording,
    /// or `HH:MM:SS` on its clock (UTC, as the header shows it).
    fn seek_to(&mut self, text: &str) -> Vec<Command> {
        let Link::Replay(at) = &self.link else {
            return Vec::new();
        };
        match replay_time(text.trim(), at) {
            Some(to) => vec![Command::Replay(crate::record::Control::SeekTo(to))],
            None => {
                self.say(
                    &format!("{text:?} is not a time: write 90, 1:30 (into the recording) or 14:03:27 (its clock)"),
                    Tone::Warn,
                );
                Vec::new()
            }
        }
    }

    fn apply_input(&mut self, target: InputTarget, text: String) {
        match target {
            InputTarget::ReplayTime => {}
            InputTarget::SessionFilter => {
                self.table.filter = text;
                self.table.reorder(&self.snapshot);
            }
            InputTarget::LogSearch => {
                self.log.search = text;
                self.log.refilter();
            }
        }
    }
}

/// Microseconds into the replay for `text`: `90` or `1:30` from its start,
/// or `14:03:27` on its clock (UTC), the day of the replay's moment.
fn replay_time(text: &str, at: &crate::tui::source::ReplayAt) -> Option<u64> {
    let parts: Vec<u64> = text
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let into = match parts[..] {
        [s] => s * 1_000_000,
        [m, s] if s < 60 => (m * 60 + s) * 1_000_000,
        [h, m, s] if h < 24 && m < 60 && s < 60 => {
            let now_us = at.started_unix_us + at.at_us;
            let day = now_us / 86_400_000_000 * 86_400_000_000;
            let wanted = day + (h * 3600 + m * 60 + s) * 1_000_000;
            wanted.checked_sub(at.started_unix_us)?
        }
        _ => return None,
    };
    Some(into.min(at.length_us))
}
