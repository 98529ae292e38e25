//! A failure's cause in a few words, for places with no room for the whole
//! message: a table cell (`✗ 500 response_format`), the one line that says
//! many sessions fail the same way.
//!
//! It reads the messages the backends and the runner write: `… answered
//! 500 Internal Server Error: {body}`, `cannot reach …`, `no answer within
//! …`, `… the answer began: …`.

/// The cause of a failure, shortest words first: `timed out`,
/// `unreachable`, `500 response_format`, `404 model`, `unreadable answer`.
/// Made for screens: no control character of the message gets through.
pub fn short_cause(message: &str) -> String {
    let message = crate::text::strip_controls(message);
    let message = message.as_ref();
    if message.starts_with("no answer within") || message.contains(" did not answer in time") {
        return "timed out".into();
    }
    if message.starts_with("cannot reach") {
        return "unreachable".into();
    }
    if message.contains("closed the connection before answering")
        || message.starts_with("the answer broke off")
    {
        return "dropped".into();
    }
    if message.starts_with("stopped by the operator") {
        return "cancelled".into();
    }
    if let Some((_, rest)) = message.split_once(" answered ") {
        let status: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if status.len() == 3 {
            let body = rest.split_once(':').map(|(_, b)| b).unwrap_or("");
            return match telling_word(body) {
                Some(word) => format!("{status} {word}"),
                None => status,
            };
        }
    }
    if message.contains("the answer began") || message.contains("empty answer") {
        return "unreadable answer".into();
    }
    message
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Request fields a server may refuse, by name (OpenAI-compatible servers
/// and Ollama).
const PARAMETERS: &[&str] = &[
    "response_format",
    "json_schema",
    "stream_options",
    "max_tokens",
    "num_predict",
    "temperature",
    "messages",
    "format",
];

/// The word of a server's error body that names what it refused: a request
/// field (`response_format`), else `model` when the body speaks of one.
fn telling_word(body: &str) -> Option<String> {
    let words: Vec<&str> = body
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    PARAMETERS
        .iter()
        .find(|p| words.contains(p))
        .map(|p| p.to_string())
        .or_else(|| {
            words
                .iter()
                .any(|w| w.eq_ignore_ascii_case("model"))
                .then(|| "model".to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_read_as_a_few_words() {
        let llama = "the server at http://127.0.0.1:8080 answered 500 Internal Server Error: \
{\"error\":{\"code\":500,\"message\":\"Unsupported param: response_format\",\"type\":\"server_error\"}}";
        assert_eq!(short_cause(llama), "500 response_format");
        // What llama-cpp-python really answers to a json_schema request.
        let pydantic = "the server at http://127.0.0.1:8080 answered 500 Internal Server Error: \
{\"error\":{\"message\":\"1 validation error:\\n  {'type': 'literal_error', 'loc': ('body', \
'response_format', 'type'), 'msg': \\\"Input should be 'text' or 'json_object'\\\", 'input': \
'json_schema'}\",\"type\":\"internal_server_error\",\"param\":null,\"code\":null}}";
        assert_eq!(short_cause(pydantic), "500 response_format");
        let ollama = "the server at http://127.0.0.1:11434 answered 404 Not Found: \
{\"error\":\"model \\\"llama3\\\" not found, try pulling it first\"}";
        assert_eq!(short_cause(ollama), "404 model");
        assert_eq!(
            short_cause("the server answered 503 Service Unavailable: busy"),
            "503"
        );
        assert_eq!(
            short_cause("no answer within 5m of the call's start"),
            "timed out"
        );
        assert_eq!(
            short_cause("the server at http://x did not answer in time: operation timed out"),
            "timed out"
        );
        assert_eq!(
            short_cause("cannot reach the server at http://x: connection refused"),
            "unreachable"
        );
        assert_eq!(
            short_cause("no JSON object in the answer; the answer began: \"Sure! Here\""),
            "unreadable answer"
        );
        assert_eq!(
            short_cause("something else went wrong"),
            "something else went"
        );
    }
}
