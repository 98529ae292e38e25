//! The dashboard without a terminal: update logic on keys and snapshots, and
//! rendering into ratatui's TestBackend at 80x24 and 140x40, with colour and
//! without.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use inflight::engine::{Engine, EngineConfig};
use inflight::engine::{FeedState, FeedView, OpRow, SessionRow, Snapshot, Totals, TriggerAnswer};
use inflight::events::Event;
use inflight::llm::context::{ContextInfo, Source as ContextSource};
use inflight::llm::{Backend, BackendInfo, BoxFuture, LlmError, LlmRequest, LlmResponse, Progress};
use inflight::logs::{CaptureLayer, LogBuffer};
use inflight::model::{Operation, SessionId};
use inflight::state::{InFlight, OpCounters, Phase, Policy};
use inflight::tui::app::{App, Command, Screen, SortColumn};
use inflight::tui::keymap::Key;
use inflight::tui::theme::Theme;
use inflight::tui::views;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::{Color, Modifier};
use tokio::time::Instant;
use tracing_subscriber::layer::SubscriberExt;

fn sid(raw: &str) -> SessionId {
    SessionId::parse(raw).unwrap()
}

/// The fixture's "now": a day ahead of the clock, so "250 s ago" exists
/// however long the machine has been up (a monotonic clock starts at boot).
fn now() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

fn ago(now: Instant, secs: f64) -> Instant {
    now - Duration::from_secs_f64(secs)
}

fn running(now: Instant, run_id: u64, secs: f64, phase: Phase, pending: bool) -> InFlight {
    InFlight {
        run_id,
        phase,
        since: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        admitted: ago(now, secs),
        queued_since: ago(now, secs),
        waited: Duration::ZERO,
        started: (phase == Phase::Running).then(|| ago(now, secs)),
        deadline: (phase == Phase::Running).then(|| ago(now, secs) + Duration::from_secs(300)),
        pending,
        follow_up: false,
        covered_generation: Some(3),
        instance: None,
        retry: None,
    }
}

fn op(runs: u64, skipped: u64, last_ms: u64) -> OpRow {
    OpRow {
        counts: OpCounters {
            runs,
            ok: runs,
            skipped,
            ..Default::default()
        },
        last_duration: (last_ms > 0).then(|| Duration::from_millis(last_ms)),
        mean_duration: (last_ms > 0).then(|| Duration::from_millis(last_ms)),
        p95_duration: (last_ms > 0).then(|| Duration::from_millis(last_ms)),
        ..Default::default()
    }
}

/// Four sessions in every state the table shows.
fn fixture(now: Instant) -> Snapshot {
    let mut standup = SessionRow {
        id: sid("standup"),
        feed: Some(0),
        transcripts: 42,
        last_transcript_at: Some(ago(now, 2.0)),
        ended: false,
        has_partial: true,
        lost: 0,
        ops: [op(7, 12, 4100), op(5, 9, 6200)].into(),
        over_budget: None,
        budget_lifted: false,
    };
    standup.ops[Operation::SUMMARY].in_flight = Some(running(now, 41, 12.4, Phase::Running, true));
    standup.ops[Operation::SUMMARY].tokens = Some((310, 25.0));
    standup.ops[Operation::MIND_MAP].in_flight = Some(running(now, 42, 1.2, Phase::Queued, false));

    let mut retro = SessionRow {
        id: sid("incident-retro"),
        feed: Some(0),
        transcripts: 17,
        last_transcript_at: Some(ago(now, 250.0)),
        ended: false,
        has_partial: false,
        lost: 0,
        ops: [op(3, 1, 2500), op(3, 0, 3100)].into(),
        over_budget: None,
        budget_lifted: false,
    };
    retro.ops[Operation::MIND_MAP].counts.failed = 2;
    retro.ops[Operation::MIND_MAP].consecutive_failures = 2;
    // Its summary covers 15 of its 17 lines.
    retro.ops[Operation::SUMMARY].covered_generation = Some(15);

    let mut planning = SessionRow {
        id: sid("planning"),
        feed: Some(1),
        transcripts: 60,
        last_transcript_at: Some(ago(now, 30.0)),
        ended: true,
        has_partial: false,
        lost: 0,
        ops: [op(9, 30, 1800), op(9, 28, 2200)].into(),
        over_budget: None,
        budget_lifted: false,
    };
    for op in planning.ops.values_mut() {
        op.covered_generation = Some(60);
    }
    let fresh = SessionRow {
        id: sid("zz-new"),
        feed: None,
        transcripts: 0,
        last_transcript_at: None,
        ended: false,
        has_partial: false,
        lost: 0,
        ops: [OpRow::default(), OpRow::default()].into(),
        over_budget: None,
        budget_lifted: false,
    };
    let sessions = vec![retro, planning, standup, fresh];
    Snapshot {
        taken_at: now,
        uptime: Duration::from_secs(754),
        backend: BackendInfo {
            kind: "builtin".into(),
            model: "extractive, simulated 2s..6s".into(),
            simulated: true,
            reachable: true,
            structured_output: None,
            context: None,
            slots: None,
        },
        permits_in_use: 1,
        permits_cap: 4,
        permits_limit: 4,
        policy: inflight::ops::OpMap::filled_with(|_| Policy::Coalesce),
        operations: inflight::ops::OpRegistry::built_in().defs().to_vec(),
        op_timeout: Duration::from_secs(300),
        feeds: vec![
            FeedView {
                by_op: Default::default(),
                inbound: false,
                index: 0,
                url: "ws://127.0.0.1:9100/a".into(),
                state: FeedState::Connected,
                last_message_at: Some(now),
                messages: 100,
                transcripts: 90,
                duplicates: 0,
                refused_sessions: 0,
                connects: 1,
                bad_frames: 0,
                database_waits: 0,
            },
            FeedView {
                by_op: Default::default(),
                inbound: false,
                index: 1,
                url: "ws://127.0.0.1:9100/b".into(),
                state: FeedState::Connecting,
                last_message_at: None,
                messages: 0,
                transcripts: 0,
                duplicates: 0,
                refused_sessions: 3,
                connects: 0,
                bad_frames: 0,
                database_waits: 0,
            },
        ],
        totals: Totals {
            transcripts: 119,
            counts: OpCounters {
                runs: 36,
                ok: 34,
                failed: 2,
                skipped: 80,
                ..Default::default()
            },
            running: 1,
            queued: 1,
        },
        sessions,
        lifetime: Default::default(),
        max_sessions: 10_000,
        refused_sessions: 0,
        db: None,
        cluster: None,
        webhooks: Vec::new(),
        currency: String::new(),
    }
}

fn app(color: bool) -> App {
    let mut app = App::new(Theme::new(color), fixture(now()));
    app.say(
        "standup · summary pending: run 41 busy 12.4s",
        inflight::tui::app::Tone::Warn,
    );
    app
}

fn render(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| views::draw(frame, app)).unwrap();
    terminal
}

fn screen_text(terminal: &Terminal<TestBackend>) -> String {
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buffer.area.height {
        let line: String = (0..buffer.area.width)
            .map(|x| buffer[(x, y)].symbol().to_string())
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The row of the screen whose text contains `needle`.
fn row_of(terminal: &Terminal<TestBackend>, needle: &str) -> u16 {
    let text = screen_text(terminal);
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not on screen:\n{text}")) as u16
}

#[test]
fn table_at_80x24_keeps_what_matters() {
    let app = app(true);
    let terminal = render(&app, 80, 24);
    insta::assert_snapshot!("table_80x24", screen_text(&terminal));
}

#[test]
fn table_at_140x40_shows_every_column() {
    let app = app(true);
    let terminal = render(&app, 140, 40);
    let text = screen_text(&terminal);
    for column in ["Feed", "Last S/M", "Runs", "Skipped", "Age"] {
        assert!(text.contains(column), "{column} missing");
    }
    assert!(text.contains("25t/s"), "tokens per second shown when wide");
    insta::assert_snapshot!("table_140x40", text);
}

#[test]
fn no_color_draws_the_same_text_and_marks_selection_by_reverse_video() {
    let colour = render(&app(true), 80, 24);
    let mono = render(&app(false), 80, 24);
    assert_eq!(screen_text(&colour), screen_text(&mono));
    insta::assert_snapshot!("table_80x24_no_color", screen_text(&mono));

    let buffer = mono.backend().buffer();
    let row = row_of(&mono, "incident-retro");
    let cell = &buffer[(3, row)];
    assert!(
        cell.modifier.contains(Modifier::REVERSED),
        "selected row is reversed"
    );
    for y in 0..buffer.area.height {
        for x in 0..buffer.area.width {
            let c = &buffer[(x, y)];
            assert!(
                matches!(c.fg, Color::Reset) && matches!(c.bg, Color::Reset),
                "no colour at ({x}, {y}) with NO_COLOR"
            );
        }
    }
    let other = row_of(&mono, "planning");
    assert!(!buffer[(3, other)].modifier.contains(Modifier::REVERSED));

    let buffer = colour.backend().buffer();
    assert_eq!(
        buffer[(3, row_of(&colour, "incident-retro"))].bg,
        Color::Blue
    );
}

#[test]
fn states_warnings_and_pending_are_drawn() {
    let terminal = render(&app(false), 140, 40);
    let text = screen_text(&terminal);
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap()
            .to_string()
    };
    let standup = line("standup");
    assert!(standup.contains("▶ run 12.4s"), "{standup}");
    assert!(standup.contains("+1"), "pending shown: {standup}");
    assert!(standup.contains("◷ queue 1.2s"), "{standup}");
    let retro = line("incident-retro");
    assert!(
        retro.trim_start().starts_with('!'),
        "failing and silent: {retro}"
    );
    assert!(
        retro.contains("✗ stale failed"),
        "failed with 2 lines uncovered, nothing in flight: stale"
    );
    assert!(
        retro.contains("· stale 2 new"),
        "an idle op behind its session says so: {retro}"
    );
    assert!(line("planning").contains("· idle"));
    assert!(line("planning").contains("■"), "ended sessions are marked");
    assert!(line("zz-new").contains("· never"));
    assert!(!text.contains("PAUSED"));
}

#[test]
fn refused_sessions_show_in_the_header_once_there_are_any() {
    let mut app = app(false);
    assert!(!screen_text(&render(&app, 140, 40)).contains("refused"));
    let mut snapshot = fixture(now());
    snapshot.refused_sessions = 1234;
    app.set_snapshot(snapshot);
    let text = screen_text(&render(&app, 140, 40));
    let header = text.lines().nth(1).unwrap_or_default();
    assert!(
        header.contains("refused 1234 (max 10.0k)"),
        "the second header line says new sessions are turned away: {header}"
    );
}

#[test]
fn help_lists_every_binding_from_the_keymap() {
    let mut app = app(true);
    app.handle_key(Key::Char('?'));
    let text = screen_text(&render(&app, 140, 40));
    for binding in inflight::tui::keymap::BINDINGS {
        if binding.action.moves_a_replay() {
            assert!(
                !text.contains(binding.hint),
                "not a replay: {:?}",
                binding.hint
            );
        } else {
            assert!(text.contains(binding.hint), "help lacks {:?}", binding.hint);
        }
    }
    app.handle_key(Key::Esc);
    assert!(!app.help);
    // In a replay, the keys that move it are there too.
    app.link = inflight::tui::source::Link::Replay(inflight::tui::source::ReplayAt {
        at_us: 5_000_000,
        length_us: 60_000_000,
        started_unix_us: 0,
        playing: true,
        speed: 10.0,
    });
    app.handle_key(Key::Char('?'));
    let text = screen_text(&render(&app, 140, 60));
    for binding in inflight::tui::keymap::BINDINGS {
        assert!(
            text.contains(binding.hint),
            "replay help lacks {:?}",
            binding.hint
        );
    }
}

/// The hint bar: the screen's last line.
fn hint_bar(app: &App) -> String {
    let text = screen_text(&render(app, 120, 40));
    text.lines().last().unwrap_or_default().to_string()
}

#[test]
fn the_hint_bar_is_true_in_popups_and_while_typing() {
    let mut app = app(false);
    assert!(hint_bar(&app).contains("t run all"));

    app.handle_key(Key::Char('?'));
    let bar = hint_bar(&app);
    assert!(
        bar.contains("Esc close help") && bar.contains("q quit"),
        "{bar}"
    );
    assert!(
        !bar.contains("run both"),
        "no trigger behind the help: {bar}"
    );
    // What the bar says is what the keys do: `t` does nothing here.
    assert!(app.handle_key(Key::Char('t')).is_empty());
    assert!(app.help);
    assert_eq!(app.handle_key(Key::Char('q')), vec![Command::Quit]);

    let mut app = self::app(false);
    app.handle_key(Key::Char('f'));
    assert!(hint_bar(&app).contains("Esc close feeds"));
    app.handle_key(Key::Char('f'));
    assert!(!app.feeds);

    app.handle_key(Key::Char('/'));
    let bar = hint_bar(&app);
    assert!(
        bar.contains("↵ keep") && bar.contains("Esc clear") && bar.contains("⌫ erase"),
        "{bar}"
    );
    assert!(!bar.contains("quit"), "q types while typing: {bar}");
    assert!(app.handle_key(Key::Char('q')).is_empty());
    assert_eq!(app.table.filter, "q");
    app.handle_key(Key::Backspace);
    assert_eq!(app.table.filter, "");
    app.handle_key(Key::Esc);
    assert!(app.input.is_none());
}

#[test]
fn paging_follows_the_screen_the_table_was_fitted_to() {
    let mut snapshot = fixture(now());
    let template = snapshot.sessions[0].clone();
    snapshot.sessions = (0..100)
        .map(|i| SessionRow {
            id: sid(&format!("s{i:03}")),
            ..template.clone()
        })
        .collect();
    let mut app = App::new(Theme::new(false), snapshot);
    let rows_on_screen = |app: &App| -> Vec<String> {
        screen_text(&render(app, 120, 40))
            .lines()
            .flat_map(|l| l.split_whitespace().take(2))
            .filter(|w| w.len() == 4 && w.starts_with("s0"))
            .map(str::to_string)
            .collect()
    };
    app.fit(120, 40);
    let page = app.table.page;
    assert_eq!(rows_on_screen(&app).len(), page, "the page is what shows");
    app.handle_key(Key::PageDown);
    assert_eq!(app.table.selected, page);
    app.fit(120, 40);
    assert_eq!(app.table.offset, 1, "scrolled just enough");
    let shown = rows_on_screen(&app);
    assert_eq!(shown.first().map(String::as_str), Some("s001"));
    assert_eq!(shown.last(), Some(&format!("s{page:03}")));
    // A smaller screen: a smaller page.
    app.fit(80, 24);
    assert!(app.table.page < page);
}

#[test]
fn keys_move_sort_filter_and_keep_the_selection() {
    let mut app = app(true);
    assert_eq!(app.selected_row().unwrap().id, sid("incident-retro"));
    app.handle_key(Key::Down);
    assert_eq!(app.selected_row().unwrap().id, sid("planning"));

    // Sorting by transcripts (descending) keeps "planning" selected.
    app.handle_key(Key::Char('o'));
    assert_eq!(app.table.sort, SortColumn::Transcripts);
    let order: Vec<String> = app
        .table
        .order
        .iter()
        .map(|i| app.snapshot.sessions[*i].id.to_string())
        .collect();
    assert_eq!(order, ["planning", "standup", "incident-retro", "zz-new"]);
    assert_eq!(app.selected_row().unwrap().id, sid("planning"));
    app.handle_key(Key::Char('O'));
    assert_eq!(app.selected_row().unwrap().id, sid("planning"));

    // Typing a filter narrows live; Esc clears it.
    app.handle_key(Key::Char('/'));
    for c in "stand".chars() {
        app.handle_key(Key::Char(c));
    }
    assert_eq!(app.table.order.len(), 1);
    assert_eq!(app.selected_row().unwrap().id, sid("standup"));
    app.handle_key(Key::Enter);
    assert_eq!(app.table.filter, "stand");
    // Keys are keys again after Enter.
    assert_eq!(
        app.handle_key(Key::Char('t')),
        vec![Command::Trigger {
            session: sid("standup"),
            ops: inflight::ops::BUILT_IN.to_vec()
        }]
    );
    app.handle_key(Key::Char('/'));
    app.handle_key(Key::Esc);
    assert_eq!(app.table.order.len(), 4);
}

#[test]
fn a_session_id_no_row_matches_is_looked_up_in_the_database() {
    let mut app = app(false);
    // A filter that matches rows: Enter only filters.
    app.handle_key(Key::Char('/'));
    for c in "retro".chars() {
        app.handle_key(Key::Char(c));
    }
    assert!(app.handle_key(Key::Enter).is_empty());
    // One that matches none, and is a session id: look on disk.
    app.handle_key(Key::Char('/'));
    for _ in 0..5 {
        app.handle_key(Key::Backspace);
    }
    for c in "old-standup".chars() {
        app.handle_key(Key::Char(c));
    }
    assert_eq!(
        app.handle_key(Key::Enter),
        vec![Command::OpenStored {
            session: sid("old-standup")
        }]
    );
    // Found: the details show it, marked as read from the database.
    let mut detail_row = fixture(now()).sessions[0].clone();
    detail_row.id = sid("old-standup");
    let detail = inflight::engine::SessionDetail {
        row: detail_row,
        content: inflight::engine::SessionContent {
            recent: Vec::new(),
            partial: None,
            results: Default::default(),
            rejected: Default::default(),
        },
        history: Default::default(),
    };
    app.show_stored(&sid("old-standup"), Some(detail));
    assert_eq!(app.screen, Screen::Detail);
    let text = screen_text(&render(&app, 140, 40));
    assert!(
        text.contains("old-standup") && text.contains("from the database"),
        "{text}"
    );
    // Snapshots do not replace it; Esc goes back to the table.
    app.set_snapshot(fixture(now()));
    assert!(app.details.stored);
    app.handle_key(Key::Esc);
    assert_eq!((app.screen, app.details.stored), (Screen::Table, false));
    // Not found: said in the message line.
    app.show_stored(&sid("never-was"), None);
    let text = screen_text(&render(&app, 140, 40));
    assert!(
        text.contains("never-was · not in memory, nor in the database"),
        "{text}"
    );
}

#[test]
fn actions_become_commands_and_answers_become_messages() {
    let mut app = app(true);
    assert_eq!(
        app.handle_key(Key::Char('1')),
        vec![Command::Trigger {
            session: sid("incident-retro"),
            ops: vec![Operation::SUMMARY]
        }]
    );
    assert_eq!(
        app.handle_key(Key::Char('2')),
        vec![Command::Trigger {
            session: sid("incident-retro"),
            ops: vec![Operation::MIND_MAP]
        }]
    );
    assert_eq!(
        app.handle_key(Key::Char('c')),
        vec![Command::Cancel {
            session: sid("incident-retro"),
            ops: vec![Operation::SUMMARY, Operation::MIND_MAP]
        }]
    );
    let since = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
    app.show_triggered(
        &sid("incident-retro"),
        &[
            (Operation::SUMMARY, TriggerAnswer::Started { run_id: 7 }),
            (
                Operation::MIND_MAP,
                TriggerAnswer::Skipped {
                    running_run_id: 5,
                    since,
                },
            ),
        ],
        since + Duration::from_millis(3400),
    );
    let text = &app.message.as_ref().unwrap().text;
    assert_eq!(
        text,
        "incident-retro · summary started (run 7) · mind map skipped: run 5 busy 3.4s"
    );
    app.show_cancelled(
        &sid("incident-retro"),
        &[(Operation::SUMMARY, Some(7)), (Operation::MIND_MAP, None)],
    );
    assert_eq!(
        app.message.as_ref().unwrap().text,
        "incident-retro · summary cancelled (run 7)"
    );
    assert_eq!(app.handle_key(Key::Char('q')), vec![Command::Quit]);
    assert!(app.quit);
}

#[test]
fn a_degraded_database_shows_in_the_header_and_only_then() {
    let mut snapshot = fixture(now());
    let mut view = inflight::engine::DbView {
        path: "/var/lib/inflight.db".into(),
        degraded: false,
        written: 10,
        dropped: 0,
        failures: 0,
    };
    snapshot.db = Some(view.clone());
    let mut app = app(false);
    app.set_snapshot(snapshot.clone());
    assert!(!screen_text(&render(&app, 140, 40)).contains("degraded"));
    view.degraded = true;
    view.failures = 3;
    snapshot.db = Some(view);
    app.set_snapshot(snapshot);
    let text = screen_text(&render(&app, 140, 40));
    let header = text.lines().nth(1).unwrap_or_default();
    assert!(
        header.contains("db degraded (3 failed, 0 dropped)"),
        "{header}"
    );
}

#[test]
fn the_header_says_what_is_not_ready_as_readyz_does() {
    let mut snapshot = fixture(now());
    let mut app = app(false);
    app.set_snapshot(snapshot.clone());
    assert!(snapshot.readiness().ready);
    assert!(!screen_text(&render(&app, 120, 40)).contains("not ready"));

    for feed in &mut snapshot.feeds {
        feed.state = FeedState::Connecting;
    }
    snapshot.backend.reachable = false;
    assert_eq!(
        snapshot.readiness().items().collect::<Vec<_>>(),
        ["feeds", "llm"]
    );
    app.set_snapshot(snapshot);
    for (width, height) in [(120, 40), (80, 24)] {
        let text = screen_text(&render(&app, width, height));
        let header = text.lines().next().unwrap_or_default();
        assert!(
            header.starts_with("inflight  ✗ not ready: feeds, llm"),
            "{width}x{height}: {header}"
        );
    }
}

#[test]
fn the_header_names_the_output_format_and_context_window_a_server_was_found_to_take() {
    let app = app(false);
    let text = screen_text(&render(&app, 140, 40));
    assert!(!text.contains("maps"), "the builtin backend has no format");
    let mut snapshot = fixture(now());
    snapshot.backend = BackendInfo {
        kind: "openai".into(),
        model: "smollm2".into(),
        simulated: false,
        reachable: true,
        structured_output: Some("json_object"),
        context: Some(ContextInfo {
            tokens: 2048,
            source: ContextSource::Refusal,
        }),
        slots: None,
    };
    let mut app = app;
    app.set_snapshot(snapshot);
    let text = screen_text(&render(&app, 140, 40));
    let header = text.lines().next().unwrap_or_default();
    assert!(header.contains("maps json_object"), "{header}");
    assert!(header.contains("ctx 2048"), "{header}");
}

#[test]
fn a_running_call_shows_and_is_judged_by_its_own_time_not_its_wait() {
    let now = now();
    let mut row = fixture(now).sessions[0].clone();
    // Admitted 290 s ago, of which 280 s waiting for a permit.
    let mut run = running(now, 7, 290.0, Phase::Running, false);
    run.started = Some(ago(now, 10.0));
    run.deadline = Some(ago(now, 10.0) + Duration::from_secs(300));
    row.ops[Operation::SUMMARY] = OpRow {
        in_flight: Some(run.clone()),
        ..OpRow::default()
    };
    let timeout = Duration::from_secs(300);
    let warnings: Vec<String> = inflight::engine::attention(&row, now, timeout)
        .iter()
        .map(|a| a.describe())
        .collect();
    assert!(
        !warnings.iter().any(|w| w.contains("deadline")),
        "10 s into its call, the deadline is far: {warnings:?}"
    );
    let mut snapshot = fixture(now);
    snapshot.sessions[0] = row.clone();
    let mut app = app(false);
    app.set_snapshot(snapshot);
    let text = screen_text(&render(&app, 140, 40));
    assert!(text.contains("▶ run 10.0s"), "{text}");
    assert!(
        !text.contains("▶ run 4m50s"),
        "not the time since admission"
    );
    // 250 s into its call: near the deadline, whatever the wait was.
    run.started = Some(ago(now, 250.0));
    row.ops[Operation::SUMMARY].in_flight = Some(run);
    let warnings: Vec<String> = inflight::engine::attention(&row, now, timeout)
        .iter()
        .map(|a| a.describe())
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("near its deadline")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn details_show_tokens_per_run_and_in_all() {
    let engine = Engine::new(
        EngineConfig::default(),
        Arc::new(inflight::llm::builtin::BuiltinBackend::new(
            inflight::llm::LatencyRange::ZERO,
        )),
    );
    let mut events = engine.subscribe();
    engine.ingest(
        common::final_line(
            "standup",
            1,
            "The release moves to Tuesday, Ana owns the notes.",
        ),
        None,
    );
    common::wait_until(&mut events, Duration::from_secs(10), "both results", || {
        engine.is_idle()
            && inflight::ops::BUILT_IN
                .iter()
                .all(|op| engine.result(&sid("standup"), *op).is_some())
    })
    .await;
    let detail = engine.session_detail(&sid("standup"), 20).unwrap();
    let usage = detail.row.ops[Operation::SUMMARY].counts.usage();
    let mut app = App::new(Theme::new(false), engine.snapshot());
    app.handle_key(Key::Enter);
    app.set_detail(Some(detail));
    let text = screen_text(&render(&app, 120, 40));
    let in_all = format!("{}+{} tok", usage.prompt_tokens, usage.completion_tokens);
    assert!(text.contains(&in_all), "{in_all} missing in\n{text}");
    let one_run = format!(" {} tok", usage.prompt_tokens + usage.completion_tokens);
    assert!(text.contains(&one_run), "{one_run} missing in\n{text}");
}

#[test]
fn details_open_and_close() {
    let mut app = app(true);
    app.handle_key(Key::Enter);
    assert_eq!(app.screen, Screen::Detail);
    // Table keys that make no sense in details do nothing there.
    assert!(app.handle_key(Key::Char('o')).is_empty());
    assert_eq!(app.table.sort, SortColumn::Session);
    app.handle_key(Key::Esc);
    assert_eq!(app.screen, Screen::Table);
}

#[test]
fn freezing_keeps_the_display_while_data_moves() {
    let mut app = app(true);
    app.handle_key(Key::Char(' '));
    assert!(app.paused);
    let mut newer = fixture(now());
    newer.sessions.truncate(1);
    app.set_snapshot(newer.clone());
    assert_eq!(
        app.snapshot.sessions.len(),
        4,
        "frozen display keeps its snapshot"
    );
    assert!(screen_text(&render(&app, 80, 24)).contains("PAUSED"));
    app.handle_key(Key::Char(' '));
    app.set_snapshot(newer);
    assert_eq!(app.snapshot.sessions.len(), 1);
}

#[test]
fn the_log_follows_until_scrolled_up_and_resumes_at_the_bottom() {
    let logs = LogBuffer::new();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(3600);
    for i in 0..50 {
        logs.push(
            at,
            tracing::Level::INFO,
            Some("standup".into()),
            format!("line {i}"),
        );
    }
    logs.push(at, tracing::Level::DEBUG, None, "quiet detail".into());
    let mut app = app(true);
    app.refresh_logs(&logs, false);
    assert_eq!(app.log.lines.len(), 50, "debug hidden at the default level");
    app.handle_key(Key::Tab);
    assert!(app.log.focused);
    app.handle_key(Key::Up);
    app.handle_key(Key::Up);
    assert!(!app.log.follow);
    assert_eq!(app.log.offset, 2);
    // New lines arrive while scrolled up: the view stays on the same lines.
    logs.push(at, tracing::Level::WARN, None, "late".into());
    app.refresh_logs(&logs, false);
    assert_eq!(app.log.offset, 3);
    app.handle_key(Key::Char('G'));
    assert!(app.log.follow);
    assert_eq!(app.log.offset, 0);

    // Scoped to the selected session (incident-retro): none of these lines.
    app.handle_key(Key::Char('s'));
    app.refresh_logs(&logs, false);
    assert!(app.log.lines.is_empty());
    app.handle_key(Key::Char('s'));
    // Search in the log.
    app.handle_key(Key::Char('/'));
    for c in "line 4".chars() {
        app.handle_key(Key::Char(c));
    }
    app.handle_key(Key::Enter);
    app.refresh_logs(&logs, false);
    assert_eq!(app.log.lines.len(), 11, "line 4 and line 40..49");
    let text = screen_text(&render(&app, 140, 40));
    assert!(text.contains("01:00:00 INFO  line 49"), "{text}");
}

/// A model on a bad day: every answer full of terminal escapes.
struct HostileBackend;

const ESCAPES: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31m";

impl Backend for HostileBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo::simulated("hostile", "escapes")
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        _progress: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            match request.op {
                op if op != Operation::MIND_MAP => {
                    Err(LlmError::other(format!("server said {ESCAPES}boom\u{7}")))
                }
                _ => Ok(LlmResponse {
                    text: serde_json::json!({"root": {
                        "label": format!("Budget{ESCAPES}"),
                        "children": [{"label": format!("Hiring{ESCAPES}\u{7}"), "children": []}]
                    }})
                    .to_string(),
                    model: "escapes".into(),
                    usage: Default::default(),
                    truncated: false,
                }),
            }
        })
    }
}

/// No escape, bell or other control character in any cell, and no remains
/// of a sequence either: whole sequences are removed, not just their ESC.
fn assert_no_controls(terminal: &Terminal<TestBackend>) {
    let buffer = terminal.backend().buffer();
    for cell in buffer.content() {
        assert!(
            !cell.symbol().chars().any(|c| c.is_control()),
            "a control character reached the screen: {:?}\n{}",
            cell.symbol(),
            screen_text(terminal)
        );
    }
    let text = screen_text(terminal);
    for remains in ["pwned", "[2J", "[31m"] {
        assert!(!text.contains(remains), "{remains:?} on screen:\n{text}");
    }
}

/// Raw escapes from a model's error, a model's mind map and a log line go
/// the real way to the screen: the engine, its events and the log capture.
#[tokio::test]
async fn control_characters_never_reach_the_screen() {
    let logs = LogBuffer::new();
    let subscriber = tracing_subscriber::registry().with(CaptureLayer::new(logs.clone()));
    let _capture = tracing::subscriber::set_default(subscriber);
    // A callsite first hit on another test's thread must not stay off here.
    tracing::callsite::rebuild_interest_cache();
    let engine = Engine::new(EngineConfig::default(), Arc::new(HostileBackend));
    let mut events = engine.subscribe();
    let s = sid("evil");
    engine.ingest(
        inflight::model::Transcript {
            session_id: s.clone(),
            seq: Some(1),
            text: "We talk about the budget.".into(),
            speaker: None,
            start: None,
            end: None,
            is_final: true,
            kind: None,
        },
        None,
    );
    let mut finished = 0;
    while finished < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("both runs end")
            .expect("the bus runs");
        finished += matches!(event, Event::OpFinished { .. }) as usize;
    }
    tracing::warn!("a log line with {ESCAPES}raw escapes\u{7}");

    let mut app = App::new(Theme::new(true), engine.snapshot());
    app.refresh_logs(&logs, false);
    let table = render(&app, 140, 40);
    let text = screen_text(&table);
    assert!(text.contains("raw escapes"), "{text}");
    assert!(
        text.contains("boom"),
        "the error's log line is shown: {text}"
    );
    assert_no_controls(&table);

    app.handle_key(Key::Enter);
    app.set_detail(engine.session_detail(&s, 20));
    let detail = render(&app, 140, 40);
    let text = screen_text(&detail);
    assert!(text.contains("Budget") && text.contains("Hiring"), "{text}");
    assert_no_controls(&detail);
}

#[test]
fn the_feeds_overlay_shows_each_feed() {
    let mut app = app(true);
    app.handle_key(Key::Char('f'));
    assert!(app.feeds);
    let text = screen_text(&render(&app, 140, 40));
    assert!(text.contains("#0 ws://127.0.0.1:9100/a"), "{text}");
    assert!(text.contains("● connected"));
    assert!(text.contains("◷ connecting"));
    assert!(text.contains("100 messages · 90 transcripts"));
    assert!(
        text.contains("3 new sessions refused"),
        "a feed whose new sessions were refused says so: {text}"
    );
    assert!(!text.contains("database's writer"), "{text}");
    app.handle_key(Key::Esc);
    assert!(!app.feeds);
}

#[test]
fn the_feeds_overlay_shows_a_pusher_and_the_webhooks_with_their_dead_letters() {
    let now = now();
    let mut snapshot = fixture(now);
    snapshot.feeds.push(FeedView {
        by_op: Default::default(),
        inbound: true,
        index: 2,
        url: "pushed in: POST /api/transcripts, GET /ingest".into(),
        state: FeedState::Connected,
        last_message_at: Some(now),
        messages: 7,
        transcripts: 700,
        duplicates: 3,
        refused_sessions: 0,
        connects: 2,
        bad_frames: 0,
        database_waits: 12,
    });
    snapshot.webhooks = vec![inflight::webhooks::EndpointView {
        url: "https://hooks.example.com/inflight".into(),
        events: vec![inflight::webhooks::EventKind::Result],
        delivered: 41,
        failed: 9,
        retried: 7,
        superseded: 5,
        dead: 2,
        overflow: 0,
        pending: 3,
        oldest_pending_seconds: Some(12.0),
        last_dead: Some("result:standup:summary:9: the receiver refused it with 404".into()),
    }];
    let mut app = App::new(Theme::new(false), snapshot);
    app.handle_key(Key::Char('f'));
    let text = screen_text(&render(&app, 140, 40));
    assert!(text.contains("● a pusher is connected"), "{text}");
    assert!(
        text.contains("waited 12× for the database's writer"),
        "a feed held back by the disk says so: {text}"
    );
    assert!(
        text.contains("→ https://hooks.example.com/inflight"),
        "{text}"
    );
    assert!(
        text.contains(
            "41 delivered · 9 failed attempts · 7 retried · 5 superseded · 3 waiting, oldest 12s"
        ),
        "{text}"
    );
    assert!(text.contains("2 dead letters"), "{text}");
    assert!(text.contains("refused it with 404"), "{text}");
    // The header counts the feeds inflight dials, and says a pusher is in.
    assert!(text.contains("feeds 1/2 +in"), "{text}");
}

/// llama-cpp-python's answer to a `response_format` it does not take, as a
/// backend reports it (the server's body as it was seen).
const LLAMA_REFUSAL: &str = "the server at http://127.0.0.1:8080 answered 500 Internal Server Error: \
{\"error\":{\"message\":\"1 validation error: {'type': 'literal_error', 'loc': ('body', \
'response_format', 'type'), 'msg': \\\"Input should be 'text' or 'json_object'\\\", 'input': \
'json_schema'}\",\"type\":\"internal_server_error\",\"param\":null,\"code\":null}}";

/// Every session's mind map failing with the same refusal, five runs in a
/// row (on runs asked for again: each result covers every line, so none
/// is stale).
fn failing(now: Instant) -> Snapshot {
    let mut snapshot = fixture(now);
    for row in &mut snapshot.sessions {
        let transcripts = row.transcripts;
        let op = &mut row.ops[Operation::MIND_MAP];
        op.in_flight = None;
        op.covered_generation = Some(transcripts);
        op.counts.runs = 5;
        op.counts.failed = 5;
        op.consecutive_failures = 5;
        op.error_streak = 5;
        op.last_error = Some(LLAMA_REFUSAL.into());
        op.last_failure_at = Some(SystemTime::now() - Duration::from_secs(12));
    }
    snapshot
}

fn failing_app(color: bool) -> App {
    App::new(Theme::new(color), failing(now()))
}

#[test]
fn a_failing_backends_cause_is_on_the_table_and_said_once() {
    for (width, height, color, name) in [
        (120, 40, true, "failing_120x40"),
        (80, 24, true, "failing_80x24"),
        (80, 24, false, "failing_80x24_no_color"),
    ] {
        let app = failing_app(color);
        let text = screen_text(&render(&app, width, height));
        let shared = "mind map failing in 4 sessions: 500 response_format";
        assert_eq!(text.matches(shared).count(), 1, "{name}: said once\n{text}");
        assert!(
            text.matches("✗ 500").count() >= 4,
            "{name}: each failing cell names the status\n{text}"
        );
        assert!(!text.contains("✗ failed"), "{name}\n{text}");
        insta::assert_snapshot!(name, text);
    }
    // Where the cell is wide, the whole short cause.
    let text = screen_text(&render(&failing_app(false), 160, 40));
    assert!(text.contains("✗ 500 response_format"), "{text}");
    // Left with lines uncovered, the cell says stale before the cause,
    // and the details say what is left and how to run it again.
    let mut snapshot = failing(now());
    for row in &mut snapshot.sessions {
        row.ops[Operation::MIND_MAP].covered_generation = Some(1);
    }
    let app = App::new(Theme::new(false), snapshot);
    let text = screen_text(&render(&app, 80, 24));
    assert_eq!(
        text.matches("✗ stale 500").count(),
        3,
        "every session with a line: {text}"
    );
}

#[test]
fn a_fresh_message_shows_before_the_standing_alert_then_gives_way() {
    let mut app = failing_app(false);
    app.say(
        "standup · summary started (run 9)",
        inflight::tui::app::Tone::Good,
    );
    let text = screen_text(&render(&app, 80, 24));
    assert!(text.contains("summary started (run 9)") && !text.contains("failing in 4"));
    app.set_snapshot(failing(now() + inflight::tui::app::MESSAGE_FOR));
    let text = screen_text(&render(&app, 80, 24));
    assert!(text.contains("mind map failing in 4 sessions"), "{text}");
}

fn failing_detail(app: &App, rejected: Option<&str>) -> inflight::engine::SessionDetail {
    let row = app.selected_row().expect("a row").clone();
    inflight::engine::SessionDetail {
        row,
        content: inflight::engine::SessionContent {
            recent: Vec::new(),
            partial: None,
            results: [None, None].into(),
            rejected: [None, rejected.map(str::to_string)].into(),
        },
        history: [Vec::new(), Vec::new()].into(),
    }
}

#[test]
fn details_show_the_last_error_whole_with_when_and_how_often() {
    for (width, height) in [(120, 40), (80, 24)] {
        let mut app = failing_app(false);
        app.handle_key(Key::Enter);
        let detail = failing_detail(&app, None);
        app.set_detail(Some(detail));
        let text = screen_text(&render(&app, width, height));
        assert!(
            text.contains("✗ the last 5 runs failed 12s ago:"),
            "{width}x{height}\n{text}"
        );
        // The server's own words, wrapped rather than cut (the summary
        // panel beside it is empty on those rows).
        let flat: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '│')
            .collect();
        assert!(
            flat.contains("'response_format','type')") && flat.contains("Inputshouldbe'text'"),
            "{width}x{height}\n{text}"
        );
        assert!(text.contains("answered 500"), "{width}x{height}\n{text}");
    }
    // An answer that could not be read: its start is shown.
    let mut app = failing_app(false);
    app.handle_key(Key::Enter);
    app.set_detail(Some(failing_detail(
        &app,
        Some("Sure! Here is your mind map: root -> budget"),
    )));
    let text = screen_text(&render(&app, 120, 40));
    assert!(text.contains("the rejected answer began:"), "{text}");
    assert!(text.contains("Sure! Here is your mind map"), "{text}");
}

#[test]
fn long_log_lines_wrap_and_search_finds_text_past_the_edge() {
    let logs = LogBuffer::new();
    let long = format!(
        "processing ended session_id=standup op=mind_map error={} needle-at-the-end",
        LLAMA_REFUSAL
    );
    for i in 0..3 {
        logs.push(
            SystemTime::now(),
            tracing::Level::INFO,
            None,
            format!("line {i}"),
        );
    }
    logs.push(SystemTime::now(), tracing::Level::WARN, None, long);
    let mut app = app(false);
    app.refresh_logs(&logs, true);
    let text = screen_text(&render(&app, 80, 24));
    assert!(
        text.contains("needle-at-the-end"),
        "wrapped, not cut:\n{text}"
    );

    // Search: Tab to the log, `/`, type.
    app.handle_key(Key::Tab);
    app.handle_key(Key::Char('/'));
    for c in "needle".chars() {
        app.handle_key(Key::Char(c));
    }
    app.handle_key(Key::Enter);
    app.refresh_logs(&logs, true);
    assert_eq!(app.log.lines.len(), 1);
    let text = screen_text(&render(&app, 80, 24));
    assert!(
        text.contains("needle-at-the-end") && !text.contains("line 2"),
        "{text}"
    );
}

#[test]
fn at_80x24_the_table_a_status_line_and_the_latest_log_lines_show_at_once() {
    let logs = LogBuffer::new();
    for i in 0..20 {
        logs.push(
            SystemTime::now(),
            tracing::Level::INFO,
            Some("standup".into()),
            format!("processing started run {i}"),
        );
    }
    let mut app = app(false);
    app.refresh_logs(&logs, true);
    let text = screen_text(&render(&app, 80, 24));
    for session in ["incident-retro", "planning", "standup", "zz-new"] {
        assert!(text.contains(session), "{session}\n{text}");
    }
    assert!(
        text.contains("summary pending: run 41"),
        "the status line\n{text}"
    );
    assert!(
        text.contains("processing started run 19"),
        "the newest log line\n{text}"
    );
    let blank = text.lines().filter(|l| l.trim().is_empty()).count();
    assert!(blank <= 1, "{blank} blank rows:\n{text}");
    // The focused log grows.
    let before = text
        .lines()
        .filter(|l| l.contains("processing started"))
        .count();
    app.handle_key(Key::Tab);
    let text = screen_text(&render(&app, 80, 24));
    let after = text
        .lines()
        .filter(|l| l.contains("processing started"))
        .count();
    assert!(after >= before, "{before} → {after}");
}

#[test]
fn details_say_a_stale_operation_and_the_key_that_runs_it_again() {
    let mut app = failing_app(false);
    app.handle_key(Key::Enter);
    let mut detail = failing_detail(&app, None);
    let transcripts = detail.row.transcripts;
    assert!(transcripts > 1, "a fixture row with lines");
    detail.row.ops[Operation::MIND_MAP].covered_generation = Some(1);
    app.set_detail(Some(detail));
    let text = screen_text(&render(&app, 160, 40));
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(&format!(
            "stale: {} lines no result covers",
            transcripts - 1
        )),
        "{text}"
    );
    assert!(
        flat.contains("a new line or `2`"),
        "the mind map's key: {text}"
    );
}

#[test]
fn the_header_says_a_limit_learnt_below_the_cap() {
    let mut snapshot = fixture(now());
    let text = screen_text(&render(
        &App::new(Theme::new(false), snapshot.clone()),
        120,
        40,
    ));
    assert!(
        text.contains("LLM 1/4") && !text.contains(" of 4"),
        "{text}"
    );
    snapshot.permits_limit = 1;
    let text = screen_text(&render(&App::new(Theme::new(false), snapshot), 120, 40));
    assert!(text.contains("LLM 1/1 of 4"), "{text}");
}

/// The fixture with a price table: the three sessions that ran cost
/// 0.0123, 0.4567 and 1.25 USD, all brought by feed 0.
fn priced_app() -> App {
    use inflight::spend::Cost;
    let mut snapshot = fixture(now());
    snapshot.currency = "USD".into();
    let costs = [
        ("standup", 12_300_000),
        ("incident-retro", 456_700_000),
        ("planning", 1_250_000_000),
    ];
    for row in snapshot.sessions.iter_mut() {
        if let Some((_, nanos)) = costs.iter().find(|(id, _)| row.id.as_str() == *id) {
            row.ops[Operation::SUMMARY].counts.cost = Cost(*nanos);
        }
    }
    snapshot.totals.counts.cost = Cost(costs.iter().map(|(_, n)| n).sum());
    let mut feed = FeedView {
        by_op: Default::default(),
        index: 0,
        url: "ws://127.0.0.1:9100/a".into(),
        inbound: false,
        state: FeedState::Connected,
        last_message_at: None,
        messages: 1,
        transcripts: 1,
        duplicates: 0,
        refused_sessions: 0,
        connects: 1,
        bad_frames: 0,
        database_waits: 0,
    };
    feed.by_op.entry(Operation::SUMMARY).cost = snapshot.totals.counts.cost;
    snapshot.feeds = vec![feed];
    App::new(Theme::new(false), snapshot)
}

#[test]
fn with_prices_the_table_has_a_cost_column_that_sorts_and_hides() {
    let mut priced = priced_app();
    let text = screen_text(&render(&priced, 140, 40));
    assert!(text.contains("Cost"), "{text}");
    let planning = text.lines().find(|l| l.contains("planning")).unwrap();
    assert!(planning.contains("1.2500"), "{planning}");
    let retro = text.lines().find(|l| l.contains("incident-retro")).unwrap();
    assert!(retro.contains("0.4567"), "{retro}");
    // `o` reaches the cost column after failures.
    while priced.table.sort != SortColumn::Cost {
        priced.handle_key(Key::Char('o'));
        assert_ne!(priced.table.sort, SortColumn::Session, "cost never came");
    }
    let text = screen_text(&render(&priced, 140, 40));
    let order: Vec<&str> = ["planning", "incident-retro", "standup", "zz-new"]
        .into_iter()
        .filter(|id| text.contains(id))
        .collect();
    let at = |id: &str| text.find(id).unwrap();
    assert!(
        order.windows(2).all(|w| at(w[0]) < at(w[1])),
        "the costliest first: {text}"
    );
    priced.handle_key(Key::Char('x'));
    let text = screen_text(&render(&priced, 140, 40));
    assert!(!text.contains("Cost"), "x hides it: {text}");
    assert!(text.contains("cost column hidden"), "{text}");
    // Without prices there is no such column.
    let text = screen_text(&render(&app(false), 140, 40));
    assert!(!text.contains("Cost"), "{text}");
}

#[test]
fn the_spend_overlay_ranks_feeds_and_sessions_by_cost() {
    let mut priced = priced_app();
    priced.handle_key(Key::Char('$'));
    assert!(priced.spend);
    let text = screen_text(&render(&priced, 140, 40));
    assert!(text.contains("Spend in USD"), "{text}");
    assert!(text.contains("since start 1.72 USD"), "{text}");
    assert!(text.contains("1.72  #0 ws://127.0.0.1:9100/a"), "{text}");
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing: {text}"))
    };
    assert!(at("1.25  planning") < at("0.4567  incident-retro"));
    assert!(at("0.4567  incident-retro") < at("0.01230  standup"));
    assert!(
        !text.contains("0  zz-new"),
        "a session that spent nothing is not ranked"
    );
    assert!(text.contains("(4 held, 1.72 USD between them)"), "{text}");
    priced.handle_key(Key::Char('$'));
    assert!(!priced.spend, "$ closes it too");
    // Without a price table it says how to get one.
    let mut plain = app(false);
    plain.handle_key(Key::Char('$'));
    let text = screen_text(&render(&plain, 100, 30));
    assert!(text.contains("no price table"), "{text}");
}

#[test]
fn b_lifts_the_selected_sessions_budget_unless_read_only() {
    let mut app = priced_app();
    let selected = app.table.selected_id().cloned().unwrap();
    assert_eq!(
        app.handle_key(Key::Char('B')),
        vec![Command::LiftBudget { session: selected }]
    );
    app.read_only = Some("attached with a viewer's token".into());
    assert_eq!(app.handle_key(Key::Char('B')), vec![]);
}

#[test]
fn the_fresh_column_says_when_a_session_is_next_fresh() {
    use inflight::engine::freshness::Freshness;
    let mut snapshot = fixture(now());
    for row in snapshot.sessions.iter_mut() {
        let (summary, mind_map) = match row.id.as_str() {
            "standup" => (
                Freshness::In(Duration::from_secs(12)),
                Freshness::In(Duration::from_secs(4)),
            ),
            "planning" => (Freshness::Fresh, Freshness::Fresh),
            "incident-retro" => (Freshness::Fresh, Freshness::Stopped),
            _ => (Freshness::Unknown, Freshness::Fresh),
        };
        row.ops[Operation::SUMMARY].fresh = summary;
        row.ops[Operation::MIND_MAP].fresh = mind_map;
    }
    let app = App::new(Theme::new(false), snapshot);
    let text = screen_text(&render(&app, 140, 40));
    assert!(text.contains("Fresh"), "{text}");
    let cell = |id: &str| {
        let line = text.lines().find(|l| l.contains(id)).unwrap().to_string();
        line.split_whitespace()
            .rev()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(cell("standup"), "~12s", "the stalest operation: {text}");
    assert_eq!(cell("planning"), "now");
    assert_eq!(cell("incident-retro"), "never");
    assert_eq!(cell("zz-new"), "-");
}
