//! Recorded meetings: JSONL files in the native protocol, one meeting each.
//!
//! Four meetings ship inside the binary (`assets/transcripts/`) for the demo;
//! `inflight feed --dir DIR` plays any other folder of such files.

use std::path::Path;

use super::protocol::{self, FeedMessage};
use crate::model::{SessionId, Transcript};

/// One recorded meeting: its session id and its utterances in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Meeting {
    pub session: SessionId,
    pub lines: Vec<Transcript>,
}

const EMBEDDED: [(&str, &str); 4] = [
    (
        "launch-review",
        include_str!("../../assets/transcripts/launch-review.jsonl"),
    ),
    (
        "incident-retro",
        include_str!("../../assets/transcripts/incident-retro.jsonl"),
    ),
    (
        "hiring-sync",
        include_str!("../../assets/transcripts/hiring-sync.jsonl"),
    ),
    (
        "garden-coop",
        include_str!("../../assets/transcripts/garden-coop.jsonl"),
    ),
];

/// The demo meetings built into the binary.
pub fn embedded() -> Vec<Meeting> {
    EMBEDDED
        .iter()
        .filter_map(|(name, text)| match parse(name, text) {
            Ok(meeting) => Some(meeting),
            Err(e) => {
                tracing::error!("embedded meeting {name} is broken: {e}");
                None
            }
        })
        .collect()
}

/// Reads every `*.jsonl` file of `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Meeting>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    let mut meetings = Vec::with_capacity(paths.len());
    for path in paths {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("meeting");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        meetings.push(parse(name, &text).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    if meetings.is_empty() {
        return Err(format!("{} holds no .jsonl meetings", dir.display()));
    }
    Ok(meetings)
}

/// Parses one meeting. Lines without a `session_id` of their own take `name`;
/// lines without `seq` are numbered in order.
pub fn parse(name: &str, jsonl: &str) -> Result<Meeting, String> {
    let fallback = SessionId::parse(name).map_err(|e| format!("file name as session id: {e}"))?;
    let mut lines = Vec::new();
    for (i, line) in jsonl.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if value.get("session_id").is_none() {
            value["session_id"] = fallback.as_str().into();
        }
        match protocol::parse(&value.to_string()) {
            Ok(FeedMessage::Transcript { mut transcript, .. }) => {
                transcript.seq.get_or_insert(lines.len() as u64 + 1);
                lines.push(transcript);
            }
            Ok(_) => {}
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
    }
    let session = lines.first().map_or(fallback, |l| l.session_id.clone());
    Ok(Meeting { session, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_meetings_are_rich_enough() {
        let meetings = embedded();
        assert_eq!(meetings.len(), 4);
        for meeting in &meetings {
            assert!(meeting.lines.len() >= 40, "{} is short", meeting.session);
            let speakers: std::collections::HashSet<_> = meeting
                .lines
                .iter()
                .filter_map(|l| l.speaker.clone())
                .collect();
            assert!(
                speakers.len() >= 3,
                "{} has {} speakers",
                meeting.session,
                speakers.len()
            );
            let mut last = 0.0;
            for line in &meeting.lines {
                let start = line.start.unwrap_or(-1.0);
                assert!(
                    start >= last,
                    "{}: lines out of order at {start}",
                    meeting.session
                );
                last = start;
            }
        }
    }
}
