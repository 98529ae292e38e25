//! The prompts, in one place, and the bounds on what a prompt may carry.
//!
//! Every template can be replaced from the config file's `[prompts]` table
//! (see `docs/llm.md`). Templates use `{transcript}`, `{previous_summary}`,
//! `{previous_mind_map}`, and, in the repair prompt, `{answer}` and `{why}`.
//!
//! A prompt carries every utterance it is given: the store decides what a
//! run reads, at most [`MAX_TRANSCRIPT_CHARS`] of it (the oldest lines not
//! yet covered first, so a backlog is caught up in order, step by step).

use serde::Deserialize;

use super::{LlmRequest, Utterance};
use crate::model::Operation;
use crate::ops::OutputKind;

/// The prompt window: most characters of transcript one prompt carries.
pub const MAX_TRANSCRIPT_CHARS: usize = 24_000;
/// Most characters of previous summary an incremental prompt carries.
pub const MAX_PREVIOUS_CHARS: usize = 4_000;

/// Prompt templates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prompts {
    pub summary_system: String,
    /// First summary, or `--summary-mode full`.
    pub summary_full: String,
    /// Later summaries: the previous one plus what was said since.
    pub summary_incremental: String,
    pub mind_map_system: String,
    /// First mind map, or `--summary-mode full`.
    pub mind_map: String,
    /// Later mind maps: the previous one plus what was said since.
    pub mind_map_incremental: String,
    /// The one retry after an answer that could not be used.
    pub repair: String,
}

impl Default for Prompts {
    fn default() -> Self {
        Self {
            summary_system: "You summarise live meeting transcripts for the people in the meeting. \
Write a short summary: the topics, the decisions, the open questions and who owns which action. \
Use plain sentences or short bullet points. Never invent facts that are not in the transcript."
                .into(),
            summary_full: "Transcript so far:\n\n{transcript}\n\nWrite the summary.".into(),
            summary_incremental: "Summary so far:\n\n{previous_summary}\n\nWhat was said since:\n\n{transcript}\n\n\
Write the updated summary of the whole meeting."
                .into(),
            mind_map_system: "You turn meeting transcripts into mind maps. Answer with JSON only, in the form \
{\"root\": {\"label\": \"main topic\", \"children\": [{\"label\": \"subtopic\", \"children\": []}]}}. \
Use short labels, at most 4 levels and at most 8 children per node."
                .into(),
            mind_map: "Transcript:\n\n{transcript}\n\nAnswer with the mind map JSON.".into(),
            mind_map_incremental: "Mind map so far, as an outline:\n\n{previous_mind_map}\n\nWhat was said since:\n\n{transcript}\n\n\
Answer with the updated mind map JSON of the whole meeting."
                .into(),
            repair: "That answer could not be used: {why}. Answer again, with only what was asked for."
                .into(),
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

/// One utterance as a prompt line: `speaker: text`.
pub fn line(u: &Utterance) -> String {
    match u.speaker() {
        Some(s) => format!("{s}: {}", u.text()),
        None => u.text().to_string(),
    }
}

/// Characters a line takes in a prompt (`speaker: text` and its newline).
pub fn line_chars(speaker: Option<&str>, text: &str) -> usize {
    speaker.map_or(0, |s| s.chars().count() + 2) + text.chars().count() + 1
}

/// The transcript as prompt text: `speaker: text` lines, all of them.
pub fn transcript_text(utterances: &[Utterance]) -> String {
    utterances.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// A previous result cut to at most `max_chars`, for a small context
/// window, as its output kind cuts it: text keeps its end (the newest
/// part, as the prompt already does past [`MAX_PREVIOUS_CHARS`]), a tree's
/// outline and JSON their start.
pub fn cut_previous(op: Operation, text: String, max_chars: usize) -> String {
    crate::ops::registry()
        .output(op)
        .cut_previous(text, max_chars)
}

/// The templates a prompt of one operation is built from.
struct Templates<'a> {
    system: &'a str,
    full: &'a str,
    incremental: &'a str,
    kind: OutputKind,
}

impl Prompts {
    /// The templates of `op`: its definition's own, or, for a built-in
    /// operation, this table's for its output kind.
    fn templates(&self, op: Operation) -> Templates<'_> {
        let def = crate::ops::registry().def(op);
        let kind = def.map_or(OutputKind::Text, |d| d.output);
        if let Some(own) = def.and_then(|d| d.prompts.as_ref()) {
            return Templates {
                system: &own.system,
                full: &own.full,
                incremental: &own.incremental,
                kind,
            };
        }
        match kind {
            OutputKind::Tree => Templates {
                system: &self.mind_map_system,
                full: &self.mind_map,
                incremental: &self.mind_map_incremental,
                kind,
            },
            OutputKind::Text | OutputKind::Json => Templates {
                system: &self.summary_system,
                full: &self.summary_full,
                incremental: &self.summary_incremental,
                kind,
            },
        }
    }

    /// Characters a prompt of `op` takes besides its previous result and
    /// transcript: the system prompt and the longer of its templates.
    pub fn fixed_chars(&self, op: Operation) -> usize {
        let t = self.templates(op);
        t.system.chars().count() + t.full.chars().count().max(t.incremental.chars().count())
    }

    /// The chat messages for a request: system, user, and for a repair
    /// the answer that could not be used and the repair prompt.
    pub fn messages(&self, request: &LlmRequest) -> Vec<ChatMessage> {
        let transcript = transcript_text(&request.utterances);
        let t = self.templates(request.op);
        let user = match request.previous.as_deref() {
            Some(previous) => {
                let previous = t.kind.previous_in_prompt(previous, MAX_PREVIOUS_CHARS);
                fill_previous(t.incremental, previous).replace("{transcript}", &transcript)
            }
            None => t.full.replace("{transcript}", &transcript),
        };
        let system = t.system.to_string();
        let mut messages = vec![
            ChatMessage {
                role: "system",
                content: system,
            },
            ChatMessage {
                role: "user",
                content: user,
            },
        ];
        if let Some(repair) = &request.repair {
            messages.push(ChatMessage {
                role: "assistant",
                content: repair.answer.clone(),
            });
            messages.push(ChatMessage {
                role: "user",
                content: self
                    .repair
                    .replace("{why}", &repair.why)
                    .replace("{answer}", &repair.answer),
            });
        }
        messages
    }
}

/// Puts the previous result in an incremental template: `{previous}`, or
/// the built-in templates' `{previous_summary}` and `{previous_mind_map}`.
fn fill_previous(template: &str, previous: &str) -> String {
    ["{previous}", "{previous_summary}", "{previous_mind_map}"]
        .iter()
        .fold(template.to_string(), |t, p| t.replace(p, previous))
}

/// Placeholders an incremental template may carry the previous result in.
pub const PREVIOUS_PLACEHOLDERS: [&str; 3] =
    ["{previous}", "{previous_summary}", "{previous_mind_map}"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SessionId;

    fn request(op: Operation, previous: Option<&str>, n: usize) -> LlmRequest {
        let mut request = LlmRequest::new(
            SessionId::parse("s").unwrap(),
            op,
            (0..n)
                .map(|i| Utterance::new(Some("ana"), &format!("line {i} {}", "x".repeat(100))))
                .collect(),
        );
        request.previous = previous.map(str::to_string);
        request
    }

    #[test]
    fn incremental_prompts_carry_the_previous_summary() {
        let prompts = Prompts::default();
        let messages = prompts.messages(&request(Operation::SUMMARY, Some("We chose Tuesday."), 2));
        assert_eq!(messages[0].role, "system");
        assert!(messages[1].content.contains("We chose Tuesday."));
        assert!(messages[1].content.contains("ana: line 1"));
        let full = prompts.messages(&request(Operation::SUMMARY, None, 2));
        assert!(full[1].content.starts_with("Transcript so far"));
    }

    #[test]
    fn prompts_carry_every_line_they_are_given_with_its_length_known() {
        let request = request(Operation::MIND_MAP, None, 50);
        let messages = Prompts::default().messages(&request);
        let user = &messages[1].content;
        assert!(user.contains("ana: line 0 ") && user.contains("ana: line 49 "));
        let counted: usize = request
            .utterances
            .iter()
            .map(|u| line_chars(u.speaker(), u.text()))
            .sum();
        let transcript = transcript_text(&request.utterances);
        assert_eq!(
            counted,
            transcript.chars().count() + 1,
            "one newline per line"
        );
    }

    #[test]
    fn incremental_mind_maps_carry_the_previous_map() {
        let prompts = Prompts::default();
        let map = r#"{"root":{"label":"Launch","children":[]}}"#;
        let messages = prompts.messages(&request(Operation::MIND_MAP, Some(map), 1));
        assert!(messages[1].content.starts_with("Mind map so far"));
        assert!(messages[1].content.contains(map));
        let first = prompts.messages(&request(Operation::MIND_MAP, None, 1));
        assert!(first[1].content.starts_with("Transcript:"));
    }

    #[test]
    fn a_repair_shows_the_answer_and_says_why() {
        let mut request = request(Operation::MIND_MAP, None, 1);
        request.repair = Some(crate::llm::Repair {
            answer: "{\"root\": ".into(),
            why: "the JSON ends early".into(),
        });
        let messages = Prompts::default().messages(&request);
        let roles: Vec<&str> = messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(messages[2].content, "{\"root\": ");
        assert!(messages[3].content.contains("the JSON ends early"));
    }

    #[test]
    fn templates_come_from_toml() {
        let prompts: Prompts = toml::from_str("mind_map = \"Map this: {transcript}\"").unwrap();
        assert_eq!(prompts.mind_map, "Map this: {transcript}");
        assert_eq!(prompts.summary_system, Prompts::default().summary_system);
        assert!(toml::from_str::<Prompts>("summry = \"typo\"").is_err());
    }
}
