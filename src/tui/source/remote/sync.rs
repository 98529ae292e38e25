//! The sync loop: reads the rows changed since the version held, the new
//! log lines and, while open, a session's details; keeps the last picture
//! and backs off while the server does not answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::super::Link;
use crate::api::dashboard::DashboardDelta;
use crate::api::logs::LogsAnswer;
use crate::logs::{LogBuffer, LogLine};

use super::{Api, MIN_GAP, POLL_EVERY, Picture, WATCH_FOR, backoff, lock};

/// The sync loop's state.
pub(super) struct Sync {
    pub(super) api: Api,
    pub(super) server: String,
    pub(super) picture: Arc<Mutex<Picture>>,
    pub(super) logs: LogBuffer,
    pub(super) changed: Arc<Notify>,
    pub(super) poke: Arc<Notify>,
}

impl Sync {
    pub(super) async fn run(self) {
        let mut failures = 0u32;
        let mut lost_since: Option<Instant> = None;
        let mut next_log = 0u64;
        loop {
            let read_at = Instant::now();
            match self.read(&mut next_log).await {
                Ok(()) => {
                    failures = 0;
                    lost_since = None;
                    let mut picture = lock(&self.picture);
                    picture.link = Link::Connected {
                        server: self.server.clone(),
                    };
                    picture.seen_at = Instant::now();
                }
                Err(error) => {
                    failures += 1;
                    let since = *lost_since.get_or_insert(read_at);
                    lock(&self.picture).link = Link::Lost {
                        server: self.server.clone(),
                        since,
                        attempt: failures,
                        error,
                    };
                    self.changed.notify_one();
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            }
            self.changed.notify_one();
            tokio::select! {
                _ = self.poke.notified() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
            tokio::time::sleep_until(read_at + MIN_GAP).await;
        }
    }

    /// One round: the rows, the new log lines, the watched details.
    pub(super) async fn read(&self, next_log: &mut u64) -> Result<(), String> {
        let (since, epoch) = {
            let picture = lock(&self.picture);
            if picture.reload {
                (None, None)
            } else {
                (Some(picture.version), picture.epoch)
            }
        };
        let mut path = "/api/dashboard".to_string();
        if let (Some(since), Some(epoch)) = (since, epoch) {
            path = format!("{path}?since={since}&epoch={epoch}");
        }
        let delta: DashboardDelta = self.api.get_timed(&path).await?;
        {
            let mut picture = lock(&self.picture);
            if picture.epoch != Some(delta.epoch) {
                // Another server process: its log numbers start again too.
                *next_log = 0;
            }
            merge(&mut picture, delta);
        }
        let logs: LogsAnswer = self.api.get(&format!("/api/logs?from={next_log}")).await?;
        if logs.missed {
            self.logs.push(
                SystemTime::now(),
                tracing::Level::WARN,
                None,
                "(log lines were missed while away)".into(),
            );
        }
        for line in logs.lines {
            self.logs.push_line(LogLine {
                number: 0,
                at: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(line.at.max(0.0)),
                level: line.level.parse().unwrap_or(tracing::Level::INFO),
                session: line.session,
                text: line.text,
            });
        }
        *next_log = logs.next;
        let watched = lock(&self.picture)
            .watched
            .clone()
            .filter(|(_, at)| at.elapsed() < WATCH_FOR)
            .map(|(id, _)| id);
        if let Some(session) = watched {
            let detail = self.api.detail(&session).await?;
            lock(&self.picture).detail = detail.map(|d| d.detail);
        }
        Ok(())
    }
}

/// Folds one answer of `/api/dashboard` into the picture.
fn merge(picture: &mut Picture, mut delta: DashboardDelta) {
    if delta.full {
        picture.rows.clear();
    }
    for id in &delta.removed {
        picture.rows.remove(id);
    }
    for row in std::mem::take(&mut delta.snapshot.sessions) {
        picture.rows.insert(row.id.clone(), row);
    }
    picture.header = delta.snapshot;
    picture.epoch = Some(delta.epoch);
    picture.version = delta.version;
    picture.role = Some(delta.role);
    picture.reload = false;
}
