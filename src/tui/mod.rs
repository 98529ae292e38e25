//! The operator dashboard.
//!
//! State lives in [`app`] (no I/O), drawing in [`views`], keys in [`keymap`]
//! (which also writes the help and the hint bar), and what it reads in
//! [`source`]: the engine in this process, or one attached over its API.
//! This module is the main loop: it owns the terminal, reads keys, the
//! source's wakes and signals, takes snapshots, hands the app's commands to
//! the source, and redraws only when something changed, at most about 15
//! times a second.

pub mod app;
pub mod keymap;
pub(crate) mod messages;
pub(crate) mod panes;
pub mod source;
pub(crate) mod terminal;
pub mod theme;
pub mod views;

use std::time::{Duration, SystemTime};

use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use tokio::time::{Instant, MissedTickBehavior};

use app::{App, Screen};
use keymap::Key;
use source::{Answer, Source, Wake};
use theme::Theme;

/// Shortest time between two frames.
pub const FRAME_INTERVAL: Duration = Duration::from_millis(66);
/// While runs are in flight their durations tick: redraw this often.
const LIVE_INTERVAL: Duration = Duration::from_millis(200);
/// Ages tick too: redraw at least this often.
const IDLE_INTERVAL: Duration = Duration::from_secs(1);

pub struct TuiOptions {
    pub color: bool,
}

/// Runs the dashboard on `source` until the operator quits or a signal
/// arrives.
pub async fn run(mut source: impl Source, options: TuiOptions) -> Result<(), String> {
    // Caught before the terminal changes, so any stop gives it back.
    let mut signals = crate::signals::StopSignals::install(crate::signals::Hangup::Stops);
    let mut guard =
        terminal::TerminalGuard::enter().map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let mut app = App::new(Theme::new(options.color), source.snapshot());
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(FRAME_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut stop = Box::pin(signals.recv());

    let mut dirty = true;
    let mut last_draw = Instant::now() - IDLE_INTERVAL;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
            wake = source.wake() => match wake {
                Wake::Changed => dirty = true,
                Wake::Answer(answer) => {
                    show(&mut app, answer);
                    dirty = true;
                    last_draw = Instant::now() - FRAME_INTERVAL;
                }
            },
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(event))) => {
                    if let Some(key) = Key::from_event(&event) {
                        for command in app.handle_key(key) {
                            source.carry_out(command);
                        }
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
        let since = last_draw.elapsed();
        let live = app.snapshot.totals.running + app.snapshot.totals.queued > 0;
        let due = (dirty && since >= FRAME_INTERVAL)
            || (live && since >= LIVE_INTERVAL)
            || since >= IDLE_INTERVAL;
        if !due {
            continue;
        }
        refresh(&mut source, &mut app);
        if let Ok(size) = guard.terminal.size() {
            app.fit(size.width, size.height);
        }
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

/// Reads the source into the app: the link, the snapshot, the log lines and
/// the open session's details.
pub fn refresh(source: &mut impl Source, app: &mut App) {
    app.link = source.link();
    app.read_only = source.read_only();
    if app.paused {
        return;
    }
    app.set_snapshot(source.snapshot());
    app.refresh_logs(source.logs(), false);
    if app.screen == Screen::Detail && !app.details.stored {
        let detail = app
            .selected_row()
            .map(|row| row.id.clone())
            .and_then(|id| source.detail(&id));
        app.set_detail(detail);
    }
}

/// Puts a command's answer on the message line (or the details).
pub fn show(app: &mut App, answer: Answer) {
    match answer {
        Answer::Triggered { session, answers } => {
            app.show_triggered(&session, &answers, SystemTime::now())
        }
        Answer::Cancelled { session, stopped } => app.show_cancelled(&session, &stopped),
        Answer::Stored { session, detail } => app.show_stored(&session, detail.map(|d| *d)),
        Answer::BudgetLifted { session } => app.say(
            &format!("{session} · budget lifted: its runs go on"),
            app::Tone::Good,
        ),
        Answer::BudgetRaised {
            session,
            tokens,
            cost,
        } => {
            let mut by = Vec::new();
            if tokens > 0 {
                by.push(format!("{tokens} tokens"));
            }
            if cost.0 > 0 {
                by.push(cost.shown());
            }
            app.say(
                &format!("{session} · budget raised by {} in all", by.join(" and ")),
                app::Tone::Good,
            )
        }
        Answer::Refused(why) => app.say(&why, app::Tone::Warn),
    }
}
