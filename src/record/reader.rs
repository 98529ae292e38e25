//! Reading a recording back: every record up to the first damage, with
//! its time on one clock.
//!
//! A file appended to holds several segments, each opened by a header with
//! the wall-clock time it started; records are read on the first
//! segment's clock, so the segments follow each other as they happened.
//! A line that is cut short (a crash mid-write) or does not read ends the
//! reading there, and [`Damage`] says where and why: what came before is
//! kept. A recording of a later format version is refused with the
//! version it has.

use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{FORMAT_VERSION, HEADER_KIND, Record, Settings};

/// Where a recording stops being readable.
#[derive(Debug, Clone, PartialEq)]
pub struct Damage {
    /// The line, from 1.
    pub line: u64,
    /// Its first byte's offset in the file.
    pub offset: u64,
    pub why: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read up to line {} (byte {}), where it is damaged: {}",
            self.line, self.offset, self.why
        )
    }
}

/// What a recording holds.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The first header's settings.
    pub settings: Settings,
    /// The first header's start, in microseconds since 1970.
    pub started_unix_us: u64,
    /// Every record but the headers, with its time in microseconds since
    /// the first header's start, in the order written.
    pub records: Vec<(u64, Record)>,
    /// Where each segment after the first begins: the index of its first
    /// record in `records`.
    pub segment_starts: Vec<usize>,
    /// Where reading stopped early, if it did.
    pub damage: Option<Damage>,
}

impl Reading {
    /// The time of the last record, in microseconds (see [`length`]).
    pub fn length_us(&self) -> u64 {
        length(&self.records)
    }

    /// The records of one process's life: up to the end of the segment
    /// where the first `stop` is (what follows is a process started
    /// again), or all of them.
    pub fn first_run(&self) -> &[(u64, Record)] {
        let Some(stop) = self
            .records
            .iter()
            .position(|(_, r)| matches!(r, Record::Stop { .. }))
        else {
            return &self.records;
        };
        let end = self
            .segment_starts
            .iter()
            .copied()
            .find(|start| *start > stop)
            .unwrap_or(self.records.len());
        &self.records[..end]
    }
}

/// The time of the last record, in microseconds on their clock. Records
/// are written as things end, not quite in time order (an LLM call's
/// comes at its end, stamped with when it was sent), so this is the
/// latest stamp, not the last one. A call still out then is not counted
/// as answered: the recording did not see it end.
pub fn length(records: &[(u64, Record)]) -> u64 {
    records.iter().map(|(at, _)| *at).max().unwrap_or(0)
}

/// Reads `path`. An error for a file that cannot be opened, is not a
/// recording, or is of a later format version; damage further on is in
/// [`Reading::damage`].
pub fn read(path: &Path) -> Result<Reading, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot open the recording {}: {e}", path.display()))?;
    read_from(BufReader::new(file), &path.display().to_string())
}

fn header_of(record: &Record, name: &str) -> Result<(u64, Settings), String> {
    match record {
        Record::Header {
            version,
            inflight,
            started_unix_us,
            settings,
        } => {
            if *version > FORMAT_VERSION {
                return Err(format!(
                    "{name} is a recording of format version {version} (written by inflight \
                     {inflight}); this inflight reads versions up to {FORMAT_VERSION}: \
                     replay it with a newer inflight"
                ));
            }
            Ok((*started_unix_us, settings.clone()))
        }
        _ => Err(format!(
            "{name} does not start with a recording's header (`\"k\": \"{HEADER_KIND}\"`)"
        )),
    }
}

pub(super) fn read_from(mut input: impl BufRead, name: &str) -> Result<Reading, String> {
    let mut bytes = Vec::new();
    let mut offset = 0u64;
    let mut line_no = 0u64;
    let mut reading: Option<Reading> = None;
    let mut segment_start = 0u64;
    loop {
        bytes.clear();
        let n = input
            .read_until(b'\n', &mut bytes)
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let at_offset = offset;
        offset += n as u64;
        let damage = |why: String| Damage {
            line: line_no,
            offset: at_offset,
            why,
        };
        let parsed = if bytes.last() != Some(&b'\n') {
            Err(damage("the line is cut short (no end of line)".into()))
        } else if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        } else {
            serde_json::from_slice::<Record>(&bytes).map_err(|e| damage(e.to_string()))
        };
        let Some(so_far) = reading.as_mut() else {
            // The first line decides whether this is a recording at all:
            // its version is read before the rest of it.
            let record = match parsed {
                Ok(record) => record,
                Err(bad) => {
                    if let Some(version) = version_of(&bytes)
                        && version > u64::from(FORMAT_VERSION)
                    {
                        return Err(format!(
                            "{name} is a recording of format version {version}; this inflight \
                             reads versions up to {FORMAT_VERSION}: replay it with a newer inflight"
                        ));
                    }
                    return Err(format!("{name} is not a readable recording: {}", bad.why));
                }
            };
            let (started, settings) = header_of(&record, name)?;
            segment_start = started;
            reading = Some(Reading {
                settings,
                started_unix_us: started,
                records: Vec::new(),
                segment_starts: Vec::new(),
                damage: None,
            });
            continue;
        };
        let record = match parsed {
            Ok(record) => record,
            Err(bad) => {
                so_far.damage = Some(match version_of(&bytes) {
                    Some(version) if version > u64::from(FORMAT_VERSION) => Damage {
                        why: format!(
                            "a segment of format version {version}, later than this inflight reads ({FORMAT_VERSION})"
                        ),
                        ..bad
                    },
                    _ => bad,
                });
                break;
            }
        };
        if let Record::Header { .. } = record {
            match header_of(&record, name) {
                Ok((started, _)) => {
                    segment_start = started;
                    so_far.segment_starts.push(so_far.records.len());
                }
                Err(why) => {
                    so_far.damage = Some(damage(why));
                    break;
                }
            }
            continue;
        }
        let at = record.at().unwrap_or(0);
        let time = (segment_start + at).saturating_sub(so_far.started_unix_us);
        so_far.records.push((time, record));
    }
    reading.ok_or_else(|| format!("{name} is empty: not a recording"))
}

/// The `version` of a line that looks like a header, read loosely.
fn version_of(bytes: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    (value.get("k")?.as_str()? == HEADER_KIND)
        .then(|| value.get("version")?.as_u64())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Settings;

    fn header(version: u32, started: u64) -> String {
        let header = Record::Header {
            version,
            inflight: "test".into(),
            started_unix_us: started,
            settings: Settings::of(&crate::engine::EngineConfig::default()),
        };
        serde_json::to_string(&header).unwrap()
    }

    const END: &str = r#"{"k":"end","at":5000000,"session":"s1"}"#;

    #[test]
    fn segments_are_read_on_the_first_ones_clock() {
        let text = format!(
            "{}\n{END}\n\n{}\n{END}\n",
            header(1, 1_000_000_000),
            header(1, 1_060_000_000)
        );
        let reading = read_from(text.as_bytes(), "rec").unwrap();
        assert_eq!(reading.damage, None);
        let times: Vec<u64> = reading.records.iter().map(|(at, _)| *at).collect();
        assert_eq!(times, [5_000_000, 65_000_000], "a minute later, plus 5 s");
        assert_eq!(reading.segment_starts, [1]);
        assert_eq!(reading.length_us(), 65_000_000);
    }

    #[test]
    fn damage_stops_the_reading_where_it_is_and_says_so() {
        let first = header(1, 0);
        let text = format!("{first}\n{END}\nnot json\n{END}\n");
        let reading = read_from(text.as_bytes(), "rec").unwrap();
        assert_eq!(reading.records.len(), 1, "what came before is kept");
        let damage = reading.damage.unwrap();
        assert_eq!(damage.line, 3);
        assert_eq!(damage.offset, (first.len() + 1 + END.len() + 1) as u64);
        assert!(
            damage.to_string().starts_with(&format!(
                "read up to line 3 (byte {}), where it is damaged: ",
                damage.offset
            )),
            "{damage}"
        );
        // A later segment of a newer version is damage too, named so.
        let text = format!("{first}\n{END}\n{}\n{END}\n", header(9, 0));
        let reading = read_from(text.as_bytes(), "rec").unwrap();
        assert!(
            reading.damage.unwrap().why.contains("format version 9"),
            "named"
        );
    }

    #[test]
    fn a_replay_takes_the_first_process_up_to_the_end_of_its_stop() {
        let stop = r#"{"k":"stop","at":6000000,"drain_ms":100}"#;
        let after = r#"{"k":"end","at":7000000,"session":"s2"}"#;
        let text = format!(
            "{}\n{END}\n{stop}\n{after}\n{}\n{END}\n",
            header(1, 0),
            header(1, 60_000_000)
        );
        let reading = read_from(text.as_bytes(), "rec").unwrap();
        assert_eq!(reading.records.len(), 4);
        assert_eq!(
            reading.first_run().len(),
            3,
            "what the stopping process still wrote, not the next process"
        );
        // No stop: all of it.
        let text = format!("{}\n{END}\n{}\n{END}\n", header(1, 0), header(1, 1));
        let reading = read_from(text.as_bytes(), "rec").unwrap();
        assert_eq!(reading.first_run().len(), 2);
        // A stop in the last segment: to the end.
        let text = format!("{}\n{END}\n{stop}\n{after}\n", header(1, 0));
        let reading = read_from(text.as_bytes(), "rec").unwrap();
        assert_eq!(reading.first_run().len(), 3);
    }

    #[test]
    fn a_damaged_header_of_this_version_is_not_called_a_later_one() {
        let broken = r#"{"k":"recording","version":1,"inflight":"x"}"#;
        let text = format!("{}\n{END}\n{broken}\n", header(1, 0));
        let damage = read_from(text.as_bytes(), "rec").unwrap().damage.unwrap();
        assert!(!damage.why.contains("later"), "{}", damage.why);
        // The first line of this version, broken: not a readable recording.
        let error = read_from(format!("{broken}\n").as_bytes(), "rec").unwrap_err();
        assert!(error.contains("not a readable recording"), "{error}");
        // Of the next version: named.
        let next = broken.replace(
            "\"version\":1",
            &format!("\"version\":{}", FORMAT_VERSION + 1),
        );
        let error = read_from(format!("{next}\n").as_bytes(), "rec").unwrap_err();
        assert!(error.contains("format version 2"), "{error}");
    }

    #[test]
    fn what_is_not_a_recording_of_this_version_is_refused() {
        let newer = format!("{}\n", header(2, 0));
        let error = read_from(newer.as_bytes(), "rec").unwrap_err();
        assert!(error.contains("format version 2"), "{error}");
        // Fields of a later version this build does not know: still named.
        let odd = "{\"k\":\"recording\",\"version\":3,\"shape\":\"new\"}\n";
        let error = read_from(odd.as_bytes(), "rec").unwrap_err();
        assert!(error.contains("format version 3"), "{error}");
        let error = read_from(&b""[..], "rec").unwrap_err();
        assert!(error.contains("empty"), "{error}");
        let error = read_from(format!("{END}\n").as_bytes(), "rec").unwrap_err();
        assert!(
            error.contains("does not start with a recording's header"),
            "{error}"
        );
    }
}
