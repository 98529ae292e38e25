//! The events stream: how a run's result and end reach every instance.
//!
//! `finish` and `put_result` append to one Redis Stream (`{prefix}events`),
//! capped near [`STREAM_LENGTH`] entries, in the same script as the step
//! itself, so what the stream says is what happened, in order. Every
//! instance reads it from where it last was ([`Cluster::read_events`]), so a
//! reader that lost its connection resumes by id and misses nothing the cap
//! kept.

use std::collections::HashMap;
use std::time::Duration;

use super::{Cluster, ClusterError};
use crate::model::{Operation, SessionId};

/// About how many entries the stream keeps (`XADD MAXLEN ~`).
pub const STREAM_LENGTH: u64 = 10_000;
/// How long one read waits for a new entry.
pub const READ_BLOCK: Duration = Duration::from_secs(1);
/// Most entries one read returns.
const READ_COUNT: u64 = 512;

/// One entry of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEvent {
    /// The instance whose run it is about.
    pub instance: String,
    pub session: SessionId,
    pub op: Operation,
    pub fence: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A run ended: its outcome (`ok`, `failed`, `timed_out`,
    /// `cancelled`), the generation it read, and its error.
    Finished {
        outcome: String,
        covered_generation: u64,
        error: Option<String>,
    },
    /// A run's result was kept: its body as the instance wrote it (JSON).
    Result { body: String },
}

impl ClusterEvent {
    /// Reads one entry's fields; `None` for an entry this build does not
    /// know (a newer instance's), which readers skip.
    fn parse(fields: &HashMap<String, String>) -> Option<Self> {
        let text = |name: &str| fields.get(name).map(String::as_str);
        let kind = match text("type")? {
            "finished" => EventKind::Finished {
                outcome: text("outcome")?.to_string(),
                covered_generation: text("covered")?.parse().ok()?,
                error: text("error").filter(|e| !e.is_empty()).map(str::to_string),
            },
            "result" => EventKind::Result {
                body: text("body")?.to_string(),
            },
            _ => return None,
        };
        Some(Self {
            instance: text("instance")?.to_string(),
            session: SessionId::parse(text("session")?).ok()?,
            op: crate::ops::registry().parse(text("op")?)?,
            fence: text("fence")?.parse().ok()?,
            kind,
        })
    }
}

/// `XREAD`'s answer: per stream, its entries as (id, fields).
type Entries = Option<Vec<(String, Vec<(String, HashMap<String, String>)>)>>;

impl Cluster {
    /// The id of the stream's newest entry (`0-0` when empty): where a
    /// reader that wants only what comes next starts.
    pub async fn events_head(&self) -> Result<String, ClusterError> {
        let mut connection = self.inner.connection.clone();
        let key = self.stream_key();
        let newest: Vec<(String, HashMap<String, String>)> = self
            .call(async {
                redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(newest
            .into_iter()
            .next()
            .map(|(id, _)| id)
            .unwrap_or_else(|| "0-0".to_string()))
    }

    /// The entries after `after`, waiting up to [`READ_BLOCK`] for one;
    /// each with its id, so the next read goes on from the last. Entries
    /// this build cannot read are left out (their id still counts).
    pub async fn read_events(
        &self,
        after: &str,
    ) -> Result<(String, Vec<ClusterEvent>), ClusterError> {
        let mut connection = self.inner.listener.clone();
        let key = self.stream_key();
        let entries: Entries = self
            .call_within(READ_BLOCK + super::CALL_TIMEOUT, async {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(READ_COUNT)
                    .arg("BLOCK")
                    .arg(READ_BLOCK.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(after)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        let mut last = after.to_string();
        let mut events = Vec::new();
        for (_, entries) in entries.unwrap_or_default() {
            for (id, fields) in entries {
                events.extend(ClusterEvent::parse(&fields));
                last = id;
            }
        }
        Ok((last, events))
    }
}
