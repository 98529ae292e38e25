//! The operator dashboard.
//!
//! State lives in [`app`] (no I/O), drawing in [`views`], keys in [`keymap`]
//! (which also writes the help and the hint bar). This module is the main
//! loop: it owns the terminal, reads keys, engine events and signals, takes
//! snapshots, carries out the app's commands against the engine, and redraws
//! only when something changed, at most about 15 times a second.

pub mod app;
pub mod format;
pub mod keymap;
pub mod terminal;
pub mod theme;
pub mod views;

use std::time::{Duration, SystemTime};

use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::{Instant, MissedTickBehavior};

use crate::engine::Engine;
use crate::logs::LogBuffer;
use crate::model::Operation;
use app::{App, Command, Screen};
use keymap::Key;
use theme::Theme;

/// Shortest time between two frames.
pub const FRAME_INTERVAL: Duration = Duration::from_millis(66);
/// While runs are in flight their durations tick: redraw this often.
const LIVE_INTERVAL: Duration = Duration::from_millis(200);
/// Ages tick too: redraw at least this often.
const IDLE_INTERVAL: Duration = Duration::from_secs(1);
/// Transcripts shown in the detail view.
const DETAIL_TRANSCRIPTS: usize = 40;

pub struct TuiOptions {
    pub color: bool,
}

/// Runs the dashboard until the operator quits or a signal arrives.
pub async fn run(engine: Engine, logs: LogBuffer, options: TuiOptions) -> Result<(), String> {
    // Caught before the terminal changes, so any stop gives it back.
    let mut signals = crate::signals::StopSignals::install(crate::signals::Hangup::Stops);
    let mut guard =
        terminal::TerminalGuard::enter().map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let mut app = App::new(Theme::new(options.color), engine.snapshot());
    let mut keys = EventStream::new();
    let mut engine_events = engine.subscribe();
    let mut tick = tokio::time::interval(FRAME_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut stop = Box::pin(signals.recv());

    let mut dirty = true;
    let mut last_draw = Instant::now() - IDLE_INTERVAL;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(event))) => {
                    if let Some(key) = Key::from_event(&event) {
                        let commands = app.handle_key(key);
                        carry_out(&engine, &mut app, commands);
                        dirty = true;
                        // Answer keys at once, not at the next tick.
                        last_draw = Instant::now() - FRAME_INTERVAL;
                    }
                }
                Some(Ok(TermEvent::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("cannot read the keyboard: {e}")),
                None => break,
            },
        }
        if app.quit {
            break;
        }
        // Drain engine events: they only tell us something changed.
        while let Ok(_) | Err(TryRecvError::Lagged(_)) = engine_events.try_recv() {
            dirty = true;
        }
        let since = last_draw.elapsed();
        let live = app.snapshot.totals.running + app.snapshot.totals.queued > 0;
        let due = (dirty && since >= FRAME_INTERVAL)
            || (live && since >= LIVE_INTERVAL)
            || since >= IDLE_INTERVAL;
        if !due {
            continue;
        }
        refresh(&engine, &logs, &mut app);
        guard
            .terminal
            .draw(|frame| views::draw(frame, &app))
            .map_err(|e| format!("cannot draw: {e}"))?;
        dirty = false;
        last_draw = Instant::now();
        panic_if_asked();
    }
    Ok(())
}

/// Debug builds only: `INFLIGHT_TEST_PANIC=ui` panics on the UI thread after
/// the first frame, so the tests can watch the panic hook give the terminal
/// back in the real binary. Release builds have no such switch.
fn panic_if_asked() {
    #[cfg(debug_assertions)]
    if std::env::var_os("INFLIGHT_TEST_PANIC").is_some_and(|v| v == "ui") {
        panic!("INFLIGHT_TEST_PANIC=ui: a panic on the UI thread, as asked");
    }
}

fn refresh(engine: &Engine, logs: &LogBuffer, app: &mut App) {
    if app.paused {
        return;
    }
    app.set_snapshot(engine.snapshot());
    app.refresh_logs(logs, false);
    if app.screen == Screen::Detail && !app.stored {
        let detail = app
            .selected_row()
            .map(|row| row.id.clone())
            .and_then(|id| engine.session_detail(&id, DETAIL_TRANSCRIPTS));
        app.set_detail(detail);
    }
}

fn carry_out(engine: &Engine, app: &mut App, commands: Vec<Command>) {
    for command in commands {
        match command {
            Command::Quit => {}
            Command::Trigger { session, ops } => {
                let answers: Option<Vec<_>> = ops
                    .iter()
                    .map(|op| engine.request(&session, *op).map(|answer| (*op, answer)))
                    .collect();
                match answers {
                    Some(answers) => app.show_triggered(&session, &answers, SystemTime::now()),
                    None => app.say(
                        &format!("{session} · no such session any more"),
                        app::Tone::Warn,
                    ),
                }
            }
            Command::OpenStored { session } => {
                // One session's rows by primary key: a few milliseconds.
                let detail = engine
                    .db()
                    .and_then(|db| db.session(&session).ok().flatten())
                    .map(|stored| crate::engine::detail_from_disk(&stored, DETAIL_TRANSCRIPTS));
                app.show_stored(&session, detail);
            }
            Command::Cancel { session } => {
                let stopped: Vec<_> = Operation::ALL
                    .iter()
                    .map(|op| (*op, engine.cancel(&session, *op)))
                    .collect();
                app.show_cancelled(&session, &stopped);
            }
        }
    }
}
