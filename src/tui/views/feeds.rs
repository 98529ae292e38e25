//! The feeds overlay (`f`): every feed's connection state and counters,
//! what comes in, and the webhooks' deliveries, what goes out.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};

use crate::engine::FeedState;
use crate::format;
use crate::tui::app::App;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let now = app.snapshot.taken_at;
    let mut lines = Vec::new();
    if app.snapshot.feeds.is_empty() {
        lines.push(Line::styled("no feeds", t.dim()));
    }
    for feed in &app.snapshot.feeds {
        let (state, style) = match &feed.state {
            FeedState::Connected if feed.inbound => ("● a pusher is connected".to_string(), t.ok()),
            FeedState::Connected => ("● connected".to_string(), t.ok()),
            FeedState::Listening => ("○ listening: no pusher connected".to_string(), t.dim()),
            FeedState::Connecting => ("◷ connecting".to_string(), t.queued()),
            FeedState::BackingOff { until, attempt } => (
                format!(
                    "◷ retry {attempt} in {}",
                    format::duration(until.saturating_duration_since(now))
                ),
                t.warning(),
            ),
            FeedState::Closed { reason } => (format!("✗ closed: {reason}"), t.error()),
        };
        lines.push(Line::from(vec![
            Span::styled(format!("#{} ", feed.index), t.key()),
            Span::raw(format::fit(&feed.url, 60)),
        ]));
        lines.push(Line::from(vec![
            Span::raw("   "),
            Span::styled(state, style),
        ]));
        let age = feed.last_message_at.map_or("-".to_string(), |at| {
            format::age(now.saturating_duration_since(at))
        });
        let bad_style = if feed.bad_frames > 0 {
            t.warning()
        } else {
            t.dim()
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!(
                    "   {} messages · {} transcripts · {} replays dropped · {} connects · last {age} ago · ",
                    format::count(feed.messages),
                    format::count(feed.transcripts),
                    format::count(feed.duplicates),
                    feed.connects,
                ),
                t.dim(),
            ),
            Span::styled(format!("{} bad frames", format::count(feed.bad_frames)), bad_style),
        ]));
        lines.extend(count_note(feed.refused_sessions, t.error(), |n| {
            format!("{n} new sessions refused: inflight holds its most sessions (--max-sessions)")
        }));
        lines.extend(count_note(feed.database_waits, t.warning(), |n| {
            format!("waited {n}× for the database's writer: the disk sets the pace of ingest")
        }));
    }
    if !app.snapshot.webhooks.is_empty() {
        lines.push(Line::raw(""));
        lines.push(Line::styled("Webhooks", t.title()));
    }
    for endpoint in &app.snapshot.webhooks {
        lines.push(Line::from(vec![
            Span::styled("→ ", t.key()),
            Span::raw(format::fit(&endpoint.url, 60)),
        ]));
        let waiting = match endpoint.oldest_pending_seconds {
            Some(age) if endpoint.pending > 0 => format!(
                "{} waiting, oldest {}",
                format::count(endpoint.pending),
                format::age(std::time::Duration::from_secs_f64(age.max(0.0)))
            ),
            _ => "none waiting".to_string(),
        };
        lines.push(Line::styled(
            format!(
                "   {} delivered · {} failed attempts · {} retried · {} superseded · {waiting}",
                format::count(endpoint.delivered),
                format::count(endpoint.failed),
                format::count(endpoint.retried),
                format::count(endpoint.superseded),
            ),
            t.dim(),
        ));
        if endpoint.dead > 0 || endpoint.overflow > 0 {
            lines.push(Line::styled(
                format!(
                    "   {} dead letters (GET /api/deliveries lists them) · {} refused, outbox full",
                    format::count(endpoint.dead),
                    format::count(endpoint.overflow),
                ),
                t.error(),
            ));
        }
        if let Some(last) = &endpoint.last_dead {
            lines.push(Line::styled(
                format!("   last given up: {last}"),
                t.warning(),
            ));
        }
    }
    super::popup(
        frame,
        area,
        app,
        "Feeds and webhooks · Esc or f closes",
        100,
        lines,
    );
}

/// A line under a feed that says what a count means, in `style`; none
/// while the count is 0.
fn count_note(
    count: u64,
    style: Style,
    says: impl FnOnce(String) -> String,
) -> Option<Line<'static>> {
    (count > 0).then(|| Line::styled(format!("   {}", says(format::count(count))), style))
}
