//! The feeds overlay (`f`): every feed's connection state and counters.

use ratatui::Frame;
use ratatui::layout::Rect;
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
        if feed.refused_sessions > 0 {
            lines.push(Line::styled(
                format!(
                    "   {} new sessions refused: inflight holds its most sessions (--max-sessions)",
                    format::count(feed.refused_sessions)
                ),
                t.error(),
            ));
        }
    }
    super::popup(frame, area, app, "Feeds · Esc or f closes", 100, lines);
}
