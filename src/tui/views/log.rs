//! The live log pane: newest lines at the bottom, following them until the
//! operator scrolls up.

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
    let height = block.inner(area).height as usize;
    let end = pane.lines.len().saturating_sub(pane.offset);
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = pane.lines[start..end]
        .iter()
        .map(|line| {
            Line::from(vec![
                Span::styled(format!("{} ", format::clock(line.at)), t.dim()),
                Span::styled(format!("{:<5} ", line.level.as_str()), t.level(line.level)),
                Span::raw(line.text.clone()),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
