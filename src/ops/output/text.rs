//! `text`: prose, kept as the model wrote it, without control characters.

/// Any non-empty answer is a text result.
pub fn read(answer: &str) -> Result<String, String> {
    if answer.trim().is_empty() {
        return Err("the answer was empty".into());
    }
    Ok(crate::text::strip_controls_keep_lines(answer).into_owned())
}

/// Keeps the end: the newest part of a rolling text.
pub fn cut(text: String, max_chars: usize) -> String {
    let count = text.chars().count();
    if count <= max_chars {
        return text;
    }
    let skip = text
        .char_indices()
        .nth(count - max_chars)
        .map_or(0, |(i, _)| i);
    text[skip..].to_string()
}

/// What a text operation is asked to write.
pub fn instructions(label: &str) -> String {
    format!(
        "Write the meeting's {}: short plain sentences or bullet points.",
        label.to_lowercase()
    )
}

/// Prose shown as its lines.
pub fn shown(text: &str) -> Vec<super::ShownLine> {
    text.lines()
        .map(|line| vec![(super::Role::Plain, line.to_string())])
        .collect()
}

/// The last `n` characters of `text`.
pub fn last_chars(text: &str, n: usize) -> &str {
    let count = text.chars().count();
    if count <= n {
        return text;
    }
    let skip = text.char_indices().nth(count - n).map_or(0, |(i, _)| i);
    &text[skip..]
}
