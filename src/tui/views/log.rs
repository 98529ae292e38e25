//! The live log pane: newest lines at the bottom, following them until the
//! operator scrolls up. Long lines wrap, so an error is read whole.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use crate::format;
use crate::tui::app::App;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let pane = &app.log;
    let mut title = vec![
        Span::styled(" Log ", t.title()),
        Span::styled(
            format!("· {}+ ", pane.level.as_str().to_lowercase()),
            t.dim(),
        ),
    ];
    if pane.scoped {
        let scope = app
            .selected_row()
            .map_or("no session".to_string(), |r| r.id.to_string());
        title.push(Span::styled(format!("· {scope} "), t.dim()));
    }
    if !pane.search.is_empty() {
        title.push(Span::styled(format!("· /{} ", pane.search), t.dim()));
    }
    if pane.follow {
        title.push(Span::styled("· following ", t.dim()));
    } else {
        title.push(Span::styled(
            format!("· ↑{} (G follows) ", pane.offset),
            t.warning(),
        ));
    }
    let border = if pane.focused {
        t.focused_border()
    } else {
        t.dim()
    };
    let block = Block::default()
        .borders(Borders::TOP)
        .title(Line::from(title))
        .border_style(border);
    let inner = block.inner(area);
    let height = inner.height as usize;
    let end = pane.lines.len().saturating_sub(pane.offset);
    // Newest first until the pane is full; a long line wraps under its
    // text, so nothing is cut at the right edge.
    let text_width = (inner.width as usize).saturating_sub(PREFIX).max(8);
    let mut rows: Vec<Line> = Vec::new();
    for line in pane.lines[..end].iter().rev() {
        let chunks = wrap(&line.text, text_width);
        let mut these: Vec<Line> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let lead = if i == 0 {
                    vec![
                        Span::styled(format!("{} ", format::clock(line.at)), t.dim()),
                        Span::styled(format!("{:<5} ", line.level.as_str()), t.level(line.level)),
                    ]
                } else {
                    vec![Span::raw(" ".repeat(PREFIX))]
                };
                Line::from([lead, vec![Span::raw(chunk)]].concat())
            })
            .collect();
        if rows.len() + these.len() > height {
            // The oldest line shown keeps its newest rows.
            let room = height - rows.len();
            these.drain(..these.len() - room);
        }
        these.reverse();
        rows.extend(these);
        if rows.len() >= height {
            break;
        }
    }
    rows.reverse();
    frame.render_widget(Paragraph::new(rows).block(block), area);
}

/// The time and level before each line's text: `12:00:01 INFO  `.
const PREFIX: usize = 15;

/// `text` in pieces of at most `width` characters, broken at spaces where
/// a word allows.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest: Vec<char> = text.chars().collect();
    while rest.len() > width {
        let cut = rest[..=width]
            .iter()
            .rposition(|c| *c == ' ')
            .filter(|at| *at > width / 2)
            .unwrap_or(width);
        out.push(rest[..cut].iter().collect());
        let skip = if rest.get(cut) == Some(&' ') { 1 } else { 0 };
        rest.drain(..cut + skip);
    }
    out.push(rest.into_iter().collect());
    out
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn long_lines_wrap_at_spaces_and_lose_nothing() {
        assert_eq!(wrap("short", 10), ["short"]);
        assert_eq!(wrap("one two three four", 9), ["one two", "three", "four"]);
        let unbroken = "x".repeat(25);
        assert_eq!(wrap(&unbroken, 10).concat(), unbroken);
        assert_eq!(wrap(&unbroken, 10).len(), 3);
    }
}
