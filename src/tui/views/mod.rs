//! Drawing: turns an [`App`] into a frame. Views read, never change, state
//! (the table's paging cells aside), and take "now" from the snapshot so
//! a frozen display stays still and tests are deterministic.

mod detail;
mod feeds;
mod footer;
mod header;
mod help;
mod log;
mod table;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};

use super::app::{App, Screen};

/// Below this height the log pane only shows while it has the focus.
pub const LOG_PANE_MIN_HEIGHT: u16 = 30;

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(area);
    header::draw(frame, top, app);
    let (main, log_area) = split_for_log(body, app);
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
