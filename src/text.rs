//! Making outside text safe to store and to show in a terminal.
//!
//! Transcripts, labels and errors come from feeds and models we do not
//! control. Before any of it is stored or drawn, escape sequences and control
//! characters are removed (a transcript must never move the cursor or change
//! the terminal's title), and long texts are cut at a character boundary.

use std::borrow::Cow;

/// Removes ANSI escape sequences and control characters; line breaks and tabs
/// become spaces.
pub fn strip_controls(text: &str) -> Cow<'_, str> {
    clean(text, false)
}

/// Like [`strip_controls`], but keeps line breaks (`\n`) for texts shown on
/// several lines, such as summaries.
pub fn strip_controls_keep_lines(text: &str) -> Cow<'_, str> {
    clean(text, true)
}

fn clean(text: &str, keep_lines: bool) -> Cow<'_, str> {
    let needs_work = |c: char| c.is_control() && !(keep_lines && c == '\n');
    if !text.chars().any(needs_work) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            // A lone CSI introducer (C1), same shape as ESC [.
            '\u{9b}' => skip_until_final(&mut chars),
            '\n' if keep_lines => out.push('\n'),
            '\r' if keep_lines => {}
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.peek() {
        Some('[') => {
            chars.next();
            skip_until_final(chars);
        }
        // OSC, DCS, SOS, PM, APC: strings ended by BEL or ESC \.
        Some(']' | 'P' | 'X' | '^' | '_') => {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '\u{7}' {
                    break;
                }
                if c == '\u{1b}' {
                    if chars.peek() == Some(&'\\') {
                        chars.next();
                    }
                    break;
                }
            }
        }
        // Two-character escapes (ESC c, ESC 7, ...).
        Some(_) => {
            chars.next();
        }
        None => {}
    }
}

fn skip_until_final(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            break;
        }
    }
}

/// Cuts `text` to at most `max_bytes` bytes at a character boundary.
/// Returns whether anything was cut.
pub fn cut_to(text: &mut String, max_bytes: usize) -> bool {
    if text.len() <= max_bytes {
        return false;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// 1, 10, 100, …: the counts at which a repeated warning is logged again.
pub fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_ten() {
        for n in [1, 10, 100, 1000, 1_000_000] {
            assert!(is_power_of_ten(n), "{n}");
        }
        for n in [0, 2, 11, 20, 101, 110, 999] {
            assert!(!is_power_of_ten(n), "{n}");
        }
    }

    #[test]
    fn escape_sequences_and_controls_are_removed() {
        assert_eq!(strip_controls("plain"), "plain");
        assert_eq!(
            strip_controls("a\u{1b}[2J\u{1b}[1;31mred\u{1b}[0m b"),
            "ared b"
        );
        assert_eq!(strip_controls("x\u{1b}]0;owned\u{7}y"), "xy");
        assert_eq!(strip_controls("x\u{1b}]0;owned\u{1b}\\y"), "xy");
        assert_eq!(
            strip_controls("line\nbreak\tand\u{7}bell\u{0}"),
            "line break andbell"
        );
        assert_eq!(strip_controls("c1\u{9b}31mcsi"), "c1csi");
        assert_eq!(strip_controls("tail\u{1b}"), "tail");
        assert_eq!(strip_controls_keep_lines("a\r\nb\u{1b}[1mc\td"), "a\nbc d");
    }

    #[test]
    fn cutting_respects_characters() {
        let mut text = "héllo".to_string();
        assert!(cut_to(&mut text, 2));
        assert_eq!(text, "h");
        let mut short = "ok".to_string();
        assert!(!cut_to(&mut short, 10));
    }
}
