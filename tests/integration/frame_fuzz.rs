//! Property tests of the frame decoders: arbitrary bytes and arbitrary JSON
//! never panic, and whatever they yield is bounded and clean.

use inflight::feed::adapters::{Decoder, FeedFormat};
use inflight::feed::protocol::{FeedMessage, MAX_TEXT_BYTES};
use proptest::prelude::*;
use serde_json::Value;

const FORMATS: [FeedFormat; 5] = [
    FeedFormat::Auto,
    FeedFormat::Native,
    FeedFormat::Deepgram,
    FeedFormat::Whisperlive,
    FeedFormat::Assemblyai,
];

fn check(messages: &[FeedMessage]) {
    for message in messages {
        if let FeedMessage::Transcript { transcript, .. } = message {
            assert!(transcript.text.len() <= MAX_TEXT_BYTES);
            assert!(
                !transcript.text.chars().any(char::is_control),
                "{:?}",
                transcript.text
            );
            assert!(transcript.start.is_none_or(f64::is_finite));
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("transcript"),
            Just("session_end"),
            Just("hello"),
            Just("Results"),
            Just("Begin"),
            Just("Turn"),
            Just("Termination"),
            Just("segments"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        let keys = prop_oneof![
            Just("type".to_string()),
            Just("session_id".to_string()),
            Just("text".to_string()),
            Just("seq".to_string()),
            Just("final".to_string()),
            Just("uid".to_string()),
            Just("segments".to_string()),
            Just("channel".to_string()),
            Just("alternatives".to_string()),
            Just("transcript".to_string()),
            Just("id".to_string()),
            Just("end_of_turn".to_string()),
            Just("turn_order".to_string()),
            Just("words".to_string()),
            Just("start".to_string()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), format in 0usize..5) {
        let mut decoder = Decoder::new(FORMATS[format], "fuzz");
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(messages) = decoder.decode(&text) {
            check(&messages);
        }
    }

    #[test]
    fn arbitrary_json_never_panics(values in prop::collection::vec(json_value(), 1..6), format in 0usize..5) {
        let mut decoder = Decoder::new(FORMATS[format], "fuzz");
        for value in values {
            if let Ok(messages) = decoder.decode(&value.to_string()) {
                check(&messages);
            }
        }
    }
}

#[test]
fn deep_nesting_and_huge_numbers_are_refused_quietly() {
    for format in FORMATS {
        let mut decoder = Decoder::new(format, "fuzz");
        assert!(decoder.decode(&"[".repeat(100_000)).is_err());
        assert!(
            decoder
                .decode(&format!(
                    "{{\"type\":\"transcript\",\"seq\":1{}}}",
                    "0".repeat(400)
                ))
                .is_err()
        );
    }
}
