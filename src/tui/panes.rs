//! Each pane's own state: the sessions table (order, selection, sort,
//! filter, paging), the log pane (filters, scrolling, the lines that pass),
//! and the details. [`super::app::App`] holds one of each and routes keys to
//! them; views only read them.

use tokio::time::Instant;
use tracing::Level;

use crate::engine::{SessionDetail, SessionRow, Snapshot};
use crate::logs::{LogBuffer, LogLine};
use crate::model::{Operation, SessionId};
use crate::state::Phase;

/// Columns the table can be sorted by, in the order `o` walks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortColumn {
    Session,
    Transcripts,
    /// One operation's state.
    Op(Operation),
    Skipped,
    Failures,
    /// What the session's calls cost (with a price table).
    Cost,
    Age,
}

impl SortColumn {
    pub fn name(self) -> String {
        match self {
            SortColumn::Session => "session".into(),
            SortColumn::Transcripts => "transcripts".into(),
            SortColumn::Op(op) => op.label(),
            SortColumn::Skipped => "skipped".into(),
            SortColumn::Failures => "failures".into(),
            SortColumn::Cost => "cost".into(),
            SortColumn::Age => "age".into(),
        }
    }

    /// The column after this one, where `ops` are the operations shown
    /// and `cost` says whether the cost column is.
    pub fn next(self, ops: &[Operation], cost: bool) -> Self {
        let order: Vec<SortColumn> = [SortColumn::Session, SortColumn::Transcripts]
            .into_iter()
            .chain(ops.iter().map(|op| SortColumn::Op(*op)))
            .chain([SortColumn::Skipped, SortColumn::Failures])
            .chain(cost.then_some(SortColumn::Cost))
            .chain([SortColumn::Age])
            .collect();
        let i = order.iter().position(|c| *c == self).unwrap_or(0);
        order[(i + 1) % order.len()]
    }
}

/// The sessions table: which rows show, in which order, which is selected,
/// and which page of them is on screen.
#[derive(Debug, Clone)]
pub struct SessionsTable {
    /// Indices into the snapshot's sessions: filtered and sorted.
    pub order: Vec<usize>,
    /// Position in `order`.
    pub selected: usize,
    selected_id: Option<SessionId>,
    pub sort: SortColumn,
    pub descending: bool,
    pub filter: String,
    /// The first row on screen.
    pub offset: usize,
    /// How many rows the screen shows (set before each draw).
    pub page: usize,
}

impl Default for SessionsTable {
    fn default() -> Self {
        Self {
            order: Vec::new(),
            selected: 0,
            selected_id: None,
            sort: SortColumn::Session,
            descending: false,
            filter: String::new(),
            offset: 0,
            page: 10,
        }
    }
}

impl SessionsTable {
    /// The selected row of `snapshot`.
    pub fn selected_row<'a>(&self, snapshot: &'a Snapshot) -> Option<&'a SessionRow> {
        self.order
            .get(self.selected)
            .map(|i| &snapshot.sessions[*i])
    }

    pub fn selected_id(&self) -> Option<&SessionId> {
        self.selected_id.as_ref()
    }

    /// Filters and sorts `snapshot`'s rows, keeping the selected session
    /// selected.
    pub fn reorder(&mut self, snapshot: &Snapshot) {
        let filter = self.filter.to_lowercase();
        let sessions = &snapshot.sessions;
        let mut order: Vec<usize> = (0..sessions.len())
            .filter(|i| {
                filter.is_empty() || sessions[*i].id.as_str().to_lowercase().contains(&filter)
            })
            .collect();
        let now = snapshot.taken_at;
        let sort = self.sort;
        let key = |row: &SessionRow| -> (u64, u64) {
            match sort {
                SortColumn::Session => (0, 0),
                SortColumn::Transcripts => (row.transcripts, 0),
                SortColumn::Op(op) => op_rank(row, op, now),
                SortColumn::Skipped => (row.ops.values().map(|o| o.counts.skipped).sum(), 0),
                SortColumn::Failures => (row.ops.values().map(|o| o.failures()).sum(), 0),
                SortColumn::Cost => (row.cost().0, 0),
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
            let ordering = if sort == SortColumn::Session {
                ra.id.cmp(&rb.id)
            } else {
                key(ra).cmp(&key(rb))
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
        self.remember(snapshot);
    }

    fn remember(&mut self, snapshot: &Snapshot) {
        self.selected_id = self.selected_row(snapshot).map(|r| r.id.clone());
    }

    /// Selects position `to` (clamped to the rows there are).
    pub fn select(&mut self, to: usize, snapshot: &Snapshot) {
        self.selected = to.min(self.order.len().saturating_sub(1));
        self.remember(snapshot);
    }

    /// Sets how many rows the screen shows, and scrolls so the selection
    /// is among them.
    pub fn fit(&mut self, page: usize) {
        self.page = page.max(1);
        self.offset = scroll_offset(self.offset, self.selected, self.page, self.order.len());
    }
}

/// The first row to show so that `selected` is visible, moving as little as
/// possible from `previous`.
pub(crate) fn scroll_offset(previous: usize, selected: usize, visible: usize, len: usize) -> usize {
    if visible == 0 {
        return 0;
    }
    let max_offset = len.saturating_sub(visible);
    let mut offset = previous.min(max_offset);
    if selected < offset {
        offset = selected;
    } else if selected >= offset + visible {
        offset = selected + 1 - visible;
    }
    offset
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

impl LogPane {
    /// Re-reads `logs` when they changed or the filters did; `scope` is the
    /// selected session, for a scoped pane.
    pub fn refresh(&mut self, logs: &LogBuffer, scope: Option<&SessionId>, force: bool) {
        let version = logs.version();
        if version == self.seen_version && !force {
            return;
        }
        self.seen_version = version;
        let level = self.level;
        let scope = self
            .scoped
            .then(|| scope.map(|s| s.as_str().to_string()))
            .flatten();
        let search = self.search.to_lowercase();
        let before = self.lines.len();
        self.lines = logs.lines_where(|line| {
            line.level <= level
                && scope
                    .as_ref()
                    .is_none_or(|s| line.session.as_deref() == Some(s.as_str()))
                && (search.is_empty() || line.text.to_lowercase().contains(&search))
        });
        // Keep the view still while scrolled up: new lines push the offset.
        if !self.follow && self.lines.len() > before && !force {
            self.offset += self.lines.len() - before;
        }
        self.offset = self.offset.min(self.lines.len().saturating_sub(1));
    }

    /// The filters changed: read the lines again at the next refresh.
    pub fn refilter(&mut self) {
        self.seen_version = u64::MAX;
    }

    pub fn scroll_up(&mut self, n: usize) {
        let max = self.lines.len().saturating_sub(1);
        self.offset = self.offset.saturating_add(n).min(max);
        self.follow = self.offset == 0;
    }

    pub fn scroll_down(&mut self, n: usize) {
        self.offset = self.offset.saturating_sub(n);
        self.follow = self.offset == 0;
    }

    /// The next, more verbose, level (after TRACE, ERROR again).
    pub fn next_level(&mut self) {
        self.level = match self.level {
            Level::ERROR => Level::WARN,
            Level::WARN => Level::INFO,
            Level::INFO => Level::DEBUG,
            Level::DEBUG => Level::TRACE,
            _ => Level::ERROR,
        };
        self.refilter();
    }
}

/// The details screen: the open session as last read.
#[derive(Debug, Clone, Default)]
pub struct DetailPane {
    pub detail: Option<SessionDetail>,
    /// Read from the database (memory forgot the session): it stays as
    /// read, not refreshed from snapshots.
    pub stored: bool,
}

/// Sort key of an op's state: running before queued before idle, longer first.
fn op_rank(row: &SessionRow, op: Operation, now: Instant) -> (u64, u64) {
    let op = row.op(op);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrolling_keeps_the_selection_in_view_and_moves_little() {
        assert_eq!(scroll_offset(0, 5, 10, 100), 0);
        assert_eq!(scroll_offset(0, 15, 10, 100), 6);
        assert_eq!(scroll_offset(20, 15, 10, 100), 15);
        assert_eq!(scroll_offset(95, 99, 10, 100), 90);
        assert_eq!(scroll_offset(3, 0, 10, 4), 0);
    }
}
