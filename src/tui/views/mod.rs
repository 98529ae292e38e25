//! Drawing: turns an [`App`] into a frame. Views read, never change, state,
//! and take "now" from the snapshot so a frozen display stays still and
//! tests are deterministic. [`table_page`] tells the main loop, before it
//! draws, how many rows the table will show.

mod detail;
mod feeds;
mod footer;
mod header;
mod help;
mod log;
mod spend;
mod table;

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::app::{App, Screen};

/// Below this height the log pane shows beside the details only while it
/// has the focus (the details need the rows).
pub const LOG_PANE_MIN_HEIGHT: u16 = 30;
/// The fewest rows the log pane takes when it shows: its title and two lines.
const LOG_MIN_ROWS: u16 = 3;

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let (top, main, log_area, bottom) = areas(area, app);
    header::draw(frame, top, app);
    match app.screen {
        Screen::Table => table::draw(frame, main, app),
        Screen::Detail => detail::draw(frame, main, app),
    }
    if let Some(log_area) = log_area {
        log::draw(frame, log_area, app);
    }
    footer::draw(frame, bottom, app);
    if app.help {
        help::draw(frame, area, app);
    } else if app.feeds {
        feeds::draw(frame, area, app);
    } else if app.spend {
        spend::draw(frame, area, app);
    }
}

/// The areas of a frame: header, main pane, log pane (if shown), footer.
fn areas(area: Rect, app: &App) -> (Rect, Rect, Option<Rect>, Rect) {
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(area);
    let (main, log) = split_for_log(body, app);
    (top, main, log, bottom)
}

/// How many session rows the table shows in a frame of `area`.
pub fn table_page(area: Rect, app: &App) -> usize {
    let (_, main, _, _) = areas(area, app);
    // The title line and the column header.
    main.height.saturating_sub(2) as usize
}

/// Splits the body between the main pane and the log. Beside the table the
/// log takes every row the table does not need (at least a third when the
/// table is long), and most of them while it has the focus; beside the
/// details it takes a third, on screens of 30 rows or more or when focused.
fn split_for_log(body: Rect, app: &App) -> (Rect, Option<Rect>) {
    if !app.log.visible || body.height < 3 + LOG_MIN_ROWS {
        return (body, None);
    }
    let log_rows = match app.screen {
        Screen::Table => {
            // The title, the column header, and a row per session (one
            // line saying there are none when there are none).
            let wanted = app.table.order.len().max(1) as u16 + 2;
            let least_log = if app.log.focused {
                body.height * 60 / 100
            } else {
                (body.height / 3).max(LOG_MIN_ROWS)
            };
            body.height - wanted.clamp(3, body.height - least_log.max(LOG_MIN_ROWS))
        }
        Screen::Detail => {
            let total = body.height + 4;
            if app.log.focused && total < LOG_PANE_MIN_HEIGHT {
                body.height * 60 / 100
            } else if total >= LOG_PANE_MIN_HEIGHT || app.log.focused {
                body.height * 32 / 100
            } else {
                return (body, None);
            }
        }
    };
    let [main, log] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(log_rows.max(LOG_MIN_ROWS)),
    ])
    .areas(body);
    (main, Some(log))
}

/// Draws `lines` in a bordered box centred on `area`, over what is there;
/// a line wider than the box wraps (a narrow terminal loses nothing).
fn popup(frame: &mut Frame, area: Rect, app: &App, title: &str, width: u16, lines: Vec<Line>) {
    let t = &app.theme;
    let inner = width.min(area.width).saturating_sub(2).max(1) as usize;
    let rows: usize = lines.iter().map(|l| l.width().max(1).div_ceil(inner)).sum();
    let height = (rows as u16).saturating_add(2).min(area.height);
    let [vertical] = Layout::vertical([Constraint::Length(height)])
        .flex(Flex::Center)
        .areas(area);
    let [popup] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(vertical);
    frame.render_widget(Clear, popup);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(format!(" {title} "), t.title()))
        .border_style(t.focused_border());
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(ratatui::widgets::Wrap { trim: false }),
        popup,
    );
}
