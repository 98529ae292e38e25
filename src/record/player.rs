//! The dashboard's replay: a recording played through the engine in a
//! thread of its own, on a paused clock that moves only as the operator
//! lets it: at a speed, paused, a step at a time, or to a time.
//!
//! Every tenth of a second of real time, the player moves the recording's
//! clock on by as much times the speed (nothing while paused), lets the
//! engine catch up on that stretch in paused time, and sends the dashboard
//! a [`Frame`]: the engine's snapshot, the watched session's details, and
//! the log lines of what was recorded meanwhile. Going back starts the
//! engine again from the start and plays up to the time asked for: the
//! paused clock makes that a matter of milliseconds.
//!
//! The snapshot crosses threads as JSON with its instants relative to the
//! player's clock (`monotime`), so the dashboard reads them on its own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::Level;

use super::{Reading, Record, Settings, Sim};
use crate::logs::LogLine;
use crate::model::SessionId;

/// How often the player moves on and sends a frame, in real time.
const FRAME: Duration = Duration::from_millis(100);

/// The fastest and slowest a replay plays.
pub const SPEEDS: [f64; 9] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0];

/// What the operator asks of the player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Play, or pause.
    Toggle,
    /// Pause, and move on to the next recorded moment.
    Step,
    /// Move by this many seconds (back when negative).
    SeekBy(i64),
    /// Go to this many microseconds into the recording.
    SeekTo(u64),
    Faster,
    Slower,
    /// Send this session's details with each frame.
    Watch(Option<SessionId>),
}

/// What the dashboard shows of one moment of the replay.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Where the replay is, in microseconds of the recording.
    pub at_us: u64,
    pub length_us: u64,
    /// The recording's start on the wall clock.
    pub started_unix_us: u64,
    pub playing: bool,
    pub speed: f64,
    /// The player's clock when the snapshot was taken (`monotime`).
    pub sender_now: i64,
    /// The engine's snapshot, as JSON.
    pub snapshot: Vec<u8>,
    /// The watched session's details, as JSON.
    pub detail: Option<(SessionId, Vec<u8>)>,
    /// The log lines recorded since the last frame.
    pub logs: Vec<LogLine>,
    /// The replay went back: the log starts again with `logs`.
    pub logs_reset: bool,
}

impl Frame {
    /// The replay's time on the recording's wall clock.
    pub fn recorded_time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(self.started_unix_us + self.at_us)
    }
}

/// The player's handles: controls in, frames out.
pub struct Player {
    pub controls: std::sync::mpsc::Sender<Control>,
    pub frames: tokio::sync::mpsc::Receiver<Frame>,
}

impl Player {
    /// Starts playing `reading` at `speed` in a thread of its own.
    pub fn start(reading: &Reading, speed: f64) -> Result<Self, String> {
        let (controls, control_rx) = std::sync::mpsc::channel();
        let (frame_tx, frames) = tokio::sync::mpsc::channel(16);
        let records: Arc<[(u64, Record)]> = reading.first_run().into();
        let settings = reading.settings.clone();
        let started_unix_us = reading.started_unix_us;
        std::thread::Builder::new()
            .name("inflight-replay".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .start_paused(true)
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!("the replay cannot start its clock: {e}");
                        return;
                    }
                };
                let playing = Playing {
                    records,
                    settings,
                    started_unix_us,
                    speed,
                };
                runtime.block_on(playing.run(control_rx, frame_tx));
            })
            .map_err(|e| format!("cannot start the replay: {e}"))?;
        Ok(Self { controls, frames })
    }
}

struct Playing {
    records: Arc<[(u64, Record)]>,
    settings: Settings,
    started_unix_us: u64,
    speed: f64,
}

impl Playing {
    async fn run(
        self,
        controls: std::sync::mpsc::Receiver<Control>,
        frames: tokio::sync::mpsc::Sender<Frame>,
    ) {
        let length = super::length(&self.records);
        let mut sim = Sim::new(self.records.clone(), &self.settings, true);
        let mut playing = true;
        let mut speed = self.speed;
        let mut watched: Option<SessionId> = None;
        let mut logs = Vec::new();
        let mut logs_reset = false;
        // The next record to turn into a log line.
        let mut logged = 0usize;
        let mut last = std::time::Instant::now();
        loop {
            let mut target = sim.at();
            if playing {
                let moved = last.elapsed().as_micros() as f64 * speed;
                target = target.saturating_add(moved as u64);
            }
            last = std::time::Instant::now();
            loop {
                match controls.try_recv() {
                    Ok(Control::Toggle) => playing = !playing,
                    Ok(Control::Step) => {
                        playing = false;
                        target = sim.next_at().unwrap_or(length);
                    }
                    Ok(Control::SeekBy(seconds)) => {
                        let by = seconds.unsigned_abs().saturating_mul(1_000_000);
                        target = if seconds < 0 {
                            sim.at().saturating_sub(by)
                        } else {
                            sim.at().saturating_add(by)
                        };
                    }
                    Ok(Control::SeekTo(at)) => target = at,
                    Ok(Control::Faster) => speed = step_speed(speed, true),
                    Ok(Control::Slower) => speed = step_speed(speed, false),
                    Ok(Control::Watch(session)) => watched = session,
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    // The dashboard is gone.
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        sim.stop().await;
                        return;
                    }
                }
            }
            let target = target.min(length);
            if target < sim.at() {
                // Back: the engine starts again and plays up to there.
                sim.stop().await;
                sim = Sim::new(self.records.clone(), &self.settings, true);
                logs.clear();
                logs_reset = true;
                logged = 0;
            }
            sim.advance_to(target).await;
            if sim.at() >= length {
                playing = false;
            }
            while let Some((at, record)) = self.records.get(logged) {
                if *at > sim.at() {
                    break;
                }
                logged += 1;
                if let Some(line) = log_line(self.started_unix_us, *at, record) {
                    logs.push(line);
                }
            }
            if logs.len() > crate::logs::LOG_CAPACITY {
                logs.drain(..logs.len() - crate::logs::LOG_CAPACITY);
            }
            let engine = sim.engine();
            let sender_now = crate::monotime::now_millis();
            let snapshot = serde_json::to_vec(&engine.snapshot()).unwrap_or_default();
            let detail = watched.as_ref().and_then(|session| {
                let detail = engine
                    .session_detail(session, crate::tui::source::embedded::DETAIL_TRANSCRIPTS)?;
                Some((session.clone(), serde_json::to_vec(&detail).ok()?))
            });
            let frame = Frame {
                at_us: sim.at(),
                length_us: length,
                started_unix_us: self.started_unix_us,
                playing,
                speed,
                sender_now,
                snapshot,
                detail,
                logs: std::mem::take(&mut logs),
                logs_reset,
            };
            match frames.try_send(frame) {
                Ok(()) => logs_reset = false,
                // The dashboard is behind: this frame's lines go with the
                // next one.
                Err(tokio::sync::mpsc::error::TrySendError::Full(frame)) => logs = frame.logs,
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    sim.stop().await;
                    return;
                }
            }
            // Real time passes here; the paused clock does not.
            std::thread::sleep(FRAME);
        }
    }
}

/// The next speed up or down the ladder.
fn step_speed(speed: f64, faster: bool) -> f64 {
    if faster {
        SPEEDS
            .iter()
            .copied()
            .find(|s| *s > speed)
            .unwrap_or(SPEEDS[SPEEDS.len() - 1])
    } else {
        SPEEDS
            .iter()
            .rev()
            .copied()
            .find(|s| *s < speed)
            .unwrap_or(SPEEDS[0])
    }
}

/// A recorded record as the log pane shows it: the line the engine logged
/// when it happened, at the recorded time.
fn log_line(started_unix_us: u64, at: u64, record: &Record) -> Option<LogLine> {
    let (level, session, text) = match record {
        Record::Queued {
            session,
            op,
            run,
            follow_up,
            ..
        } => (
            Level::DEBUG,
            session,
            format!(
                "processing admitted, waiting for an LLM permit op={op} run_id={run} follow_up={follow_up}"
            ),
        ),
        Record::Started {
            session,
            op,
            run,
            covered,
            ..
        } => (
            Level::INFO,
            session,
            format!("processing started op={op} run_id={run} covered_generation={covered}"),
        ),
        Record::Skipped {
            session,
            op,
            running,
            pending,
            n,
            ..
        } => (
            Level::INFO,
            session,
            format!(
                "already processing, skipped op={op} run_id={running} pending={pending} times={n}"
            ),
        ),
        Record::Finished {
            session,
            op,
            run,
            outcome,
            ms,
            error,
            ..
        } => match error {
            None if *outcome == crate::events::Outcome::Ok => (
                Level::INFO,
                session,
                format!("processing finished op={op} run_id={run} duration_ms={ms} outcome=ok"),
            ),
            _ => (
                Level::WARN,
                session,
                format!(
                    "processing ended op={op} run_id={run} duration_ms={ms} outcome={} error={}",
                    outcome.as_str(),
                    error.as_deref().unwrap_or("")
                ),
            ),
        },
        Record::Result {
            session,
            op,
            run,
            covered,
            ..
        } => (
            Level::DEBUG,
            session,
            format!("result ready op={op} run_id={run} covered_generation={covered}"),
        ),
        Record::End { session, .. } => (Level::INFO, session, "the feed ended the session".into()),
        Record::Stop { drain_ms, .. } => {
            return Some(LogLine {
                number: 0,
                at: SystemTime::UNIX_EPOCH + Duration::from_micros(started_unix_us + at),
                level: Level::INFO,
                session: None,
                text: format!("stopping: the runs in flight had {drain_ms} ms to finish"),
            });
        }
        Record::Gap { lost, .. } => {
            return Some(LogLine {
                number: 0,
                at: SystemTime::UNIX_EPOCH + Duration::from_micros(started_unix_us + at),
                level: Level::WARN,
                session: None,
                text: format!("the recording lost {lost} records here: the writer was behind"),
            });
        }
        Record::Header { .. } | Record::Transcript { .. } | Record::Llm { .. } => return None,
    };
    // As the engine's lines read: the message, the session, the rest.
    let (message, rest) = text
        .split_once(" op=")
        .map_or((text.as_str(), ""), |(m, r)| (m, r));
    let text = if rest.is_empty() {
        format!("{message} session_id={session}")
    } else {
        format!("{message} session_id={session} op={rest}")
    };
    Some(LogLine {
        number: 0,
        at: SystemTime::UNIX_EPOCH + Duration::from_micros(started_unix_us + at),
        level,
        session: Some(session.as_str().to_string()),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_move_along_the_ladder_and_stop_at_its_ends() {
        assert_eq!(step_speed(1.0, true), 2.0);
        assert_eq!(step_speed(1.0, false), 0.5);
        assert_eq!(step_speed(100.0, true), 100.0);
        assert_eq!(step_speed(0.25, false), 0.25);
        assert_eq!(step_speed(3.0, true), 5.0, "from between two, up");
        assert_eq!(step_speed(3.0, false), 2.0, "from between two, down");
    }
}
