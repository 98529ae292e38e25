//! The prompts, in one place, and the bounds on what a prompt may carry.
//!
//! Every template can be replaced from the config file's `[prompts]` table
//! (see `docs/llm.md`). Templates use `{transcript}` and `{previous_summary}`.

use serde::Deserialize;

use super::{LlmRequest, Utterance};
use crate::model::Operation;

/// Most characters of transcript a prompt carries (the newest are kept).
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
    pub mind_map: String,
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
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

/// The transcript as prompt text: `speaker: text` lines, newest kept.
pub fn transcript_text(utterances: &[Utterance]) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut used = 0;
    for u in utterances.iter().rev() {
        let line = match &u.speaker {
            Some(s) => format!("{s}: {}", u.text),
            None => u.text.clone(),
        };
        used += line.chars().count() + 1;
        if used > MAX_TRANSCRIPT_CHARS && !lines.is_empty() {
            break;
        }
        lines.push(line);
    }
    lines.reverse();
    lines.join("\n")
}

fn last_chars(text: &str, n: usize) -> &str {
    let count = text.chars().count();
    if count <= n {
        return text;
    }
    let skip = text.char_indices().nth(count - n).map_or(0, |(i, _)| i);
    &text[skip..]
}

impl Prompts {
    /// The chat messages for a request.
    pub fn messages(&self, request: &LlmRequest) -> Vec<ChatMessage> {
        let transcript = transcript_text(&request.utterances);
        let (system, user) = match request.op {
            Operation::Summary => {
                let user = match &request.previous_summary {
                    Some(previous) => self
                        .summary_incremental
                        .replace(
                            "{previous_summary}",
                            last_chars(previous, MAX_PREVIOUS_CHARS),
                        )
                        .replace("{transcript}", &transcript),
                    None => self.summary_full.replace("{transcript}", &transcript),
                };
                (&self.summary_system, user)
            }
            Operation::MindMap => (
                &self.mind_map_system,
                self.mind_map.replace("{transcript}", &transcript),
            ),
        };
        vec![
            ChatMessage {
                role: "system",
                content: system.clone(),
            },
            ChatMessage {
                role: "user",
                content: user,
            },
        ]
    }
}

/// The JSON schema of a mind map, for servers that constrain output.
pub fn mind_map_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "root": {"$ref": "#/$defs/node"}
        },
        "required": ["root"],
        "additionalProperties": false,
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                },
                "required": ["label", "children"],
                "additionalProperties": false
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SessionId;

    fn request(op: Operation, previous: Option<&str>, n: usize) -> LlmRequest {
        LlmRequest {
            session: SessionId::parse("s").unwrap(),
            op,
            utterances: (0..n)
                .map(|i| Utterance {
                    speaker: Some("ana".into()),
                    text: format!("line {i} {}", "x".repeat(100)),
                })
                .collect(),
            previous_summary: previous.map(str::to_string),
        }
    }

    #[test]
    fn incremental_prompts_carry_the_previous_summary() {
        let prompts = Prompts::default();
        let messages = prompts.messages(&request(Operation::Summary, Some("We chose Tuesday."), 2));
        assert_eq!(messages[0].role, "system");
        assert!(messages[1].content.contains("We chose Tuesday."));
        assert!(messages[1].content.contains("ana: line 1"));
        let full = prompts.messages(&request(Operation::Summary, None, 2));
        assert!(full[1].content.starts_with("Transcript so far"));
    }

    #[test]
    fn prompts_are_bounded_and_keep_the_newest_lines() {
        let messages = Prompts::default().messages(&request(Operation::MindMap, None, 2000));
        let user = &messages[1].content;
        assert!(user.chars().count() < MAX_TRANSCRIPT_CHARS + 200);
        assert!(user.contains("line 1999"));
        assert!(!user.contains("line 0 "));
    }

    #[test]
    fn templates_come_from_toml() {
        let prompts: Prompts = toml::from_str("mind_map = \"Map this: {transcript}\"").unwrap();
        assert_eq!(prompts.mind_map, "Map this: {transcript}");
        assert_eq!(prompts.summary_system, Prompts::default().summary_system);
        assert!(toml::from_str::<Prompts>("summry = \"typo\"").is_err());
    }
}
