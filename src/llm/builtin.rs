//! The builtin backend: no model, no network, deterministic answers.
//!
//! Summaries are extractive: the sentences that carry the session's most
//! frequent content words, in their original order. Mind maps are keyword
//! trees: the top keywords under the session's main topic, each with the
//! words that occur most often beside it. Both are incremental, as a model's
//! would be: the previous summary's points and the previous map's words are
//! merged with the new lines, so nothing said earlier is lost because new
//! lines came. Usage is estimated at about four characters a token. With a
//! simulated latency the backend streams its answer slowly, like a large
//! model, so the scheduling can be watched; it says it is simulated in
//! every view.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    Backend, BackendInfo, BoxFuture, LatencyRange, LlmError, LlmRequest, LlmResponse, Progress,
    Usage, Utterance,
};
use crate::model::{MindMap, MindMapNode};
use crate::ops::OutputKind;

/// How often a simulated answer reports streamed tokens.
const PROGRESS_STEP: Duration = Duration::from_millis(100);

pub struct BuiltinBackend {
    latency: LatencyRange,
    rng: Mutex<fastrand::Rng>,
}

impl BuiltinBackend {
    pub fn new(latency: LatencyRange) -> Self {
        Self {
            latency,
            rng: Mutex::new(fastrand::Rng::with_seed(0x1f1e_2024)),
        }
    }

    fn draw_latency(&self) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        self.latency.sample(&mut rng)
    }
}

impl Backend for BuiltinBackend {
    fn info(&self) -> BackendInfo {
        let model = if self.latency == LatencyRange::ZERO {
            "extractive".into()
        } else {
            format!("extractive, simulated {}", self.latency)
        };
        BackendInfo::simulated("builtin", &model)
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        let latency = self.draw_latency();
        Box::pin(async move {
            let previous = request.previous.as_deref();
            let def = crate::ops::registry()
                .def(request.op)
                .ok_or_else(|| LlmError::other(format!("{} is not defined", request.op)))?;
            let text = OutputKind::stand_in(def, &request.utterances, previous);
            let usage = Usage::tokens(
                Usage::estimate(&super::prompts::transcript_text(&request.utterances))
                    + previous.map_or(0, Usage::estimate),
                Usage::estimate(&text).max(1),
            );
            stream_slowly(latency, usage.completion_tokens, progress).await;
            Ok(LlmResponse {
                text,
                model: "builtin".into(),
                usage,
                truncated: false,
            })
        })
    }
}

/// Sleeps `latency` in steps, adding tokens as a streaming model would.
async fn stream_slowly(latency: Duration, tokens: u64, progress: &Progress) {
    if latency.is_zero() {
        progress.add_tokens(tokens);
        return;
    }
    let steps = (latency.as_millis() / PROGRESS_STEP.as_millis()).max(1) as u64;
    let step = latency / steps as u32;
    let mut sent = 0;
    for i in 1..=steps {
        tokio::time::sleep(step).await;
        let due = tokens * i / steps;
        progress.add_tokens(due - sent);
        sent = due;
    }
}

const STOPWORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "but", "by", "can", "could", "did", "do", "does",
    "doing", "done", "down", "each", "even", "for", "from", "get", "got", "had", "has", "have",
    "having", "he", "her", "here", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "it's", "i'm", "i'll", "i've", "just", "know", "let", "let's", "like", "make", "me", "more",
    "most", "my", "need", "no", "not", "now", "of", "off", "ok", "okay", "on", "one", "only", "or",
    "our", "out", "over", "really", "right", "said", "say", "see", "she", "should", "so", "some",
    "still", "than", "that", "that's", "the", "their", "them", "then", "there", "there's", "these",
    "they", "they're", "thing", "things", "think", "this", "those", "through", "to", "too", "two",
    "up", "us", "very", "want", "was", "we", "we'll", "we're", "we've", "well", "were", "what",
    "when", "where", "which", "while", "who", "why", "will", "with", "would", "yeah", "yes", "you",
    "you're", "your", "don't", "can't", "won't", "going", "yet", "next", "last", "way", "lot",
    "good", "great", "sure", "maybe", "much", "many", "every", "first", "back", "take", "put",
    "go", "come", "look", "same", "other", "it'll", "doesn't", "isn't", "didn't",
];

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| w.chars().count() > 2 && !STOPWORDS.contains(&w.as_str()))
}

fn frequencies(utterances: &[Utterance]) -> HashMap<String, usize> {
    let mut freq = HashMap::new();
    for u in utterances {
        for w in words(u.text()) {
            *freq.entry(w).or_insert(0) += 1;
        }
    }
    freq
}

/// Words ranked by frequency; ties go to the longer word (usually the more
/// specific one), then alphabetically, so the order is deterministic.
fn ranked(freq: &HashMap<String, usize>) -> Vec<(&str, usize)> {
    let mut ranked: Vec<(&str, usize)> = freq.iter().map(|(w, n)| (w.as_str(), *n)).collect();
    ranked.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then(b.0.chars().count().cmp(&a.0.chars().count()))
            .then(a.0.cmp(b.0))
    });
    ranked
}

/// Most points a summary keeps.
pub const MAX_POINTS: usize = 8;

/// The points (`- speaker: text` lines) of a summary made here.
fn points_of(summary: &str) -> Vec<Utterance> {
    summary
        .lines()
        .filter_map(|line| line.strip_prefix("- "))
        .map(|point| match point.split_once(": ") {
            Some((speaker, text)) if speaker.split_whitespace().count() <= 3 => {
                Utterance::new(Some(speaker), text)
            }
            _ => Utterance::new(None, point),
        })
        .collect()
}

/// Indices of the `keep` utterances that carry the most frequent words.
fn most_representative(
    utterances: &[Utterance],
    freq: &HashMap<String, usize>,
    keep: usize,
) -> Vec<usize> {
    let mut scored: Vec<(usize, f64)> = utterances
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let ws: Vec<String> = words(u.text()).collect();
            let score: usize = ws.iter().map(|w| freq.get(w).copied().unwrap_or(0)).sum();
            (i, score as f64 / ((ws.len() + 1) as f64).sqrt())
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut chosen: Vec<usize> = scored.iter().take(keep).map(|(i, _)| *i).collect();
    chosen.sort_unstable();
    chosen
}

/// Picks the most representative utterances, kept in their spoken order,
/// and merges them with the points of the `previous` summary: at most
/// [`MAX_POINTS`] in all, the weakest dropped, earlier points first.
pub fn summarise(utterances: &[Utterance], previous: Option<&str>) -> String {
    if utterances.is_empty() {
        return previous.unwrap_or("Nothing has been said yet.").to_string();
    }
    let earlier = previous.map(points_of).unwrap_or_default();
    let freq = frequencies(&[earlier.as_slice(), utterances].concat());
    let keep = (utterances.len() / 8).clamp(1, 5);
    let mut points = earlier.clone();
    points.extend(
        most_representative(utterances, &freq, keep)
            .into_iter()
            .map(|i| utterances[i].clone()),
    );
    let chosen = most_representative(&points, &freq, MAX_POINTS);
    let topics: Vec<&str> = ranked(&freq).into_iter().take(5).map(|(w, _)| w).collect();
    let mut out = String::new();
    if !topics.is_empty() {
        out.push_str("Topics: ");
        out.push_str(&topics.join(", "));
        out.push_str(".\n");
    }
    for i in chosen {
        let u = &points[i];
        out.push_str("- ");
        if let Some(speaker) = u.speaker() {
            out.push_str(speaker);
            out.push_str(": ");
        }
        out.push_str(u.text().trim());
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// The mind map of `utterances` merged with the `previous` map (an outline
/// or JSON):
/// each branch counts as a line said with its words, and the main topic as
/// said once per branch and once more, so the map's topics stay unless the
/// new lines outweigh them.
pub fn mind_map_merged(utterances: &[Utterance], previous: Option<&str>) -> MindMap {
    let Some(previous) = previous.and_then(|text| {
        super::mind_map::parse_outline(text).or_else(|| super::mind_map::parse_lenient(text).ok())
    }) else {
        return mind_map(utterances);
    };
    let root = &previous.root;
    let topic = Utterance::new(
        None,
        &vec![root.label.as_str(); root.children.len() + 1].join(" "),
    );
    let mut said: Vec<Utterance> = std::iter::once(topic)
        .chain(root.children.iter().map(|node| {
            let words: Vec<&str> = std::iter::once(node.label.as_str())
                .chain(node.children.iter().map(|c| c.label.as_str()))
                .collect();
            Utterance::new(None, &words.join(" "))
        }))
        .collect();
    said.extend_from_slice(utterances);
    mind_map(&said)
}

/// Builds a two-level keyword tree under the session's main topic.
pub fn mind_map(utterances: &[Utterance]) -> MindMap {
    let freq = frequencies(utterances);
    let ranked = ranked(&freq);
    let Some((topic, _)) = ranked.first() else {
        return MindMap {
            root: MindMapNode::leaf("(nothing said yet)"),
        };
    };
    let sentences: Vec<HashSet<String>> = utterances
        .iter()
        .map(|u| words(u.text()).collect())
        .collect();
    let mut used: HashSet<&str> = HashSet::from([*topic]);
    let branches: Vec<&str> = ranked.iter().skip(1).take(5).map(|(w, _)| *w).collect();
    used.extend(branches.iter().copied());
    let mut placed: HashSet<String> = HashSet::new();
    let children = branches
        .into_iter()
        .map(|branch| {
            let mut near: HashMap<&str, usize> = HashMap::new();
            for sentence in sentences.iter().filter(|s| s.contains(branch)) {
                for w in sentence {
                    if !used.contains(w.as_str()) {
                        *near.entry(w.as_str()).or_insert(0) += 1;
                    }
                }
            }
            let mut near: Vec<(&str, usize)> = near.into_iter().collect();
            near.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            // Each word appears once in the tree, under the first branch it fits.
            let children = near
                .into_iter()
                .filter(|(w, _)| placed.insert(w.to_string()))
                .take(3)
                .map(|(w, _)| MindMapNode::leaf(w))
                .collect();
            MindMapNode {
                label: branch.to_string(),
                children,
            }
        })
        .collect();
    MindMap {
        root: MindMapNode {
            label: topic.to_string(),
            children,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(lines: &[(&str, &str)]) -> Vec<Utterance> {
        lines
            .iter()
            .map(|(s, t)| Utterance::new(Some(s), t))
            .collect()
    }

    fn meeting() -> Vec<Utterance> {
        said(&[
            ("ana", "The release is blocked on the database migration."),
            ("bo", "Can we run the migration on Friday night?"),
            ("ana", "Friday works if the release notes are ready."),
            ("cy", "I will write the release notes today."),
            ("bo", "Lunch was nice."),
            (
                "cy",
                "The migration needs a rollback plan for the database.",
            ),
            ("ana", "Then the release ships Monday after the migration."),
            ("bo", "Agreed, release Monday."),
        ])
    }

    #[test]
    fn summaries_are_extractive_and_deterministic() {
        let summary = summarise(&meeting(), None);
        assert_eq!(summary, summarise(&meeting(), None));
        assert!(summary.starts_with("Topics: release, migration"));
        assert!(!summary.contains("Lunch"));
        assert!(summary.lines().skip(1).all(|l| l.starts_with("- ")));
    }

    #[test]
    fn mind_maps_are_valid_keyword_trees() {
        let map = mind_map(&meeting());
        assert_eq!(map.root.label, "release");
        assert!(map.root.children.iter().any(|c| c.label == "migration"));
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(super::super::mind_map::parse_lenient(&json).unwrap(), map);
        assert_eq!(mind_map(&[]).root.children.len(), 0);
        let mut labels = Vec::new();
        fn collect(node: &MindMapNode, out: &mut Vec<String>) {
            out.push(node.label.clone());
            node.children.iter().for_each(|c| collect(c, out));
        }
        collect(&map.root, &mut labels);
        let unique: HashSet<&String> = labels.iter().collect();
        assert_eq!(
            unique.len(),
            labels.len(),
            "no word twice in the tree: {labels:?}"
        );
    }

    #[test]
    fn an_incremental_summary_keeps_what_was_said_before() {
        let all = meeting();
        let (first, later) = all.split_at(4);
        let before = summarise(first, None);
        let before_points = points_of(&before);
        assert!(!before_points.is_empty());
        let after = summarise(later, Some(&before));
        for point in &before_points {
            assert!(
                after.contains(point.text()),
                "{:?} lost from {after}",
                point.text()
            );
        }
        assert!(
            points_of(&after).len() > before_points.len(),
            "new points added"
        );
        // Many rounds never grow it past its cap.
        let mut summary = before;
        for _ in 0..20 {
            summary = summarise(later, Some(&summary));
        }
        assert!(points_of(&summary).len() <= MAX_POINTS);
        assert_eq!(summarise(&[], Some("kept")), "kept");
    }

    #[test]
    fn an_incremental_mind_map_keeps_its_topic() {
        let first = mind_map(&meeting());
        let json = serde_json::to_string(&first).unwrap();
        let chat = said(&[("bo", "Lunch was nice, the pasta was nice.")]);
        let merged = mind_map_merged(&chat, Some(&json));
        assert_eq!(
            merged.root.label, "release",
            "one new line does not take over"
        );
        assert_eq!(mind_map_merged(&chat, None).root.label, "nice");
        let outline = super::super::mind_map::to_outline(&first);
        assert_eq!(
            mind_map_merged(&chat, Some(&outline)),
            merged,
            "the engine sends outlines"
        );
        assert_eq!(mind_map_merged(&chat, Some("{garbage")), mind_map(&chat));
    }

    #[tokio::test(start_paused = true)]
    async fn simulated_latency_streams_tokens_and_usage_is_estimated() {
        let backend = BuiltinBackend::new(LatencyRange::fixed(Duration::from_secs(2)));
        let progress = Progress::default();
        let request = LlmRequest::new(
            crate::model::SessionId::parse("s").unwrap(),
            crate::model::Operation::SUMMARY,
            meeting(),
        );
        let started = tokio::time::Instant::now();
        let answer = backend.generate(request, &progress).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(progress.tokens(), answer.usage.completion_tokens);
        let transcript = super::super::prompts::transcript_text(&meeting());
        assert_eq!(answer.usage.prompt_tokens, Usage::estimate(&transcript));
    }
}
