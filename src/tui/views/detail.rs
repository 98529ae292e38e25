//! One session in full: each operation's latest result (text as text, a
//! tree as a tree, JSON as a list), the last transcripts with the live
//! partial line, and each operation's run history with a duration
//! sparkline.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Sparkline, Wrap};

use crate::engine::{OpResult, SessionDetail};
use crate::format;
use crate::model::Operation;
use crate::ops::output::Role;
use crate::state::RunRecord;
use crate::tui::app::App;
use crate::tui::theme::Theme;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let Some(detail) = &app.details.detail else {
        frame.render_widget(Paragraph::new(Line::styled("loading…", t.dim())), area);
        return;
    };
    let row = &detail.row;
    let mut title = vec![
        Span::styled(format!(" {} ", row.id), t.title()),
        Span::styled(format!("· {} transcripts ", row.transcripts), t.dim()),
    ];
    if row.ended {
        title.push(Span::styled("· ended ", t.dim()));
    }
    if app.details.stored {
        title.push(Span::styled("· from the database ", t.warning()));
    }
    if row.budget_lifted {
        title.push(Span::styled("· budget lifted ", t.dim()));
    }
    if let Some(budget) = row.over_budget {
        title.push(Span::styled(
            format!("· ⊘ budget {} spent ", budget.as_str()),
            t.warning(),
        ));
    }
    let ops = &app.snapshot.operations;
    for op in ops.iter().map(|d| d.op) {
        title.push(Span::styled(format!("· {} ", op.label()), t.dim()));
        title.extend(super::table::state_spans(
            row.op(op),
            row.transcripts,
            t,
            app.snapshot.taken_at,
            true,
        ));
        if let crate::engine::freshness::Freshness::In(_) = row.op(op).fresh {
            title.push(Span::styled(
                format!(" fresh in {}", row.op(op).fresh.short()),
                t.dim(),
            ));
        }
        // In a cluster: where a run made elsewhere runs.
        let here = app.snapshot.cluster.as_ref().map(|c| c.instance.as_str());
        if let Some(on) = row
            .op(op)
            .in_flight
            .as_ref()
            .and_then(|run| run.instance.as_deref())
            .filter(|on| Some(*on) != here)
        {
            title.push(Span::styled(format!(" on {on}"), t.base()));
        }
        title.push(Span::raw(" "));
    }
    let block = Block::default()
        .borders(Borders::TOP)
        .title(Line::from(title))
        .border_style(t.dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);

    let warnings: Vec<String> =
        crate::engine::attention(row, app.snapshot.taken_at, app.snapshot.op_timeout)
            .iter()
            .map(|a| a.describe())
            .collect();
    let inner = if warnings.is_empty() {
        inner
    } else {
        let [line, rest] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);
        frame.render_widget(
            Line::styled(format!("! {}", warnings.join(" · ")), t.warning()),
            line,
        );
        rest
    };

    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(inner);
    // The results two abreast, in rows as many as they need.
    let pairs: Vec<&[crate::ops::OpDef]> = ops.chunks(2).collect();
    let rows = Layout::vertical(vec![
        Constraint::Ratio(1, pairs.len().max(1) as u32);
        pairs.len()
    ])
    .split(top);
    for (pair, row_area) in pairs.iter().zip(rows.iter()) {
        let widths = match pair.len() {
            1 => vec![Constraint::Percentage(100)],
            _ => vec![Constraint::Percentage(55), Constraint::Percentage(45)],
        };
        let areas = Layout::horizontal(widths).split(*row_area);
        for (def, area) in pair.iter().zip(areas.iter()) {
            draw_result(frame, *area, detail, def, ops, t);
        }
    }
    let [transcript_area, runs_area] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(bottom);
    draw_transcript(frame, transcript_area, detail, t);
    draw_runs(frame, runs_area, detail, ops, &app.snapshot.currency, t);
}

fn panel<'a>(title: String, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::TOP | Borders::RIGHT)
        .title(Span::styled(title, theme.header_cell()))
        .border_style(theme.dim())
}

fn result_title(name: &str, result: Option<&OpResult>, generation: u64) -> String {
    match result {
        Some(r) => format!(
            " {name} · covers {}/{generation}{} · {} · {} ",
            r.covered_generation,
            if r.truncated {
                " · ✂ cut at the token limit"
            } else {
                ""
            },
            format::duration(r.processing_time),
            r.model
        ),
        None => format!(" {name} · none yet "),
    }
}

/// What went wrong with `op`'s last run, whole: the error, when, how many
/// runs in a row, and the start of an answer that could not be read.
fn failure_lines(
    detail: &SessionDetail,
    op: Operation,
    ops: &[crate::ops::OpDef],
    t: &Theme,
) -> Vec<Line<'static>> {
    let stats = detail.row.op(op);
    let Some(error) = stats
        .last_error
        .as_ref()
        .filter(|_| stats.consecutive_failures > 0)
    else {
        return Vec::new();
    };
    let when = stats
        .last_failure_at
        .and_then(|at| std::time::SystemTime::now().duration_since(at).ok())
        .map(|ago| format!(" {} ago", format::age(ago)))
        .unwrap_or_default();
    let streak = match stats.error_streak.max(1) {
        1 => "the last run".to_string(),
        n => format!("the last {n} runs"),
    };
    let mut lines = vec![
        Line::styled(
            format!("✗ {streak} failed{when}:"),
            t.error().add_modifier(Modifier::BOLD),
        ),
        Line::styled(crate::text::strip_controls(error).into_owned(), t.error()),
    ];
    if stats.is_stale(detail.row.transcripts) {
        let uncovered = detail.row.transcripts - stats.covered_generation.unwrap_or(0);
        let key = crate::tui::keymap::trigger_key(ops, op).map_or(String::new(), |k| k.to_string());
        lines.push(Line::styled(
            format!(
                "stale: {uncovered} lines no result covers, its retries spent; \
                 a new line or `{key}` runs it again"
            ),
            t.warning(),
        ));
    }
    if let Some(Some(answer)) = detail.content.rejected.get(op) {
        let start: String = crate::text::strip_controls(answer)
            .chars()
            .take(300)
            .collect();
        lines.push(Line::styled("the rejected answer began:", t.dim()));
        lines.push(Line::raw(start));
    }
    lines.push(Line::raw(""));
    lines
}

/// One operation's latest result, drawn as its output kind shows it (see
/// `ResultBody::shown`): text as text, a tree with branches, JSON as a list.
fn draw_result(
    frame: &mut Frame,
    area: Rect,
    detail: &SessionDetail,
    def: &crate::ops::OpDef,
    ops: &[crate::ops::OpDef],
    t: &Theme,
) {
    let result = detail.content.results.get(def.op).and_then(Option::as_ref);
    let block = panel(result_title(&def.label, result, detail.row.transcripts), t);
    let mut lines = failure_lines(detail, def.op, ops, t);
    match result {
        Some(result) => lines.extend(result.body.shown().into_iter().map(|parts| {
            Line::from(
                parts
                    .into_iter()
                    .map(|(role, text)| Span::styled(text, role_style(role, t)))
                    .collect::<Vec<_>>(),
            )
        })),
        None => lines.push(Line::styled(
            format!("no {} yet", def.label.to_lowercase()),
            t.dim(),
        )),
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// How a part of a result is styled, by its role (see `ops::output`).
fn role_style(role: Role, t: &Theme) -> ratatui::style::Style {
    match role {
        Role::Plain => ratatui::style::Style::default(),
        Role::Heading => t.title(),
        Role::Branch | Role::Empty => t.dim(),
        Role::Bullet => t.key(),
        Role::Field => t.header_cell(),
    }
}

fn draw_transcript(frame: &mut Frame, area: Rect, detail: &SessionDetail, t: &Theme) {
    let block = panel(" Transcript ".to_string(), t);
    let height = block.inner(area).height as usize;
    let mut lines: Vec<Line> = detail
        .content
        .recent
        .iter()
        .map(|line| {
            let mut spans = vec![Span::styled(format!("{:>4} ", line.generation), t.dim())];
            if let Some(speaker) = &line.speaker {
                spans.push(Span::styled(format!("{speaker}: "), t.key()));
            }
            spans.push(Span::raw(line.text.clone()));
            Line::from(spans)
        })
        .collect();
    if let Some(partial) = &detail.content.partial {
        lines.push(Line::from(vec![
            Span::styled("   … ", t.dim()),
            Span::styled(partial.clone(), t.dim().add_modifier(Modifier::ITALIC)),
        ]));
    }
    if lines.is_empty() {
        lines.push(Line::styled("nothing said yet", t.dim()));
    }
    // Wrapped lines take more room; show the newest that fit, roughly.
    let width = area.width.saturating_sub(1).max(1) as usize;
    let mut used = 0;
    let mut start = lines.len();
    while start > 0 {
        let h = lines[start - 1].width().div_ceil(width).max(1);
        if used + h > height {
            break;
        }
        used += h;
        start -= 1;
    }
    let lines = lines.split_off(start);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// Each operation's runs: its totals, a sparkline of durations and the
/// newest runs. `currency` is empty without a price table (no cost shown).
fn draw_runs(
    frame: &mut Frame,
    area: Rect,
    detail: &SessionDetail,
    ops: &[crate::ops::OpDef],
    currency: &str,
    t: &Theme,
) {
    let block = panel(" Runs ".to_string(), t);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let n = ops.len().max(1) as u32;
    let parts = Layout::vertical(vec![Constraint::Ratio(1, n); ops.len()]).split(inner);
    let none = Vec::new();
    for (op, part) in ops.iter().map(|d| d.op).zip(parts.iter()) {
        let history = detail.history.get(op).unwrap_or(&none);
        let stats = detail.row.op(op);
        let [label, spark, list] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(0),
        ])
        .areas(*part);
        // Most telling first: what is cut at the right edge matters least.
        let spent = if currency.is_empty() {
            String::new()
        } else {
            format!(" · {} {currency}", stats.counts.cost.shown())
        };
        let summary = format!(
            "{}: {} runs {} ok {} skip · p95 {} · {}+{} tok{spent} · wait {} · mean {}",
            op.label(),
            stats.counts.runs,
            stats.counts.ok,
            stats.counts.skipped,
            stats.p95_duration.map_or("-".into(), format::duration),
            format::count(stats.counts.prompt_tokens),
            format::count(stats.counts.completion_tokens),
            format::duration(stats.counts.waited),
            stats.mean_duration.map_or("-".into(), format::duration),
        );
        frame.render_widget(Line::styled(summary, t.header_cell()), label);
        let data: Vec<u64> = history
            .iter()
            .map(|r| r.duration.as_millis() as u64)
            .collect();
        frame.render_widget(Sparkline::default().data(&data).style(t.running()), spark);
        let lines: Vec<Line> = history
            .iter()
            .rev()
            .take(list.height as usize)
            .map(|r| run_line(r, !currency.is_empty(), t))
            .collect();
        frame.render_widget(Paragraph::new(lines), list);
    }
}

fn run_line(run: &RunRecord, priced: bool, t: &Theme) -> Line<'static> {
    let outcome_style = match run.outcome {
        crate::events::Outcome::Ok => t.ok(),
        crate::events::Outcome::Cancelled => t.dim(),
        _ => t.error(),
    };
    Line::from(vec![
        Span::styled(format!("{} ", format::clock(run.started_at)), t.dim()),
        Span::raw(format!("{:>7} ", format::duration(run.duration))),
        Span::styled(format!("{:<9}", run.outcome.as_str()), outcome_style),
        Span::raw(
            run.covered_generation
                .map_or(String::new(), |g| format!(" gen {g}")),
        ),
        Span::styled(if run.follow_up { " ↻" } else { "" }, t.pending()),
        Span::styled(
            match run.usage.prompt_tokens + run.usage.completion_tokens {
                0 => String::new(),
                tokens => format!(" {} tok", format::count(tokens)),
            },
            t.dim(),
        ),
        Span::styled(
            if priced && run.usage.cost > crate::spend::Cost::ZERO {
                format!(" {}", run.usage.cost.shown())
            } else {
                String::new()
            },
            t.dim(),
        ),
        Span::styled(
            if run.waited >= std::time::Duration::from_secs(1) {
                format!(" wait {}", format::duration(run.waited))
            } else {
                String::new()
            },
            t.dim(),
        ),
    ])
}
