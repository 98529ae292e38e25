//! The message line (or the text being typed) and the key-hint bar, which
//! is built from the keymap.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::tui::app::{App, InputTarget, Tone};
use crate::tui::keymap;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    // A fresh message first; once it is old, a standing alert shows again.
    let fresh = app.message.as_ref().filter(|m| {
        app.alert.is_none()
            || app.snapshot.taken_at.saturating_duration_since(m.at) < crate::tui::app::MESSAGE_FOR
    });
    let message = match (&app.input, fresh) {
        (Some(input), _) => {
            let what = match input.target {
                InputTarget::SessionFilter => "filter sessions",
                InputTarget::LogSearch => "search log",
                InputTarget::ReplayTime => "go to (90, 1:30 or 14:03:27 UTC)",
            };
            Line::from(vec![
                Span::styled(format!("/{what}: "), t.key()),
                Span::raw(input.buffer.clone()),
                Span::styled("▏", t.key()),
            ])
        }
        (None, Some(message)) => {
            let style = match message.tone {
                Tone::Info => t.base(),
                Tone::Good => t.ok(),
                Tone::Warn => t.warning(),
            };
            Line::from(Span::styled(message.text.clone(), style))
        }
        (None, None) if app.alert.is_some() => Line::from(Span::styled(
            app.alert.clone().unwrap_or_default(),
            t.error(),
        )),
        (None, None) if !app.table.filter.is_empty() => Line::from(vec![
            Span::styled("filter: ", t.dim()),
            Span::raw(app.table.filter.clone()),
            Span::styled(
                format!(
                    " ({} of {})",
                    app.table.order.len(),
                    app.snapshot.sessions.len()
                ),
                t.dim(),
            ),
        ]),
        (None, None) => Line::default(),
    };
    // Hints in keymap order, as many as fit; `?` shows the rest. Read-only,
    // the keys that would change the engine are dimmed and it says why.
    let mut hints = Vec::new();
    let mut used = 0;
    if let Some(why) = &app.read_only {
        let text = format!("{why}  ");
        used += text.chars().count();
        hints.push(Span::styled(text, t.warning()));
    }
    let replaying = matches!(app.link, crate::tui::source::Link::Replay(_));
    let replay_keys = keymap::replay_hints(app.context()).filter(move |_| replaying);
    for binding in replay_keys.chain(keymap::hints(app.context())) {
        let text = format!(" {}  ", binding.hint);
        let w = binding.label.chars().count() + text.chars().count();
        if used + w > area.width as usize {
            break;
        }
        used += w;
        if app.read_only.is_some() && binding.action.changes_the_engine() {
            hints.push(Span::styled(binding.label, t.dim()));
            hints.push(Span::styled(text, t.dim()));
        } else {
            hints.push(Span::styled(binding.label, t.key()));
            hints.push(Span::raw(text));
        }
    }
    frame.render_widget(Paragraph::new(vec![message, Line::from(hints)]), area);
}
