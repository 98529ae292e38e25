//! The help screen: every binding from the keymap (those that move a
//! replay only in one), each operation's trigger key from its definition,
//! and what the glyphs mean.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};

use crate::tui::app::App;
use crate::tui::keymap::{Action, BINDINGS, trigger_bindings};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let mut lines = Vec::new();
    // The keys that move a replay, only in one.
    let replaying = matches!(app.link, crate::tui::source::Link::Replay(_));
    for binding in BINDINGS {
        if binding.action.moves_a_replay() && !replaying {
            continue;
        }
        let places: Vec<&str> = binding.contexts.iter().map(|c| c.name()).collect();
        lines.push(Line::from(vec![
            Span::styled(format!("{:>7}  ", binding.label), t.key()),
            Span::raw(format!("{:<24}", binding.hint)),
            Span::styled(places.join(", "), t.dim()),
        ]));
        // Each operation's own key, from its definition, beside `t`.
        if binding.action == Action::TriggerAll {
            for (key, hint) in trigger_bindings(&app.snapshot.operations) {
                lines.push(Line::from(vec![
                    Span::styled(format!("{key:>7}  "), t.key()),
                    Span::raw(format!("{hint:<24}")),
                    Span::styled(places.join(", "), t.dim()),
                ]));
            }
        }
    }
    lines.push(Line::raw(""));
    for (glyph, meaning) in [
        (
            "▶ run",
            "calling the LLM, for this long (tokens/s when wide)",
        ),
        ("◷ queue", "admitted, waiting for an LLM permit"),
        ("+1", "requests came in meanwhile: one follow-up run"),
        ("· idle", "nothing in flight (· never: no run yet)"),
        (
            "· stale 2 new",
            "idle, but the last result misses the 2 newest lines",
        ),
        ("✗ 500 …", "the last run failed or timed out, and why"),
        ("!", "slow, near its deadline, failing, or silent"),
        ("■", "the session has ended"),
    ] {
        lines.push(Line::from(vec![
            Span::styled(format!("{glyph:>13}  "), t.key()),
            Span::raw(meaning),
        ]));
    }
    super::popup(frame, area, app, "Keys · Esc or ? closes", 72, lines);
}
