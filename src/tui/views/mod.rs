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
mod table;

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::app::{App, Screen};

/// Below this height the log pane only shows while it has the focus.
pub const LOG_PANE_MIN_HEIGHT: u16 = 30;

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

fn split_for_log(body: Rect, app: &App) -> (Rect, Option<Rect>) {
    let total = body.height + 4;
    let show = app.log.visible && (total >= LOG_PANE_MIN_HEIGHT || app.log.focused);
    if !show {
        return (body, None);
    }
    let share = if app.log.focused && total < LOG_PANE_MIN_HEIGHT {
        60
    } else {
        32
    };
    let [main, log] = Layout::vertical([
        Constraint::Percentage(100 - share),
        Constraint::Percentage(share),
    ])
    .areas(body);
    (main, Some(log))
}

/// Draws `lines` in a bordered box centred on `area`, over what is there.
fn popup(frame: &mut Frame, area: Rect, app: &App, title: &str, width: u16, lines: Vec<Line>) {
    let t = &app.theme;
    let height = (lines.len() as u16 + 2).min(area.height);
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
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}
