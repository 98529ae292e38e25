//! The spend overlay (`$`): what the LLM work cost, in all, by feed and by
//! session, the costliest first, in the price table's currency.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};

use crate::format;
use crate::spend::Cost;
use crate::tui::app::App;

/// Sessions listed, the costliest first.
const SESSIONS_SHOWN: usize = 15;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let snapshot = &app.snapshot;
    let currency = snapshot.currency.as_str();
    let mut lines = Vec::new();
    if currency.is_empty() {
        lines.push(Line::styled(
            "no price table: add [[prices]] to the config file to see what calls cost",
            t.dim(),
        ));
        lines.push(Line::styled(
            format!(
                "tokens since start: {} prompt + {} answer",
                format::count(snapshot.totals.counts.prompt_tokens),
                format::count(snapshot.totals.counts.completion_tokens)
            ),
            t.dim(),
        ));
        super::popup(frame, area, app, "Spend · Esc or $ closes", 80, lines);
        return;
    }
    let total = snapshot.totals.counts;
    lines.push(Line::from(vec![
        Span::styled("since start ", t.dim()),
        Span::styled(format!("{} {currency}", total.cost.shown()), t.key()),
        Span::styled(
            format!(
                " · {} prompt ({} cached) + {} answer tokens",
                format::count(total.prompt_tokens),
                format::count(total.cached_tokens),
                format::count(total.completion_tokens)
            ),
            t.dim(),
        ),
    ]));
    lines.push(Line::raw(""));
    lines.push(Line::styled("by feed", t.header_cell()));
    let mut feeds: Vec<(String, Cost)> = snapshot
        .feeds
        .iter()
        .map(|f| {
            (
                format!("#{} {}", f.index, format::fit(&f.url, 50)),
                f.spend().cost,
            )
        })
        .collect();
    feeds.sort_by_key(|f| std::cmp::Reverse(f.1));
    if feeds.is_empty() {
        lines.push(Line::styled("   no feeds", t.dim()));
    }
    for (name, cost) in feeds {
        lines.push(ranked(&cost, &name, t));
    }
    lines.push(Line::raw(""));
    let held: Cost = snapshot.sessions.iter().map(|row| row.cost()).sum();
    lines.push(Line::from(vec![
        Span::styled("by session", t.header_cell()),
        Span::styled(
            format!(
                "  ({} held, {} {currency} between them)",
                snapshot.sessions.len(),
                held.shown()
            ),
            t.dim(),
        ),
    ]));
    let mut sessions: Vec<(&str, Cost)> = snapshot
        .sessions
        .iter()
        .map(|row| (row.id.as_str(), row.cost()))
        .filter(|(_, cost)| *cost > Cost::ZERO)
        .collect();
    sessions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    if sessions.is_empty() {
        lines.push(Line::styled("   nothing spent yet", t.dim()));
    }
    let more = sessions.len().saturating_sub(SESSIONS_SHOWN);
    for (id, cost) in sessions.into_iter().take(SESSIONS_SHOWN) {
        lines.push(ranked(&cost, id, t));
    }
    if more > 0 {
        lines.push(Line::styled(
            format!("   … {more} more (the table sorts by cost: o)"),
            t.dim(),
        ));
    }
    let title = format!("Spend in {currency} · Esc or $ closes");
    super::popup(frame, area, app, &title, 80, lines);
}

/// One ranked line: the amount right-aligned, then what spent it.
fn ranked(cost: &Cost, name: &str, t: &crate::tui::theme::Theme) -> Line<'static> {
    Line::from(vec![
        Span::raw(format!("   {:>12}  ", cost.shown())),
        Span::styled(name.to_string(), t.base()),
    ])
}
