//! The two header lines: readiness, backend, permits, feeds, the
//! cluster, totals, uptime, PAUSED.
//! Each line is made of groups in order of importance; a group that does not
//! fit the width is left out whole rather than cut mid-word.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::engine::FeedState;
use crate::format;
use crate::tui::app::App;
use crate::tui::source::Link;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let s = &app.snapshot;
    let backend = &s.backend;
    // The feeds inflight dials; a pusher's connection shows as `+in`.
    let dialled = s.feeds.iter().filter(|f| !f.inbound).count();
    let connected = s
        .feeds
        .iter()
        .filter(|f| !f.inbound && f.state == FeedState::Connected)
        .count();
    let pushing = s
        .feeds
        .iter()
        .any(|f| f.inbound && f.state == FeedState::Connected);
    let feeds_style = if connected == dialled {
        t.base()
    } else {
        t.warning()
    };

    let mut first: Vec<Vec<Span>> = vec![vec![Span::styled("inflight", t.title())]];
    match &app.link {
        Link::Embedded => {}
        Link::Replay(at) => {
            let state = if at.playing {
                format!("▶ {}×", speed(at.speed))
            } else {
                "⏸ paused".to_string()
            };
            first.push(vec![
                Span::styled("replay ", t.title()),
                Span::styled(
                    format!("{} UTC", format::clock(at.recorded_time())),
                    t.base(),
                ),
            ]);
            first.push(vec![Span::styled(
                state,
                if at.playing { t.ok() } else { t.paused() },
            )]);
            first.push(vec![Span::styled(
                format!(
                    "{} / {}",
                    format::duration(std::time::Duration::from_micros(at.at_us)),
                    format::duration(std::time::Duration::from_micros(at.length_us))
                ),
                t.dim(),
            )]);
        }
        Link::Connected { server } => first.push(vec![
            Span::styled(format!("⇄ {server}"), t.base()),
            Span::styled(" connected", t.ok()),
        ]),
        Link::Lost {
            server,
            since,
            attempt,
            error,
        } => {
            let gone = format::duration(since.elapsed());
            let what = if *attempt == 0 {
                "connecting…".to_string()
            } else {
                format!("✗ disconnected {gone} ({error}), reconnecting")
            };
            first.push(vec![
                Span::styled(format!("⇄ {server} "), t.base()),
                Span::styled(what, t.error()),
            ]);
        }
    }
    // The same items as /readyz.
    let readiness = s.readiness();
    if !readiness.ready {
        let items: Vec<&str> = readiness.items().collect();
        first.push(vec![Span::styled(
            format!("✗ not ready: {}", items.join(", ")),
            t.error(),
        )]);
    }
    if app.paused {
        first.push(vec![Span::styled(" PAUSED ", t.paused())]);
    }
    let mut llm = vec![Span::raw(backend.kind.clone())];
    if backend.simulated {
        llm.push(Span::styled(" (simulated)", t.dim()));
    }
    llm.push(if backend.reachable {
        Span::styled(" ● up", t.ok())
    } else {
        Span::styled(" ✗ unreachable", t.error())
    });
    first.push(llm);
    if let Some(format) = backend.structured_output {
        first.push(label_value("maps", format.to_string(), t.base(), t));
    }
    // The context window prompts are sized to, as learnt; one learnt from
    // a refusal is worth a look (the server is smaller than was thought).
    if let Some(context) = backend.context {
        let style = match context.source {
            crate::llm::context::Source::Refusal => t.warning(),
            _ => t.base(),
        };
        first.push(label_value("ctx", context.tokens.to_string(), style, t));
    }
    // Fewer calls at once than the cap, as learnt from the server: said.
    let (permits, permits_style) = match s.permits_limit {
        limit if limit > 0 && limit < s.permits_cap => (
            format!("{}/{limit} of {}", s.permits_in_use, s.permits_cap),
            t.warning(),
        ),
        _ => (format!("{}/{}", s.permits_in_use, s.permits_cap), t.base()),
    };
    first.push(label_value("LLM", permits, permits_style, t));
    first.push(label_value(
        "feeds",
        format!("{connected}/{dialled}{}", if pushing { " +in" } else { "" }),
        feeds_style,
        t,
    ));
    if let Some(cluster) = &s.cluster {
        // Which instance this is, and whether its Redis answers: without
        // it no run starts here.
        let mut group = vec![Span::styled(format!("as {}", cluster.instance), t.base())];
        group.push(if cluster.reachable {
            Span::styled(" ● redis", t.ok())
        } else {
            Span::styled(" ✗ redis unreachable", t.error())
        });
        first.push(group);
    }
    first.push(label_value("up", format::duration(s.uptime), t.base(), t));
    first.push(vec![Span::styled(
        format!("model {}", backend.model),
        t.dim(),
    )]);

    let totals = &s.totals;
    let policy = s
        .policy
        .values()
        .next()
        .map(|p| format!("{p:?}").to_lowercase())
        .unwrap_or_default();
    let failures = totals.counts.failures();
    let failed_style = if failures > 0 { t.error() } else { t.base() };
    let mut second = vec![label_value(
        "sessions",
        format::count(s.sessions.len() as u64),
        t.base(),
        t,
    )];
    if let Some(db) = s.db.as_ref().filter(|db| db.degraded) {
        // Writes fail or are dropped: the engine runs on in memory.
        second.push(label_value(
            "db",
            format!("degraded ({} failed, {} dropped)", db.failures, db.dropped),
            t.error(),
            t,
        ));
    }
    if s.refused_sessions > 0 {
        // The store is (or was) full: new sessions are being turned away.
        second.push(label_value(
            "refused",
            format!(
                "{} (max {})",
                format::count(s.refused_sessions),
                format::count(s.max_sessions as u64)
            ),
            t.error(),
            t,
        ));
    }
    second.extend([
        label_value("running", totals.running.to_string(), t.running(), t),
        label_value("queued", totals.queued.to_string(), t.queued(), t),
        label_value("skipped", format::count(totals.counts.skipped), t.base(), t),
        label_value("failed", format::count(failures), failed_style, t),
        label_value("runs", format::count(totals.counts.runs), t.base(), t),
        label_value("on busy", policy, t.base(), t),
        label_value("timeout", format::duration(s.op_timeout), t.base(), t),
    ]);
    let width = area.width as usize;
    frame.render_widget(
        Paragraph::new(vec![fit(first, width), fit(second, width)]),
        area,
    );
}

fn label_value(
    label: &str,
    value: String,
    style: ratatui::style::Style,
    t: &crate::tui::theme::Theme,
) -> Vec<Span<'static>> {
    vec![
        Span::styled(format!("{label} "), t.dim()),
        Span::styled(value, style),
    ]
}

/// Joins groups with two spaces while they fit in `width`.
fn fit(groups: Vec<Vec<Span<'static>>>, width: usize) -> Line<'static> {
    let mut spans = Vec::new();
    let mut used = 0;
    for group in groups {
        let w: usize =
            group.iter().map(|s| s.width()).sum::<usize>() + if spans.is_empty() { 0 } else { 2 };
        if used + w > width {
            continue;
        }
        if !spans.is_empty() {
            spans.push(Span::raw("  "));
        }
        spans.extend(group);
        used += w;
    }
    Line::from(spans)
}

/// A replay's speed as the header writes it: `10`, `0.5`.
fn speed(speed: f64) -> String {
    if speed.fract() == 0.0 {
        format!("{speed:.0}")
    } else {
        format!("{speed}")
    }
}
