//! The final transcripts one session holds, packed for memory.
//!
//! A store of ten thousand sessions holds hundreds of thousands of lines,
//! so a line's overhead, not its text, is what a lean store saves: a
//! [`HeldLine`] keeps its speaker and text in one allocation (a
//! `StoredTranscript` made two, and took 96 bytes beside them), its times
//! as plain numbers, and is 48 bytes. [`Lines`] grows by a quarter at a
//! time instead of doubling, so a session's queue is never half empty.
//!
//! Views and the database still see [`StoredTranscript`]s: a line is
//! unpacked when it is read out, which is rare beside taking lines in.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::StoredTranscript;

/// Longest speaker name held, in bytes (feeds cut theirs to 64 already).
const MAX_SPEAKER_BYTES: usize = u8::MAX as usize;

/// The bits of [`HeldLine::received`] that hold the microseconds since the
/// Unix epoch: 56 of them reach the year 3253. The byte above them is the
/// speaker's length.
const MICROS_BITS: u32 = 56;
const MICROS_MASK: u64 = (1 << MICROS_BITS) - 1;

/// One final transcript as the store holds it.
#[derive(Debug)]
pub(super) struct HeldLine {
    pub generation: u64,
    /// Its place in the order of arrival across all sessions.
    pub arrival: u64,
    /// When it was received, in microseconds since the Unix epoch (the
    /// low [`MICROS_BITS`]), and how many bytes of `said` are the
    /// speaker's name (the top byte; 0: no speaker). One word, so a line
    /// is 48 bytes, not 56.
    received: u64,
    /// Seconds from the session's start; NaN when the feed gave none.
    start: f64,
    /// The speaker's name, then the text, in one allocation.
    said: Box<str>,
}

impl HeldLine {
    pub fn new(
        generation: u64,
        arrival: u64,
        speaker: Option<&str>,
        text: String,
        start: Option<f64>,
        received_at: SystemTime,
    ) -> Self {
        let speaker = speaker.map_or("", |s| cut(s, MAX_SPEAKER_BYTES));
        let said = if speaker.is_empty() {
            text.into_boxed_str()
        } else {
            let mut both = String::with_capacity(speaker.len() + text.len());
            both.push_str(speaker);
            both.push_str(&text);
            both.into_boxed_str()
        };
        let received_us = received_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .min(MICROS_MASK);
        // `cut` keeps the length within a byte's range.
        let speaker_len = speaker.len() as u64;
        Self {
            generation,
            arrival,
            received: received_us | speaker_len << MICROS_BITS,
            start: start.filter(|s| s.is_finite()).unwrap_or(f64::NAN),
            said,
        }
    }

    fn speaker_len(&self) -> usize {
        (self.received >> MICROS_BITS) as usize
    }

    pub fn speaker(&self) -> Option<&str> {
        let speaker = &self.said[..self.speaker_len()];
        (!speaker.is_empty()).then_some(speaker)
    }

    pub fn text(&self) -> &str {
        &self.said[self.speaker_len()..]
    }

    pub fn start(&self) -> Option<f64> {
        (!self.start.is_nan()).then_some(self.start)
    }

    /// When it was received, in microseconds since the Unix epoch.
    pub fn received_us(&self) -> u64 {
        self.received & MICROS_MASK
    }

    pub fn received_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(self.received_us())
    }

    /// What the line takes of a prompt window, in characters.
    pub fn prompt_chars(&self) -> usize {
        crate::llm::prompts::line_chars(self.speaker(), self.text())
    }

    /// The line unpacked, as views and the database see it.
    pub fn to_stored(&self) -> StoredTranscript {
        StoredTranscript {
            generation: self.generation,
            speaker: self.speaker().map(str::to_string),
            text: self.text().to_string(),
            start: self.start(),
            received_at: self.received_at(),
            arrival: self.arrival,
        }
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A session's held lines, oldest first.
#[derive(Debug, Default)]
pub(super) struct Lines {
    queue: VecDeque<HeldLine>,
    /// The prompt characters of every line held (see `prompts::line_chars`),
    /// once [`Lines::count_chars`] asked for them (runs that re-read the
    /// newest window need them; counting costs every line taken in).
    chars: Option<usize>,
}

impl Lines {
    /// Adds the newest line, growing the room by a quarter (at least four
    /// lines) when it is full rather than doubling it.
    pub fn push(&mut self, line: HeldLine) {
        let len = self.queue.len();
        if len == self.queue.capacity() {
            self.queue.reserve_exact((len / 4).max(4));
        }
        if let Some(chars) = &mut self.chars {
            *chars += line.prompt_chars();
        }
        self.queue.push_back(line);
    }

    pub fn oldest(&self) -> Option<&HeldLine> {
        self.queue.front()
    }

    /// Drops the oldest line; the room goes too once none is left (with a
    /// database most sessions hold no line most of the time).
    pub fn drop_oldest(&mut self) {
        if let (Some(line), Some(chars)) = (self.queue.pop_front(), &mut self.chars) {
            *chars -= line.prompt_chars();
        }
        if self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
    }

    /// Counts the prompt characters held from now on (see [`Lines::chars`]).
    pub fn count_chars(&mut self) {
        if self.chars.is_none() {
            self.chars = Some(self.queue.iter().map(HeldLine::prompt_chars).sum());
        }
    }

    /// The prompt characters of every line held: a run that reads the
    /// newest lines up to a window reaches the oldest while they fit. 0
    /// until [`Lines::count_chars`].
    pub fn chars(&self) -> usize {
        self.chars.unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &HeldLine> + ExactSizeIterator {
        self.queue.iter()
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }
}

impl FromIterator<HeldLine> for Lines {
    fn from_iter<I: IntoIterator<Item = HeldLine>>(lines: I) -> Self {
        let mut queue: VecDeque<HeldLine> = lines.into_iter().collect();
        queue.shrink_to_fit();
        Self { queue, chars: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(speaker: Option<&str>, text: &str, start: Option<f64>) -> HeldLine {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_765_000_000_123_456);
        HeldLine::new(7, 42, speaker, text.to_string(), start, at)
    }

    #[test]
    fn a_line_reads_back_as_it_was_given() {
        let held = line(Some("Ana"), "We ship on Friday.", Some(12.5));
        assert_eq!(held.speaker(), Some("Ana"));
        assert_eq!(held.text(), "We ship on Friday.");
        assert_eq!(held.start(), Some(12.5));
        let stored = held.to_stored();
        assert_eq!(
            stored,
            StoredTranscript {
                generation: 7,
                speaker: Some("Ana".into()),
                text: "We ship on Friday.".into(),
                start: Some(12.5),
                received_at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_765_000_000_123_456),
                arrival: 42,
            }
        );
    }

    #[test]
    fn no_speaker_no_start_and_a_text_that_looks_like_one() {
        let held = line(None, "Ana: hello", None);
        assert_eq!(held.speaker(), None);
        assert_eq!(held.text(), "Ana: hello");
        assert_eq!(held.start(), None);
        let empty = line(Some(""), "hello", Some(f64::INFINITY));
        assert_eq!(empty.speaker(), None, "an empty speaker is none");
        assert_eq!(empty.start(), None, "a start that is not a number is none");
    }

    #[test]
    fn a_long_speaker_is_cut_at_a_character_boundary() {
        let long = "é".repeat(200);
        let held = line(Some(&long), "text", None);
        let speaker = held.speaker().unwrap();
        assert_eq!(
            speaker.len(),
            254,
            "127 two-byte characters fit in 255 bytes"
        );
        assert!(long.starts_with(speaker));
        assert_eq!(held.text(), "text");
        assert_eq!(
            held.received_at(),
            SystemTime::UNIX_EPOCH + Duration::from_micros(1_765_000_000_123_456),
            "the speaker's length leaves the time as it was"
        );
    }

    #[test]
    fn a_time_past_what_a_line_holds_is_held_as_its_last_microsecond() {
        let far = SystemTime::UNIX_EPOCH + Duration::from_micros(u64::MAX);
        let held = HeldLine::new(1, 1, Some("Ana"), "hi".into(), None, far);
        assert_eq!(held.speaker(), Some("Ana"));
        assert_eq!(
            held.received_at(),
            SystemTime::UNIX_EPOCH + Duration::from_micros(MICROS_MASK)
        );
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        let held = HeldLine::new(1, 1, Some("Ana"), "hi".into(), None, before);
        assert_eq!(held.received_at(), SystemTime::UNIX_EPOCH);
        assert_eq!(held.text(), "hi");
    }

    #[test]
    fn a_line_is_48_bytes_and_the_queue_grows_by_a_quarter() {
        assert_eq!(std::mem::size_of::<HeldLine>(), 48);
        let mut lines = Lines::default();
        for i in 0..20 {
            lines.push(line(None, &format!("line {i}"), None));
        }
        assert_eq!(lines.len(), 20);
        assert_eq!(lines.capacity(), 20, "20 lines take room for 20, not 32");
        lines.push(line(None, "line 20", None));
        assert_eq!(lines.capacity(), 25, "full, it grows by a quarter");
        assert_eq!(lines.oldest().map(HeldLine::text), Some("line 0"));
        lines.drop_oldest();
        assert_eq!(lines.iter().next().map(HeldLine::text), Some("line 1"));
        while lines.len() > 0 {
            lines.drop_oldest();
        }
        assert_eq!(lines.capacity(), 0, "an empty queue holds no room");
        lines.push(line(None, "again", None));
        assert_eq!(lines.capacity(), 4, "then grows from four");
    }
}
