//! The store's unit tests.

use super::*;

fn said(session: &str, seq: Option<u64>, text: &str, is_final: bool) -> Transcript {
    Transcript {
        session_id: SessionId::parse(session).unwrap(),
        seq,
        text: text.into(),
        speaker: None,
        start: None,
        end: None,
        is_final,
        kind: None,
    }
}

#[test]
fn generations_count_finals_and_replays_are_dropped() {
    let store = SessionStore::default();
    assert_eq!(
        store.append(said("a", Some(1), "one", true), None),
        Appended::Final { generation: 1 }
    );
    assert_eq!(
        store.append(said("a", Some(2), "tw", false), None),
        Appended::Partial { generation: 1 }
    );
    assert_eq!(
        store.append(said("a", Some(2), "two", true), None),
        Appended::Duplicate
    );
    assert_eq!(
        store.append(said("a", Some(3), "two", true), None),
        Appended::Final { generation: 2 }
    );
    assert_eq!(
        store.append(said("a", None, "three", true), None),
        Appended::Final { generation: 3 }
    );
    assert_eq!(store.generation(&SessionId::parse("a").unwrap()), 3);
}

#[test]
fn the_limit_holds_across_shards_and_threads() {
    let store = std::sync::Arc::new(SessionStore::new(SessionLimits {
        max_sessions: 100,
        ..Default::default()
    }));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..1000)
                    .filter(|i| {
                        let name = format!("t{t}-{i}");
                        store.append(said(&name, Some(1), "hi", true), None) == Appended::Refused
                    })
                    .count()
            })
        })
        .collect();
    let refused: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(store.len(), 100);
    assert_eq!(refused, 3900);
    let mut held = 0;
    store.for_each(|_, _| held += 1);
    assert_eq!(held, 100, "the count and the maps agree");

    // A forgotten session makes room for a new one.
    let id = store.ended_before(Duration::ZERO);
    assert!(id.is_empty());
    let mut one = None;
    store.for_each(|id, _| one = Some(id.clone()));
    let one = one.unwrap();
    assert!(store.end(&one, None));
    assert!(store.forget_if_ended_before(&one, Duration::ZERO));
    assert_eq!(store.len(), 99);
    assert_eq!(
        store.append(said("newcomer", Some(1), "hi", true), None),
        Appended::Final { generation: 1 }
    );
    assert_eq!(
        store.append(said("one-too-many", Some(1), "hi", true), None),
        Appended::Refused
    );
}

#[test]
fn rejected_answers_are_cut_to_32_kib() {
    let store = SessionStore::default();
    store.append(said("a", None, "one", true), None);
    let id = SessionId::parse("a").unwrap();
    // Nothing kept or rejected yet: every operation reads as none, though
    // the session keeps no table for them.
    let content = store.content(&id, 0).unwrap();
    assert!(content.rejected.values().all(Option::is_none));
    assert!(content.results.values().all(Option::is_none));
    assert_eq!(content.rejected.values().count(), Operation::interned());
    assert_eq!(content.results.values().count(), Operation::interned());
    store.put_rejected(&id, Operation::MIND_MAP, "é".repeat(40_000));
    let kept = store.content(&id, 0).unwrap().rejected[Operation::MIND_MAP]
        .clone()
        .unwrap();
    assert!(
        kept.len() <= 32 * 1024 && kept.len() > 32 * 1024 - 2,
        "{}",
        kept.len()
    );
}

#[test]
fn a_result_of_the_same_generation_replaces_the_older_one() {
    let store = SessionStore::default();
    store.append(said("a", None, "one", true), None);
    let id = SessionId::parse("a").unwrap();
    let result = |text: &str, run_id| OpResult {
        body: ResultBody::Text(text.into()),
        covered_generation: 1,
        run_id,
        model: "m".into(),
        processing_time: Duration::ZERO,
        finished_at: SystemTime::now(),
        truncated: false,
    };
    assert!(
        store
            .put_result(&id, Operation::SUMMARY, result("first", 1), |_| {})
            .is_some()
    );
    // An operator's re-run reads the same transcripts: its result is newer.
    assert!(
        store
            .put_result(&id, Operation::SUMMARY, result("second", 2), |_| {})
            .is_some()
    );
    assert_eq!(held_run(&store, &id), Some(2));
}

/// The run id of the summary memory holds.
fn held_run(store: &SessionStore, id: &SessionId) -> Option<RunId> {
    match store.result(id, Operation::SUMMARY)? {
        Latest::Held(result) => Some(result.run_id),
        Latest::InFile => None,
    }
}

#[test]
fn ending_a_session_that_said_nothing_final_asks_for_nothing() {
    let store = SessionStore::default();
    store.append(said("quiet", None, "uh", false), None);
    let id = SessionId::parse("quiet").unwrap();
    assert!(!store.end(&id, None), "only a partial: no final runs");
    store.append(said("talk", None, "one", true), None);
    assert!(store.end(&SessionId::parse("talk").unwrap(), None));
}

const WINDOW: usize = crate::llm::prompts::MAX_TRANSCRIPT_CHARS;

fn result_covering(generation: u64, run_id: RunId) -> OpResult {
    OpResult {
        body: ResultBody::Text(format!("up to {generation}")),
        covered_generation: generation,
        run_id,
        model: "m".into(),
        processing_time: Duration::ZERO,
        finished_at: SystemTime::now(),
        truncated: false,
    }
}

#[test]
fn a_backlog_is_read_oldest_first_one_window_at_a_time() {
    let store = SessionStore::default();
    let id = SessionId::parse("a").unwrap();
    // Ten lines of 10 characters (9 + newline): a window of 35 holds 3.
    for i in 0..10 {
        store.append(said("a", None, &format!("line {i:04}"), true), None);
    }
    let mut covered = 0;
    let mut steps = Vec::new();
    loop {
        let input = incremental(&store, &id, Operation::SUMMARY, 35, ReadBack::default()).unwrap();
        let texts: Vec<String> = input
            .utterances
            .iter()
            .map(|u| u.text().to_string())
            .collect();
        steps.push(texts);
        assert!(input.generation > covered, "every step moves on");
        covered = input.generation;
        store.put_result(
            &id,
            Operation::SUMMARY,
            result_covering(covered, covered),
            |_| {},
        );
        if !input.more {
            break;
        }
    }
    let flat: Vec<String> = steps.concat();
    let expected: Vec<String> = (0..10).map(|i| format!("line {i:04}")).collect();
    assert_eq!(flat, expected, "every line once, in order, none dropped");
    assert_eq!(steps.len(), 4, "{steps:?}");
    // A line longer than the window still goes, alone.
    store.append(said("a", None, &"x".repeat(100), true), None);
    let input = incremental(&store, &id, Operation::SUMMARY, 35, ReadBack::default()).unwrap();
    assert_eq!((input.utterances.len(), input.more), (1, false));
    // Full mode reads the newest window.
    let full = store
        .run_input(
            &id,
            Operation::SUMMARY,
            false,
            35,
            None,
            ReadBack::default(),
        )
        .unwrap();
    assert_eq!(full.utterances.len(), 1);
    assert_eq!(full.generation, 11);
}

#[test]
fn uncovered_transcripts_are_kept_past_the_view_limit_up_to_the_hard_cap() {
    let store = SessionStore::default().tracking(&[Operation::SUMMARY]);
    let id = SessionId::parse("a").unwrap();
    let n = KEPT_TRANSCRIPTS + 100;
    for i in 0..n {
        store.append(said("a", None, &format!("{i}"), true), None);
    }
    assert_eq!(
        store.content(&id, usize::MAX).unwrap().recent.len(),
        n,
        "none covered"
    );
    assert_eq!(store.oldest_uncovered(&id, Operation::SUMMARY), 0);
    store.put_result(
        &id,
        Operation::SUMMARY,
        result_covering(n as u64, 1),
        |_| {},
    );
    assert_eq!(
        store.content(&id, usize::MAX).unwrap().recent.len(),
        KEPT_TRANSCRIPTS,
        "covered: back to the view limit"
    );
    assert_eq!(
        store.oldest_uncovered(&id, Operation::SUMMARY),
        n as u64,
        "up to date"
    );
    for i in 0..(MAX_HELD_TRANSCRIPTS + 5) {
        store.append(said("a", None, &format!("more {i}"), true), None);
    }
    let facts = store.facts(&id).unwrap();
    let held = store.content(&id, usize::MAX).unwrap().recent.len();
    assert_eq!(held, MAX_HELD_TRANSCRIPTS);
    assert_eq!(facts.lost, 5, "only uncovered lines count as lost");
    assert_eq!(
        store.oldest_uncovered(&id, Operation::SUMMARY),
        (n + 5) as u64
    );
}

#[test]
fn covered_lines_past_the_kept_ones_are_released_at_once() {
    let store = SessionStore::new(SessionLimits {
        kept_transcripts: 0,
        ..Default::default()
    })
    .tracking(&[Operation::SUMMARY, Operation::MIND_MAP]);
    let id = SessionId::parse("a").unwrap();
    let held = || store.content(&id, usize::MAX).unwrap().recent.len();
    for i in 0..5 {
        store.append(said("a", None, &format!("{i}"), true), None);
    }
    store.put_result(&id, Operation::SUMMARY, result_covering(5, 1), |_| {});
    assert_eq!(held(), 5, "the mind map has not covered them yet");
    store.put_result(&id, Operation::MIND_MAP, result_covering(3, 2), |_| {});
    assert_eq!(
        held(),
        2,
        "covered by both: gone at once, not at the next line"
    );
    store.append(said("a", None, "5", true), None);
    let texts: Vec<String> = store
        .content(&id, usize::MAX)
        .unwrap()
        .recent
        .into_iter()
        .map(|t| t.text)
        .collect();
    assert_eq!(texts, ["3", "4", "5"]);
}

#[test]
fn rereading_runs_keep_the_covered_lines_their_window_reaches() {
    // Each line "lineNN" is 7 prompt characters (its newline counted).
    let store = SessionStore::new(SessionLimits {
        kept_transcripts: 2,
        ..Default::default()
    })
    .tracking(&[Operation::SUMMARY])
    .rereading(30);
    let id = SessionId::parse("a").unwrap();
    for i in 0..10 {
        store.append(said("a", None, &format!("line{i:02}"), true), None);
    }
    store.put_result(&id, Operation::SUMMARY, result_covering(10, 1), |_| {});
    let held = store.content(&id, usize::MAX).unwrap().recent;
    assert_eq!(
        held.len(),
        4,
        "four lines are 28 characters; five would be 35"
    );
    let input = store
        .run_input(
            &id,
            Operation::SUMMARY,
            false,
            30,
            None,
            ReadBack::default(),
        )
        .unwrap();
    assert_eq!(
        input.utterances.len(),
        4,
        "a re-read of 30 characters takes four"
    );
    assert_eq!(input.utterances[0].text(), "line06");
}

#[test]
fn the_hard_cap_follows_its_setting() {
    let store = SessionStore::new(SessionLimits {
        max_held_transcripts: 450,
        ..Default::default()
    })
    .tracking(&[Operation::SUMMARY]);
    let id = SessionId::parse("a").unwrap();
    for i in 0..460 {
        store.append(said("a", None, &format!("{i}"), true), None);
    }
    assert_eq!(store.content(&id, usize::MAX).unwrap().recent.len(), 450);
    assert_eq!(store.facts(&id).unwrap().lost, 10);
}

#[test]
fn incremental_input_reads_after_the_previous_summary() {
    let store = SessionStore::default();
    let id = SessionId::parse("a").unwrap();
    for text in ["one", "two", "three"] {
        store.append(said("a", None, text, true), None);
    }
    let result = OpResult {
        body: ResultBody::Text("S".into()),
        covered_generation: 2,
        run_id: 1,
        model: "m".into(),
        processing_time: Duration::ZERO,
        finished_at: SystemTime::now(),
        truncated: false,
    };
    assert!(
        store
            .put_result(&id, Operation::SUMMARY, result.clone(), |_| {})
            .is_some()
    );
    let input = incremental(&store, &id, Operation::SUMMARY, WINDOW, ReadBack::default()).unwrap();
    assert_eq!(input.previous.as_deref(), Some("S"));
    assert_eq!(input.utterances.len(), 1);
    assert_eq!((input.generation, input.more), (3, false));
    assert_eq!(
        store
            .run_input(
                &id,
                Operation::SUMMARY,
                false,
                WINDOW,
                None,
                ReadBack::default()
            )
            .unwrap()
            .utterances
            .len(),
        3
    );
    // The mind map has no result yet: it reads from the start.
    let map = incremental(
        &store,
        &id,
        Operation::MIND_MAP,
        WINDOW,
        ReadBack::default(),
    )
    .unwrap();
    assert_eq!((map.utterances.len(), map.previous), (3, None));
    // An older result never replaces a newer one.
    let older = OpResult {
        covered_generation: 1,
        ..result
    };
    assert!(
        store
            .put_result(&id, Operation::SUMMARY, older, |_| {})
            .is_none()
    );
}

#[test]
fn a_result_is_stamped_only_when_it_is_kept() {
    let store = SessionStore::new(SessionLimits::default());
    let id = SessionId::parse("stamped").unwrap();
    store.append(said("stamped", Some(1), "one", true), None);
    store.append(said("stamped", Some(2), "two", true), None);
    let kept = store.put_result(&id, Operation::SUMMARY, result_covering(2, 7), |r| {
        r.run_id = 40
    });
    assert_eq!(kept, Some(40), "the stamp is what is kept");
    assert_eq!(held_run(&store, &id), Some(40));
    let mut stamped = false;
    let older = store.put_result(&id, Operation::SUMMARY, result_covering(1, 8), |_| {
        stamped = true
    });
    assert_eq!(older, None);
    assert!(!stamped, "a refused result takes no number");
}

/// A store whose lines leave memory as soon as the database holds them,
/// covered or not.
fn spilling(limits: SessionLimits) -> SessionStore {
    SessionStore::new(SessionLimits {
        spill_after: Duration::ZERO,
        ..limits
    })
}

/// The generations `id`'s record holds in memory.
fn held(store: &SessionStore, id: &SessionId) -> Vec<u64> {
    store
        .content(id, usize::MAX)
        .unwrap()
        .recent
        .iter()
        .map(|t| t.generation)
        .collect()
}

/// Lines `from..=to` as the file gives them back.
fn filed(from: u64, to: u64) -> Vec<StoredTranscript> {
    (from..=to)
        .map(|g| StoredTranscript {
            generation: g,
            speaker: None,
            text: format!("{}", g - 1),
            start: None,
            received_at: SystemTime::UNIX_EPOCH,
            arrival: 0,
        })
        .collect()
}

/// What a run of `op` reads incrementally now, within a window of `window`
/// characters, with `read_back` from the file.
fn incremental(
    store: &SessionStore,
    id: &SessionId,
    op: Operation,
    window: usize,
    read_back: ReadBack<'_>,
) -> Result<RunInput, InFile> {
    store.run_input(id, op, true, window, None, read_back)
}

/// Lines read back from the file, before the last try.
fn lines_back(lines: &[StoredTranscript]) -> ReadBack<'_> {
    ReadBack {
        lines,
        ..ReadBack::default()
    }
}

/// The lines a run needs start in the file at `from`.
fn lines_in_file(from: u64) -> InFile {
    InFile {
        from: Some(from),
        result: false,
    }
}

fn texts(input: &RunInput) -> Vec<String> {
    input
        .utterances
        .iter()
        .map(|u| u.text().to_string())
        .collect()
}

#[test]
fn lines_the_database_holds_leave_memory_covered_or_not() {
    let waiting = SessionStore::new(SessionLimits {
        spill_after: Duration::from_secs(3600),
        ..Default::default()
    })
    .tracking(&[Operation::SUMMARY]);
    let id = SessionId::parse("a").unwrap();
    waiting.append(said("a", None, "0", true), None);
    waiting.written_through(&id, 1);
    assert_eq!(
        held(&waiting, &id),
        [1],
        "uncovered and said within the hour: kept for a run soon after"
    );
    let store = spilling(SessionLimits::default()).tracking(&[Operation::SUMMARY]);
    let id = SessionId::parse("a").unwrap();
    for i in 0..10 {
        store.append(said("a", None, &format!("{i}"), true), None);
    }
    store.written_through(&id, 5);
    assert_eq!(
        held(&store, &id),
        [6, 7, 8, 9, 10],
        "on disk: gone, covered or not; runs read them back"
    );
    store.put_result(&id, Operation::SUMMARY, result_covering(8, 1), |_| {});
    assert_eq!(held(&store, &id), [6, 7, 8, 9, 10], "not on disk: kept");
    store.written_through(&id, 10);
    assert!(held(&store, &id).is_empty(), "all on disk");
    store.written_through(&id, 3);
    store.append(said("a", None, "10", true), None);
    assert_eq!(
        held(&store, &id),
        [11],
        "an older commit moves nothing back"
    );
    store.written_through(&id, 99);
    store.put_result(&id, Operation::SUMMARY, result_covering(11, 2), |_| {});
    store.append(said("a", None, "11", true), None);
    assert_eq!(
        held(&store, &id),
        [12],
        "a commit is never taken past the lines numbered when it came"
    );
    assert_eq!(store.lines_held(&id), Some(1));
    assert_eq!(store.lines_held(&SessionId::parse("b").unwrap()), None);
    store.written_through(&SessionId::parse("b").unwrap(), 4);
    assert!(!store.contains(&SessionId::parse("b").unwrap()));
}

#[test]
fn a_run_reads_the_lines_memory_let_go_back_from_the_file_then_the_held_ones() {
    let store =
        spilling(SessionLimits::default()).tracking(&[Operation::SUMMARY, Operation::MIND_MAP]);
    let id = SessionId::parse("a").unwrap();
    for i in 0..10 {
        store.append(said("a", None, &format!("{i}"), true), None);
    }
    store.put_result(&id, Operation::SUMMARY, result_covering(2, 1), |_| {});
    store.written_through(&id, 7);
    assert_eq!(held(&store, &id), [8, 9, 10]);
    let ask =
        |read_back: ReadBack<'_>| incremental(&store, &id, Operation::SUMMARY, 1_000, read_back);
    assert_eq!(
        ask(ReadBack::default()).unwrap_err(),
        lines_in_file(3),
        "from the first line the summary has not covered"
    );
    assert_eq!(
        incremental(&store, &id, Operation::MIND_MAP, 1_000, ReadBack::default()).unwrap_err(),
        lines_in_file(1),
        "the mind map covered nothing"
    );
    assert_eq!(
        store.oldest_uncovered(&id, Operation::SUMMARY),
        0,
        "the oldest line any operation waits for keeps its place in the queue"
    );
    let file = filed(3, 10);
    let input = ask(lines_back(&file)).unwrap();
    assert_eq!(texts(&input), ["2", "3", "4", "5", "6", "7", "8", "9"]);
    assert_eq!((input.generation, input.more), (10, false));
    // The file read before more lines left memory: asked again.
    let early = filed(3, 5);
    assert_eq!(ask(lines_back(&early)).unwrap_err(), lines_in_file(3));
    // A file that lacks lines (pruned): the last try passes over them.
    let input = ask(ReadBack {
        lines: &early,
        last_try: true,
        ..ReadBack::default()
    })
    .unwrap();
    assert_eq!(texts(&input), ["2", "3", "4", "7", "8", "9"]);
    // A window the file's lines fill: the held ones wait for the next step.
    let input = incremental(&store, &id, Operation::SUMMARY, 4, lines_back(&file)).unwrap();
    assert_eq!(
        (texts(&input), input.generation, input.more),
        (vec!["2".to_string(), "3".into()], 4, true)
    );
    // The summary past the spilled lines queues by its own oldest line;
    // the mind map still by the oldest spilled one.
    store.put_result(&id, Operation::SUMMARY, result_covering(7, 3), |_| {});
    assert_eq!(store.oldest_uncovered(&id, Operation::SUMMARY), 7);
    assert_eq!(store.oldest_uncovered(&id, Operation::MIND_MAP), 0);
    // Once every operation covered them, nothing is asked of the file.
    store.put_result(&id, Operation::MIND_MAP, result_covering(7, 2), |_| {});
    let input = ask(ReadBack::default()).unwrap();
    assert_eq!(texts(&input), ["7", "8", "9"]);
    assert_eq!(
        store.oldest_uncovered(&id, Operation::SUMMARY),
        7,
        "back to the oldest held line's place (the 8th to arrive)"
    );
}

#[test]
fn a_full_read_back_that_stops_short_is_one_step_and_more() {
    let store = spilling(SessionLimits::default()).tracking(&[Operation::SUMMARY]);
    let id = SessionId::parse("a").unwrap();
    let n = READ_BACK_LINES as u64 + 50;
    for i in 0..n {
        store.append(said("a", None, &format!("{i}"), true), None);
    }
    store.written_through(&id, n - 10);
    let file = filed(1, READ_BACK_LINES as u64);
    let input = incremental(
        &store,
        &id,
        Operation::SUMMARY,
        usize::MAX,
        lines_back(&file),
    )
    .unwrap();
    assert_eq!(input.utterances.len(), READ_BACK_LINES);
    assert_eq!(
        (input.generation, input.more),
        (READ_BACK_LINES as u64, true)
    );
}

#[test]
fn spilled_lines_count_toward_the_hard_cap_and_runs_that_reread_keep_theirs() {
    let store = spilling(SessionLimits {
        max_held_transcripts: 10,
        kept_transcripts: 0,
        ..Default::default()
    })
    .tracking(&[Operation::SUMMARY]);
    let id = SessionId::parse("a").unwrap();
    for i in 0..8 {
        store.append(said("a", None, &format!("{i}"), true), None);
    }
    store.written_through(&id, 8);
    assert!(held(&store, &id).is_empty());
    for i in 8..12 {
        store.append(said("a", None, &format!("{i}"), true), None);
    }
    assert_eq!(held(&store, &id), [9, 10, 11, 12]);
    assert_eq!(
        store.facts(&id).unwrap().lost,
        2,
        "12 lines waited: 2 past the cap"
    );
    assert_eq!(
        incremental(&store, &id, Operation::SUMMARY, 1_000, ReadBack::default()).unwrap_err(),
        lines_in_file(3),
        "the lost lines are not asked for"
    );
    let rereading = spilling(SessionLimits::default())
        .tracking(&[Operation::SUMMARY])
        .rereading(1_000);
    for i in 0..5 {
        rereading.append(said("a", None, &format!("{i}"), true), None);
    }
    rereading.written_through(&id, 5);
    assert_eq!(
        held(&rereading, &id).len(),
        5,
        "a full re-read reads memory"
    );
}

#[test]
fn a_result_body_leaves_memory_once_the_file_holds_it_and_it_waited() {
    let waiting = SessionStore::new(SessionLimits {
        spill_after: Duration::from_secs(3600),
        ..Default::default()
    });
    let id = SessionId::parse("a").unwrap();
    waiting.append(said("a", None, "0", true), None);
    waiting.put_result(&id, Operation::SUMMARY, result_covering(1, 7), |_| {});
    waiting.result_written(&id, Operation::SUMMARY, 7);
    waiting.settle();
    assert_eq!(
        held_run(&waiting, &id),
        Some(7),
        "in the file, but not waited"
    );

    let store = spilling(SessionLimits::default());
    store.append(said("a", None, "0", true), None);
    store.put_result(&id, Operation::SUMMARY, result_covering(1, 7), |_| {});
    store.settle();
    assert_eq!(held_run(&store, &id), Some(7), "not in the file yet");
    store.result_written(&id, Operation::SUMMARY, 6);
    assert_eq!(
        held_run(&store, &id),
        Some(7),
        "the file holds an older run's"
    );
    store.result_written(&id, Operation::SUMMARY, 7);
    assert_eq!(store.result(&id, Operation::SUMMARY), Some(Latest::InFile));
    assert_eq!(
        store.covered(&id, Operation::SUMMARY),
        1,
        "what it covers stays"
    );
    let (content, in_file) = store.content_and_filed(&id, 10).unwrap();
    assert_eq!(in_file, [Operation::SUMMARY]);
    assert!(content.results.values().all(Option::is_none));

    store.append(said("a", None, "1", true), None);
    let ask = |result: Option<&OpResult>, lines: &[StoredTranscript]| {
        let read_back = ReadBack {
            result,
            ..lines_back(lines)
        };
        incremental(&store, &id, Operation::SUMMARY, 1_000, read_back)
    };
    let wanted = InFile {
        from: None,
        result: true,
    };
    assert_eq!(ask(None, &[]).unwrap_err(), wanted);
    let older = result_covering(0, 6);
    assert_eq!(
        ask(Some(&older), &[]).unwrap_err(),
        wanted,
        "another run's: again"
    );
    let own = result_covering(1, 7);
    let input = ask(Some(&own), &[]).unwrap();
    assert_eq!(input.previous.as_deref(), Some("up to 1"));
    assert_eq!(texts(&input), ["1"]);
    // The line left memory too: one ask names both.
    store.written_through(&id, 2);
    assert_eq!(
        ask(None, &[]).unwrap_err(),
        InFile {
            from: Some(2),
            result: true
        }
    );
    assert_eq!(
        ask(None, &filed(2, 2)).unwrap_err(),
        wanted,
        "the lines were read, the result not yet"
    );
    let input = ask(Some(&own), &filed(2, 2)).unwrap();
    assert_eq!(input.previous.as_deref(), Some("up to 1"));
    assert_eq!(texts(&input), ["1"]);

    // A newer result is held again until the file holds it.
    store.put_result(&id, Operation::SUMMARY, result_covering(2, 8), |_| {});
    assert_eq!(held_run(&store, &id), Some(8));
    assert_eq!(store.covered(&id, Operation::SUMMARY), 2);
    let unknown = SessionId::parse("b").unwrap();
    assert_eq!(store.covered(&unknown, Operation::SUMMARY), 0);
}

#[test]
fn a_session_gone_silent_lets_its_result_go_at_the_sweep() {
    let wait = Duration::from_millis(200);
    let store = SessionStore::new(SessionLimits {
        spill_after: wait,
        ..Default::default()
    });
    let id = SessionId::parse("a").unwrap();
    store.append(said("a", None, "0", true), None);
    store.put_result(&id, Operation::SUMMARY, result_covering(1, 7), |_| {});
    store.result_written(&id, Operation::SUMMARY, 7);
    assert_eq!(held_run(&store, &id), Some(7), "in the file, not waited");
    // The wait itself is what is under test: real time, as results keep it.
    std::thread::sleep(wait + Duration::from_millis(50));
    assert_eq!(held_run(&store, &id), Some(7), "nothing looked since");
    store.settle();
    assert_eq!(store.result(&id, Operation::SUMMARY), Some(Latest::InFile));
}
