//! A recording played back, as a [`Source`]: the player (`record::Player`)
//! runs the engine on its own paused clock in a thread of its own; this
//! side reads its frames, maps their instants onto this clock, and keeps
//! the log lines of what was recorded. Nothing can be triggered.

use super::{Answer, Link, ReplayAt, Source, Wake};
use crate::engine::{SessionDetail, Snapshot};
use crate::logs::LogBuffer;
use crate::model::SessionId;
use crate::record::{Control, Frame, Player, Reading};
use crate::tui::app::Command;

pub struct Replayed {
    player: Player,
    /// The newest frame not yet read.
    pending: Option<Frame>,
    snapshot: Snapshot,
    detail: Option<(SessionId, SessionDetail)>,
    watched: Option<SessionId>,
    at: ReplayAt,
    logs: LogBuffer,
    answers: std::collections::VecDeque<Answer>,
}

impl Replayed {
    /// Starts playing `reading` at `speed`; its first moment is read before
    /// the dashboard draws.
    pub async fn start(reading: &Reading, speed: f64) -> Result<Self, String> {
        let mut player = Player::start(reading, speed)?;
        let first = player
            .frames
            .recv()
            .await
            .ok_or("the replay stopped before its first moment")?;
        let mut replayed = Self {
            player,
            pending: None,
            snapshot: decode(&first)?,
            detail: None,
            watched: None,
            at: at_of(&first),
            logs: LogBuffer::new(),
            answers: Default::default(),
        };
        replayed.take(first);
        Ok(replayed)
    }

    /// Reads a frame: where the replay is, its snapshot, details and log.
    fn take(&mut self, frame: Frame) {
        self.at = at_of(&frame);
        if let Ok(snapshot) = decode(&frame) {
            self.snapshot = snapshot;
        }
        self.detail = frame.detail.as_ref().and_then(|(session, bytes)| {
            let detail = crate::monotime::decoding_with(frame.sender_now, || {
                serde_json::from_slice::<SessionDetail>(bytes)
            })
            .ok()?;
            Some((session.clone(), detail))
        });
        if frame.logs_reset {
            self.logs.clear();
        }
        for line in frame.logs {
            self.logs.push_line(line);
        }
    }

    fn read_frames(&mut self) {
        if let Some(frame) = self.pending.take() {
            self.take(frame);
        }
        while let Ok(frame) = self.player.frames.try_recv() {
            self.take(frame);
        }
    }
}

fn at_of(frame: &Frame) -> ReplayAt {
    ReplayAt {
        at_us: frame.at_us,
        length_us: frame.length_us,
        started_unix_us: frame.started_unix_us,
        playing: frame.playing,
        speed: frame.speed,
    }
}

fn decode(frame: &Frame) -> Result<Snapshot, String> {
    crate::monotime::decoding_with(frame.sender_now, || {
        serde_json::from_slice::<Snapshot>(&frame.snapshot)
    })
    .map_err(|e| format!("the replay's snapshot does not read: {e}"))
}

impl Source for Replayed {
    fn snapshot(&mut self) -> Snapshot {
        self.read_frames();
        self.snapshot.clone()
    }

    fn detail(&mut self, session: &SessionId) -> Option<SessionDetail> {
        if self.watched.as_ref() != Some(session) {
            self.watched = Some(session.clone());
            let _ = self
                .player
                .controls
                .send(Control::Watch(Some(session.clone())));
        }
        self.detail
            .as_ref()
            .filter(|(id, _)| id == session)
            .map(|(_, detail)| detail.clone())
    }

    fn logs(&self) -> &LogBuffer {
        &self.logs
    }

    fn link(&self) -> Link {
        Link::Replay(self.at.clone())
    }

    fn read_only(&self) -> Option<String> {
        Some("a replay".into())
    }

    fn carry_out(&mut self, command: Command) {
        match command {
            Command::Quit => {}
            Command::Replay(control) => {
                if self.player.controls.send(control).is_err() {
                    self.answers
                        .push_back(Answer::Refused("the replay has stopped".into()));
                }
            }
            _ => self.answers.push_back(Answer::Refused(
                "a replay: what was recorded cannot be changed".into(),
            )),
        }
    }

    async fn wake(&mut self) -> Wake {
        if let Some(answer) = self.answers.pop_front() {
            return Wake::Answer(answer);
        }
        match self.player.frames.recv().await {
            Some(frame) => {
                if let Some(older) = self.pending.replace(frame) {
                    // Keep its log lines: they come before the new frame's.
                    self.take(older);
                }
                Wake::Changed
            }
            None => std::future::pending().await,
        }
    }
}
