//! Example messages of each format, shaped as the formats' public
//! documentation describes them, mapped to the same native records.

use super::*;
use crate::model::Transcript;

fn decode_all(decoder: &mut Decoder, frames: &[&str]) -> Vec<FeedMessage> {
    frames
        .iter()
        .flat_map(|f| decoder.decode(f).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect()
}

fn transcripts(messages: &[FeedMessage]) -> Vec<(String, Option<u64>, String, bool)> {
    messages
        .iter()
        .filter_map(|m| match m {
            FeedMessage::Transcript {
                transcript:
                    Transcript {
                        session_id,
                        seq,
                        text,
                        is_final,
                        ..
                    },
                ..
            } => Some((session_id.to_string(), *seq, text.clone(), *is_final)),
            _ => None,
        })
        .collect()
}

#[test]
fn deepgram_results_map_to_partial_and_final_lines() {
    let interim = r#"{"type":"Results","channel_index":[0,1],"duration":1.2,"start":3.5,"is_final":false,"speech_final":false,
        "channel":{"alternatives":[{"transcript":"we ship on","confidence":0.91,"words":[{"word":"we","start":3.5,"end":3.7,"confidence":0.9,"speaker":1}]}]},
        "metadata":{"request_id":"2f0c1e0a-1b2c-4d5e-8f90-123456789abc","model_info":{"name":"general"}}}"#;
    let final_ = r#"{"type":"Results","channel_index":[0,1],"duration":2.0,"start":3.5,"is_final":true,"speech_final":true,
        "channel":{"alternatives":[{"transcript":"we ship on friday","confidence":0.97,"words":[]}]},
        "metadata":{"request_id":"2f0c1e0a-1b2c-4d5e-8f90-123456789abc"}}"#;
    let silence = r#"{"type":"Results","start":5.5,"duration":1.0,"is_final":true,"channel":{"alternatives":[{"transcript":""}]},"metadata":{"request_id":"2f0c1e0a-1b2c-4d5e-8f90-123456789abc"}}"#;
    let other = r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":5.5}"#;
    let mut decoder = Decoder::new(FeedFormat::Auto, "feed-0");
    let messages = decode_all(&mut decoder, &[interim, final_, silence, other]);
    assert_eq!(decoder.format(), FeedFormat::Deepgram);
    let id = "2f0c1e0a-1b2c-4d5e-8f90-123456789abc".to_string();
    assert_eq!(
        transcripts(&messages),
        vec![
            (id.clone(), None, "we ship on".into(), false),
            (id, None, "we ship on friday".into(), true)
        ]
    );
    let FeedMessage::Transcript { transcript, .. } = &messages[1] else {
        unreachable!()
    };
    assert_eq!((transcript.start, transcript.end), (Some(3.5), Some(5.5)));
    let FeedMessage::Transcript { transcript, .. } = &messages[0] else {
        unreachable!()
    };
    assert_eq!(transcript.speaker.as_deref(), Some("speaker 1"));
}

#[test]
fn deepgram_without_a_request_id_uses_the_feed_name() {
    let mut decoder = Decoder::new(FeedFormat::Deepgram, "feed-3");
    let messages = decode_all(
        &mut decoder,
        &[
            r#"{"type":"Results","start":0,"duration":1,"is_final":true,"channel":{"alternatives":[{"transcript":"hello"}]}}"#,
        ],
    );
    assert_eq!(
        transcripts(&messages),
        vec![("feed-3".into(), None, "hello".into(), true)]
    );
}

#[test]
fn whisperlive_upserts_its_sliding_window_by_start() {
    let frames = [
        r#"{"uid":"client-7","message":"SERVER_READY","backend":"faster_whisper"}"#,
        r#"{"uid":"client-7","segments":[{"start":"0.000","end":"1.800","text":" The budget is","completed":false}]}"#,
        r#"{"uid":"client-7","segments":[{"start":"0.000","end":"2.600","text":" The budget is approved.","completed":true},{"start":"2.600","end":"3.100","text":" Next","completed":false}]}"#,
        r#"{"uid":"client-7","segments":[{"start":"0.000","end":"2.600","text":" The budget is approved!","completed":true},{"start":"2.600","end":"4.900","text":" Next item, hiring.","completed":true}]}"#,
        r#"{"uid":"client-7","message":"DISCONNECT"}"#,
    ];
    let mut decoder = Decoder::new(FeedFormat::Auto, "feed-0");
    let messages = decode_all(&mut decoder, &frames);
    assert_eq!(decoder.format(), FeedFormat::Whisperlive);
    assert_eq!(
        transcripts(&messages),
        vec![
            ("client-7".into(), None, "The budget is".into(), false),
            (
                "client-7".into(),
                None,
                "The budget is approved.".into(),
                true
            ),
            ("client-7".into(), None, "Next".into(), false),
            ("client-7".into(), None, "Next item, hiring.".into(), true),
        ],
        "each completed segment is final once; a re-sent one is not ingested again"
    );
    assert!(
        matches!(messages.last(), Some(FeedMessage::SessionEnd(id)) if id.as_str() == "client-7")
    );
}

#[test]
fn whisperlive_windows_die_with_their_sessions() {
    let segment = |uid: &str| {
        format!(
            r#"{{"uid":"{uid}","segments":[{{"start":"1.0","end":"2.0","text":"Hello.","completed":true}}]}}"#
        )
    };
    let mut decoder = Decoder::new(FeedFormat::Whisperlive, "feed-0");
    let (kept, gone) = (segment("kept"), segment("gone"));
    assert_eq!(decode_all(&mut decoder, &[&kept, &gone]).len(), 2);
    // Re-sent windows: already ingested.
    assert!(decode_all(&mut decoder, &[&kept, &gone]).is_empty());
    // The engine no longer holds "gone": its window is dropped, so a segment
    // of it is news again, while "kept" remembers its own.
    decoder.retain(|session| session.as_str() == "kept");
    assert!(decode_all(&mut decoder, &[&kept]).is_empty());
    assert_eq!(transcripts(&decode_all(&mut decoder, &[&gone])).len(), 1);
}

#[test]
fn assemblyai_turns_map_to_lines_of_the_begun_session() {
    let frames = [
        r#"{"type":"Begin","id":"de5d9927-73a6-4be8-b52d-b4c07be37e6b","expires_at":1759796682}"#,
        r#"{"type":"Turn","turn_order":0,"turn_is_formatted":false,"end_of_turn":false,"transcript":"hi my name","end_of_turn_confidence":0.1,"words":[{"start":1440,"end":1520,"text":"hi","confidence":0.9,"word_is_final":true}]}"#,
        r#"{"type":"Turn","turn_order":0,"turn_is_formatted":false,"end_of_turn":true,"transcript":"hi my name is sonny","end_of_turn_confidence":0.9,"words":[{"start":1440,"end":1520,"text":"hi"},{"start":2400,"end":2880,"text":"sonny"}]}"#,
        r#"{"type":"Turn","turn_order":0,"turn_is_formatted":true,"end_of_turn":true,"transcript":"Hi, my name is Sonny.","words":[]}"#,
        r#"{"type":"Turn","turn_order":1,"turn_is_formatted":true,"end_of_turn":true,"transcript":"Let's begin.","words":[]}"#,
        r#"{"type":"Termination","audio_duration_seconds":12,"session_duration_seconds":12}"#,
    ];
    let mut decoder = Decoder::new(FeedFormat::Auto, "feed-0");
    let messages = decode_all(&mut decoder, &frames);
    assert_eq!(decoder.format(), FeedFormat::Assemblyai);
    let id = "de5d9927-73a6-4be8-b52d-b4c07be37e6b".to_string();
    assert_eq!(
        transcripts(&messages),
        vec![
            (id.clone(), None, "hi my name".into(), false),
            (id.clone(), Some(1), "hi my name is sonny".into(), true),
            // The formatted repeat carries the same seq: the store drops it.
            (id.clone(), Some(1), "Hi, my name is Sonny.".into(), true),
            (id.clone(), Some(2), "Let's begin.".into(), true),
        ]
    );
    let FeedMessage::Transcript { transcript, .. } = &messages[1] else {
        unreachable!()
    };
    assert_eq!((transcript.start, transcript.end), (Some(1.44), Some(2.88)));
    assert!(matches!(messages.last(), Some(FeedMessage::SessionEnd(s)) if s.as_str() == id));
}

#[test]
fn assemblyai_turns_before_begin_are_refused() {
    let mut decoder = Decoder::new(FeedFormat::Assemblyai, "feed-0");
    assert!(
        decoder
            .decode(r#"{"type":"Turn","turn_order":0,"end_of_turn":true,"transcript":"x"}"#)
            .is_err()
    );
}

#[test]
fn every_format_yields_the_same_record_for_the_same_words() {
    let native = r#"{"type":"transcript","session_id":"s-1","text":"Ship it.","start":1.0,"end":2.0,"final":true}"#;
    let deepgram = r#"{"type":"Results","start":1.0,"duration":1.0,"is_final":true,"channel":{"alternatives":[{"transcript":"Ship it."}]},"metadata":{"request_id":"s-1"}}"#;
    let whisper =
        r#"{"uid":"s-1","segments":[{"start":1.0,"end":2.0,"text":"Ship it.","completed":true}]}"#;
    let mut records = Vec::new();
    for frame in [native, deepgram, whisper] {
        let mut decoder = Decoder::new(FeedFormat::Auto, "x");
        records.push(transcripts(&decoder.decode(frame).unwrap()));
    }
    assert_eq!(records[0], records[1]);
    assert_eq!(records[1], records[2]);
}

#[test]
fn unknown_first_messages_are_refused_until_one_is_known() {
    let mut decoder = Decoder::new(FeedFormat::Auto, "x");
    assert!(matches!(
        decoder.decode(r#"{"weather":"sunny"}"#),
        Err(FrameError::UnknownType(_))
    ));
    assert_eq!(decoder.format(), FeedFormat::Auto);
    assert!(
        decoder
            .decode(r#"{"type":"session_end","session_id":"a"}"#)
            .is_ok()
    );
    assert_eq!(decoder.format(), FeedFormat::Native);
}
