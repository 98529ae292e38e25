//! The sessions table: one row per session, columns that collapse by
//! priority on narrow terminals, only the visible rows built (smooth at
//! 10 000 sessions).

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Table};
use tokio::time::Instant;

use crate::engine::{OpRow, SessionRow};
use crate::format;
use crate::model::Operation;
use crate::state::Phase;
use crate::tui::app::{App, SortColumn};
use crate::tui::theme::Theme;

/// What a cell needs besides its row.
struct Ctx<'a> {
    theme: &'a Theme,
    now: Instant,
    wide_states: bool,
    timeout: std::time::Duration,
    /// This instance's name, in a cluster.
    instance: Option<&'a str>,
}

struct Column {
    title: String,
    width: u16,
    /// Lower is kept longer when space runs out.
    priority: u8,
    sort: Option<SortColumn>,
    cell: CellOf,
}

/// What a column's cells show.
#[derive(Clone, Copy)]
enum CellOf {
    Fixed(fn(&SessionRow, &Ctx) -> Cell<'static>),
    /// One operation's state.
    State(Operation),
    /// Each operation's value, `a/b/c`.
    PerOp(fn(&OpRow) -> String),
}

/// A column of this priority also gives way to wide state cells: a
/// failure's cause matters more than an estimate.
const GIVES_WAY: u8 = 7;
const STATE_WIDTH: u16 = 16;
const WIDE_STATE_WIDTH: u16 = 21;
const SESSION_MIN: u16 = 12;

/// The table's columns: one state column per operation, in the order the
/// operations are defined (the first two kept longest, the others giving
/// way sooner on narrow screens); in a cluster, one more says where runs
/// run.
fn columns(ops: &[crate::ops::OpDef], cluster: bool, cost: bool) -> Vec<Column> {
    let fixed = |title: &str, width, priority, sort, cell| Column {
        title: title.to_string(),
        width,
        priority,
        sort,
        cell: CellOf::Fixed(cell),
    };
    // `S/M`: each operation's initial, as the pair cells read.
    let initials: Vec<String> = ops
        .iter()
        .map(|d| {
            d.label
                .chars()
                .next()
                .unwrap_or('?')
                .to_uppercase()
                .to_string()
        })
        .collect();
    let per_op = |title: &str, each: u16, priority, sort, cell| Column {
        title: format!("{title} {}", initials.join("/")),
        width: (each + 1) * ops.len().max(1) as u16 - 1,
        priority,
        sort,
        cell: CellOf::PerOp(cell),
    };
    let mut cols = vec![
        fixed("!", 1, 0, None, warning_cell),
        fixed(
            "Session",
            SESSION_MIN,
            0,
            Some(SortColumn::Session),
            session_cell,
        ),
        fixed("Feed", 4, 6, None, feed_cell),
        fixed("Tx", 5, 2, Some(SortColumn::Transcripts), transcripts_cell),
    ];
    for (i, def) in ops.iter().enumerate() {
        cols.push(Column {
            title: crate::format::fit(&def.label, STATE_WIDTH as usize),
            width: STATE_WIDTH,
            priority: if i < 2 { 0 } else { 1 },
            sort: Some(SortColumn::Op(def.op)),
            cell: CellOf::State(def.op),
        });
    }
    cols.push(per_op("Last", 5, 4, None, |op| {
        op.last_duration.map_or("-".to_string(), format::duration)
    }));
    let mut skipped = per_op("Skipped", 4, 1, Some(SortColumn::Skipped), |op| {
        format::count(op.counts.skipped)
    });
    skipped.title = "Skipped".into();
    cols.push(skipped);
    cols.push(fixed("Runs", 5, 5, None, runs_cell));
    cols.push(fixed(
        "Fail",
        4,
        3,
        Some(SortColumn::Failures),
        failures_cell,
    ));
    if cost {
        cols.push(fixed("Cost", 8, 3, Some(SortColumn::Cost), cost_cell));
    }
    cols.push(fixed("Fresh", 5, GIVES_WAY, None, fresh_cell));
    cols.push(fixed("Age", 5, 2, Some(SortColumn::Age), age_cell));
    if cluster {
        cols.insert(4 + ops.len(), fixed("On", 12, 3, None, instance_cell));
    }
    cols
}

/// Picks the columns that fit `width`, dropping the least important first.
fn fit_columns(
    width: u16,
    ops: &[crate::ops::OpDef],
    cluster: bool,
    cost: bool,
) -> (Vec<Column>, bool) {
    let mut cols = columns(ops, cluster, cost);
    let spacing = |n: usize| n.saturating_sub(1) as u16;
    let total = |cols: &[Column]| cols.iter().map(|c| c.width).sum::<u16>() + spacing(cols.len());
    while total(&cols) > width {
        let Some((i, _)) = cols
            .iter()
            .enumerate()
            .filter(|(_, c)| c.priority > 0)
            .max_by_key(|(_, c)| c.priority)
        else {
            break;
        };
        cols.remove(i);
    }
    // Room to spare: state cells get tokens per second.
    let states = cols
        .iter()
        .filter(|c| matches!(c.cell, CellOf::State(_)))
        .count() as u16;
    let fits_wide =
        |cols: &[Column]| total(cols) + states * (WIDE_STATE_WIDTH - STATE_WIDTH) + 12 <= width;
    let mut wide = fits_wide(&cols);
    if !wide && let Some(i) = cols.iter().position(|c| c.priority >= GIVES_WAY) {
        let giving_way = cols.remove(i);
        wide = fits_wide(&cols);
        if !wide {
            cols.insert(i, giving_way);
        }
    }
    if wide {
        for c in cols
            .iter_mut()
            .filter(|c| matches!(c.cell, CellOf::State(_)))
        {
            c.width = WIDE_STATE_WIDTH;
        }
    }
    (cols, wide)
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let title = format!(
        " Sessions {}{} · sorted by {}{} ",
        app.table.order.len(),
        if app.table.filter.is_empty() {
            String::new()
        } else {
            format!(" matching {:?}", app.table.filter)
        },
        app.table.sort.name(),
        if app.table.descending { " ↓" } else { " ↑" },
    );
    let block = Block::default()
        .borders(Borders::TOP)
        .title(Span::styled(title, t.title()))
        .border_style(t.dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let instance = app.snapshot.cluster.as_ref().map(|c| c.instance.as_str());
    let cost = app.show_cost && !app.snapshot.currency.is_empty();
    let (cols, wide) = fit_columns(
        inner.width,
        &app.snapshot.operations,
        instance.is_some(),
        cost,
    );
    let visible = inner.height.saturating_sub(1) as usize;
    // The loop fitted the table to this screen before drawing; this only
    // makes sure of it (a test may draw without fitting).
    let offset = crate::tui::panes::scroll_offset(
        app.table.offset,
        app.table.selected,
        visible,
        app.table.order.len(),
    );

    let ctx = Ctx {
        theme: t,
        now: app.snapshot.taken_at,
        wide_states: wide,
        instance,
        timeout: app.snapshot.op_timeout,
    };
    let header = Row::new(cols.iter().map(|c| {
        let marker = match c.sort {
            Some(sort) if sort == app.table.sort => {
                if app.table.descending {
                    "↓"
                } else {
                    "↑"
                }
            }
            _ => "",
        };
        Cell::from(format!("{}{marker}", c.title))
    }))
    .style(t.header_cell());
    let rows = app
        .table
        .order
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(pos, index)| {
            let row = &app.snapshot.sessions[*index];
            let r = Row::new(
                cols.iter()
                    .map(|c| cell(c, row, &ctx, &app.snapshot.operations)),
            );
            if pos == app.table.selected {
                r.style(t.selected())
            } else {
                r
            }
        });
    let widths: Vec<Constraint> = cols
        .iter()
        .map(|c| {
            if c.title == "Session" {
                Constraint::Min(c.width)
            } else {
                Constraint::Length(c.width)
            }
        })
        .collect();
    let table = Table::new(rows, widths).header(header).column_spacing(1);
    frame.render_widget(table, inner);
    if app.table.order.is_empty() {
        let empty = if app.snapshot.sessions.is_empty() {
            "waiting for transcripts…"
        } else {
            "no session matches the filter"
        };
        if inner.height > 2 {
            let line = Rect {
                y: inner.y + 2,
                height: 1,
                ..inner
            };
            frame.render_widget(Line::styled(format!("  {empty}"), t.dim()), line);
        }
    }
}

fn cell(column: &Column, row: &SessionRow, ctx: &Ctx, ops: &[crate::ops::OpDef]) -> Cell<'static> {
    match column.cell {
        CellOf::Fixed(cell) => cell(row, ctx),
        CellOf::State(op) => state_cell(row, op, ctx),
        CellOf::PerOp(value) => Cell::from(
            ops.iter()
                .map(|d| value(row.op(d.op)))
                .collect::<Vec<_>>()
                .join("/"),
        ),
    }
}

fn warning_cell(row: &SessionRow, ctx: &Ctx) -> Cell<'static> {
    if crate::engine::attention(row, ctx.now, ctx.timeout).is_empty() {
        Cell::from(" ")
    } else {
        Cell::from(Span::styled("!", ctx.theme.warning()))
    }
}

fn session_cell(row: &SessionRow, ctx: &Ctx) -> Cell<'static> {
    let mut spans = vec![Span::raw(row.id.to_string())];
    if row.ended {
        spans.push(Span::styled(" ■", ctx.theme.dim()));
    }
    Cell::from(Line::from(spans))
}

fn feed_cell(row: &SessionRow, _: &Ctx) -> Cell<'static> {
    Cell::from(row.feed.map_or("-".to_string(), |f| format!("#{f}")))
}

fn transcripts_cell(row: &SessionRow, _: &Ctx) -> Cell<'static> {
    Cell::from(format::count(row.transcripts))
}

/// Glyph, word, duration, tokens/s (wide), pending mark; for an idle op
/// whose last result misses the newest transcripts, how many it misses.
pub fn state_spans(
    op: &OpRow,
    transcripts: u64,
    theme: &Theme,
    now: Instant,
    wide: bool,
) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    match &op.in_flight {
        Some(run) => {
            let elapsed = format::duration(now.saturating_duration_since(run.admitted));
            match run.phase {
                Phase::Running => {
                    // The call's own time: what --op-timeout counts.
                    let calling = run.started.map_or(elapsed, |at| {
                        format::duration(now.saturating_duration_since(at))
                    });
                    spans.push(Span::styled(format!("▶ run {calling}"), theme.running()));
                    if wide && let Some((_, rate)) = op.tokens {
                        spans.push(Span::styled(format!(" {rate:.0}t/s"), theme.running()));
                    }
                }
                Phase::Queued if run.retry.is_some() => {
                    // Waiting to retry a failed run: which retry (`↻2`),
                    // and why, where it fits.
                    let retry = format!("↻{}", run.retry.unwrap_or(1));
                    let room = if wide { WIDE_STATE_WIDTH } else { STATE_WIDTH } as usize;
                    let room = room.saturating_sub(retry.chars().count() + 3);
                    spans.push(Span::styled(retry, theme.warning()));
                    let cause = op.last_error.as_deref().map(|e| fitted_cause(e, room));
                    let cause = cause.filter(|c| c.chars().count() <= room);
                    spans.push(Span::styled(
                        format!(" ✗ {}", cause.unwrap_or_default()),
                        theme.error(),
                    ));
                }
                Phase::Queued => {
                    spans.push(Span::styled(format!("◷ queue {elapsed}"), theme.queued()))
                }
            }
            if run.pending {
                spans.push(Span::styled(" +1", theme.pending()));
            }
        }
        None if op.consecutive_failures > 0 => {
            // Left behind (its retries spent): said before the cause.
            let stale = if op.is_stale(transcripts) {
                "stale "
            } else {
                ""
            };
            let room = if wide { WIDE_STATE_WIDTH } else { STATE_WIDTH } as usize - 2 - stale.len();
            let cause = op
                .last_error
                .as_deref()
                .map_or_else(|| "failed".into(), |e| fitted_cause(e, room));
            spans.push(Span::styled(format!("✗ {stale}{cause}"), theme.error()))
        }
        None if op.counts.runs == 0 => spans.push(Span::styled("· never", theme.idle())),
        None => match transcripts.saturating_sub(op.covered_generation.unwrap_or(0)) {
            0 => spans.push(Span::styled("· idle", theme.idle())),
            behind => spans.push(Span::styled(
                format!("· stale {behind} new"),
                theme.warning(),
            )),
        },
    }
    spans
}

fn state_cell(row: &SessionRow, op: Operation, ctx: &Ctx) -> Cell<'static> {
    if row.over_budget.is_some() && row.op(op).in_flight.is_none() {
        // Its budget is spent: nothing runs until there is room.
        return Cell::from(Span::styled("⊘ budget", ctx.theme.warning()));
    }
    Cell::from(Line::from(state_spans(
        row.op(op),
        row.transcripts,
        ctx.theme,
        ctx.now,
        ctx.wide_states,
    )))
}

/// Where the session's runs run, in a cluster: `here`, another
/// instance's name, or each place runs run (`here/b`).
fn instance_cell(row: &SessionRow, ctx: &Ctx) -> Cell<'static> {
    let mut places: Vec<String> = Vec::new();
    for op in row.ops.values() {
        let Some(name) = op.in_flight.as_ref().and_then(|r| r.instance.as_deref()) else {
            continue;
        };
        let place = if Some(name) == ctx.instance {
            "here".to_string()
        } else {
            name.to_string()
        };
        if !places.contains(&place) {
            places.push(place);
        }
    }
    let text = if places.is_empty() {
        "-".to_string()
    } else {
        places.join("/")
    };
    let style = if text == "-" || text == "here" {
        ctx.theme.dim()
    } else {
        ctx.theme.base()
    };
    Cell::from(Span::styled(format::fit(&text, 12), style))
}

fn runs_cell(row: &SessionRow, _: &Ctx) -> Cell<'static> {
    Cell::from(format::count(row.ops.values().map(|o| o.counts.runs).sum()))
}

fn failures_cell(row: &SessionRow, ctx: &Ctx) -> Cell<'static> {
    let n: u64 = row.ops.values().map(|o| o.failures()).sum();
    let style = if n > 0 {
        ctx.theme.error()
    } else {
        Style::new()
    };
    Cell::from(Span::styled(format::count(n), style))
}

/// When every operation's result will next cover what was said.
fn fresh_cell(row: &SessionRow, ctx: &Ctx) -> Cell<'static> {
    use crate::engine::freshness::Freshness;
    let fresh = Freshness::of_all(row.ops.values().map(|op| op.fresh));
    let style = match fresh {
        Freshness::Fresh => ctx.theme.ok(),
        Freshness::Stopped => ctx.theme.warning(),
        Freshness::Unknown => ctx.theme.dim(),
        Freshness::In(_) => ctx.theme.base(),
    };
    Cell::from(Span::styled(fresh.short(), style))
}

fn cost_cell(row: &SessionRow, ctx: &Ctx) -> Cell<'static> {
    let cost = row.cost();
    let style = if cost == crate::spend::Cost::ZERO {
        ctx.theme.dim()
    } else {
        ctx.theme.base()
    };
    Cell::from(Span::styled(cost.short(), style))
}

fn age_cell(row: &SessionRow, ctx: &Ctx) -> Cell<'static> {
    Cell::from(row.last_transcript_at.map_or("-".to_string(), |t| {
        format::age(ctx.now.saturating_duration_since(t))
    }))
}

/// The short cause of `error` where it fits in `room`, else its first word
/// (`500`).
fn fitted_cause(error: &str, room: usize) -> String {
    let cause = crate::engine::short_cause(error);
    if cause.chars().count() <= room {
        cause
    } else {
        cause
            .split_whitespace()
            .next()
            .unwrap_or("failed")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_collapse_by_priority() {
        let ops = crate::ops::OpRegistry::built_in().defs().to_vec();
        let (narrow, _) = fit_columns(78, &ops, false, true);
        let titles: Vec<&str> = narrow.iter().map(|c| c.title.as_str()).collect();
        assert!(
            titles.contains(&"Summary")
                && titles.contains(&"Mind map")
                && titles.contains(&"Skipped")
        );
        assert!(!titles.contains(&"Feed") && !titles.contains(&"Cost"));
        let (wide, wide_states) = fit_columns(138, &ops, false, true);
        assert_eq!(wide.len(), columns(&ops, false, true).len());
        assert!(wide_states);
        let titles: Vec<String> = wide.iter().map(|c| c.title.clone()).collect();
        assert!(titles.contains(&"Last S/M".to_string()), "{titles:?}");
        assert!(titles.contains(&"Cost".to_string()), "{titles:?}");
        let (unpriced, _) = fit_columns(138, &ops, false, false);
        assert!(unpriced.iter().all(|c| c.title != "Cost"));
    }
}
