//! Recording the real binary on the demo, and replaying the recording
//! through the engine: the same settings give the same outcome, a changed
//! setting names what it changes, and damaged or newer recordings are
//! read as far as they can be, or refused, with a clear message.

use crate::common::child::{Logged, fresh_dir, inflight as bin, output};

use serde_json::Value;

/// Records the demo (four times as fast) until `runs` runs have ended,
/// then stops it as an operator would; the recording's path.
fn record_demo(name: &str, runs: usize) -> std::path::PathBuf {
    let dir = fresh_dir("recording", name);
    let file = dir.join("demo.jsonl");
    let mut serve = Logged::spawn(
        bin()
            .args(["serve", "--no-db", "--api", "127.0.0.1:0"])
            .args(["--demo-speed", "4", "--simulate-latency", "300ms..1500ms"])
            .arg("--record")
            .arg(&file),
    );
    serve.wait_for_nth("processing finished", runs);
    serve.stop();
    file
}

fn replay(file: &std::path::Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = output(bin().arg("replay").arg(file).arg("--engine").args(extra));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(start_paused = true)]
async fn sixty_seconds_of_the_demo_replay_identical_and_one_call_at_a_time_differs() {
    let dir = fresh_dir("recording", "paused");
    let file = dir.join("demo.jsonl");
    inflight::record::sample::record_demo(&file, 60)
        .await
        .unwrap();
    let reading = inflight::record::read(&file).unwrap();
    assert_eq!(reading.damage, None);
    let same = inflight::record::replay(&reading, &Default::default()).await;
    assert!(same.identical, "{:?}", same.differences);
    assert!(same.recorded.runs >= 30, "{:?}", same.recorded);
    assert!(same.recorded.skips > 0, "the demo meets busy runs");
    assert_eq!(same.recorded, same.replayed);
    assert_eq!(same.made_up_calls, 0);
    let one = inflight::record::replay(
        &reading,
        &inflight::record::ReplaySettings {
            llm_concurrency: Some(1),
            ..Default::default()
        },
    )
    .await;
    assert!(!one.identical);
    assert!(one.replayed.runs < one.recorded.runs, "{:?}", one.replayed);
    assert!(one.differences.iter().all(|d| d.recorded != d.replayed));
}

/// The real binary, recording in real time: the replay gives the same
/// outcome, though the live engine took milliseconds of its own around
/// every call that the replay's does not, and lines came within them of a
/// run's start or end: the replay follows the recording there.
#[test]
fn a_recorded_demo_replays_as_it_ran_and_a_changed_setting_names_its_differences() {
    let file = record_demo("identical", 40);
    // Each call says when it was sent, when its first token came, and
    // when it ended, in that order.
    let reading = inflight::record::read(&file).unwrap();
    let mut timed = 0;
    for (_, record) in &reading.records {
        if let inflight::record::Record::Llm {
            at,
            first: Some(first),
            end,
            ..
        } = record
        {
            assert!(at <= first && first <= end, "{record:?}");
            timed += 1;
        }
    }
    assert!(timed >= 30, "{timed} calls with their first token");

    let (code, stdout, stderr) = replay(&file, &["--report", "json"]);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("{e}: {stdout}\n{stderr}");
    });
    assert_eq!(report["identical"], true, "{stdout}");
    assert_eq!(report["differences"], serde_json::json!([]), "{stdout}");
    assert_eq!(code, Some(0), "identical exits 0");
    assert_eq!(report["recorded"], report["replayed"], "{stdout}");
    assert!(
        report["recorded"]["runs"].as_u64().unwrap() >= 40,
        "{stdout}"
    );
    assert!(
        report["recorded"]["skips"].as_u64().unwrap() > 0,
        "{stdout}"
    );
    assert_eq!(report["made_up_calls"], 0, "{stdout}");
    assert!(
        report["speed"].as_f64().unwrap() > 10.0,
        "minutes in well under their length: {stdout}"
    );

    // One call at a time: fewer runs, and the report names where.
    let (code, stdout, _) = replay(&file, &["--report", "json", "--llm-concurrency", "1"]);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(code, Some(1), "not identical exits 1");
    assert_eq!(report["identical"], false);
    assert_eq!(report["changed"][0], "llm_concurrency 4 → 1");
    let differences = report["differences"].as_array().unwrap();
    assert!(!differences.is_empty());
    for d in differences {
        assert!(d["session"].as_str().is_some_and(|s| !s.is_empty()), "{d}");
        assert!(
            ["summary", "mind_map"].contains(&d["op"].as_str().unwrap()),
            "{d}"
        );
        assert!(
            ["runs", "failed", "skips", "covered"].contains(&d["what"].as_str().unwrap()),
            "{d}"
        );
        assert_ne!(d["recorded"], d["replayed"], "{d}");
    }
    assert!(
        report["replayed"]["runs"].as_u64() < report["recorded"]["runs"].as_u64(),
        "{stdout}"
    );

    // The table says the same for people.
    let (_, table, _) = replay(&file, &["--llm-concurrency", "1"]);
    assert!(table.contains("settings: llm_concurrency 4 → 1"), "{table}");
    assert!(table.contains("SESSION"), "{table}");
    assert!(table.contains("not identical:"), "{table}");
    let (_, table, _) = replay(&file, &[]);
    assert!(
        table.contains("recorded") && table.contains("replayed"),
        "{table}"
    );
}

#[test]
fn a_damaged_recording_is_read_up_to_the_damage_and_a_newer_one_is_refused() {
    let file = record_demo("damaged", 12);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 20, "{} lines", lines.len());

    // Cut short mid-line, as a crash would leave it.
    let cut = file.with_file_name("cut.jsonl");
    let keep = lines.len() / 2;
    let mut damaged = lines[..keep].join("\n");
    damaged.push('\n');
    let half = &lines[keep][..lines[keep].len() / 2];
    damaged.push_str(half);
    std::fs::write(&cut, &damaged).unwrap();
    let (code, stdout, stderr) = replay(&cut, &["--report", "json"]);
    assert!(matches!(code, Some(0 | 1)), "it still replays: {stderr}");
    let offset = damaged.len() - half.len();
    let expected = format!(
        "read up to line {} (byte {offset}), where it is damaged: the line is cut short",
        keep + 1
    );
    assert!(stderr.contains(&expected), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["damage"].as_str().unwrap().contains(&expected));

    // A line of garbage in the middle: read up to it.
    let garbled = file.with_file_name("garbled.jsonl");
    let mut text_with_garbage: Vec<&str> = lines.clone();
    text_with_garbage[5] = "{\"k\": \"transcript\", \"at\": ";
    std::fs::write(&garbled, text_with_garbage.join("\n") + "\n").unwrap();
    let (_, _, stderr) = replay(&garbled, &[]);
    assert!(stderr.contains("read up to line 6 (byte"), "{stderr}");

    // A recording from a later format version is refused, naming it.
    let newer = file.with_file_name("newer.jsonl");
    std::fs::write(
        &newer,
        lines[0].replacen("\"version\":1", "\"version\":7", 1) + "\n" + lines[1] + "\n",
    )
    .unwrap();
    let (code, _, stderr) = replay(&newer, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("format version 7"), "{stderr}");
    assert!(stderr.contains("reads versions up to 1"), "{stderr}");

    // Not a recording at all.
    let other = file.with_file_name("other.jsonl");
    std::fs::write(&other, "{\"type\": \"transcript\"}\n").unwrap();
    let (code, _, stderr) = replay(&other, &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not a readable recording"), "{stderr}");
}

#[test]
fn a_server_recorded_from_outside_over_its_api_replays_as_it_ran() {
    let dir = fresh_dir("recording", "outside");
    let file = dir.join("outside.jsonl");
    // The feed comes up only once the recorder listens, so the recording
    // holds every line.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = Logged::spawn(
        bin()
            .args(["serve", "--no-db", "--api", "127.0.0.1:0"])
            .args(["--feed", &format!("ws://127.0.0.1:{port}/")])
            .args(["--simulate-latency", "300ms..1500ms"]),
    );
    let api = format!(
        "http://{}",
        crate::common::child::field(&serve.wait_for("API listening"), "bound")
    );
    let mut recorder = Logged::spawn(bin().args(["record", "--from", &api, "--out"]).arg(&file));
    recorder.wait_for("recording server=");
    let mut feed = Logged::spawn(bin().args([
        "feed",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--speed",
        "4",
    ]));
    feed.wait_for("listening");
    serve.wait_for_nth("processing finished", 30);
    recorder.signal(libc::SIGTERM);
    assert_eq!(recorder.exit_code(), Some(0));
    serve.stop();

    let (code, stdout, stderr) = replay(&file, &["--report", "json"]);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("{e}: {stdout}\n{stderr}");
    });
    let runs = |side: &str| report[side]["runs"].as_u64().unwrap();
    assert!(runs("recorded") >= 20, "{stdout}");
    assert!(
        report["recorded"]["sessions"].as_u64().unwrap() >= 2,
        "{stdout}"
    );
    // The recorder stops while the server runs on, so the recording ends
    // mid-stream: its totals, not every session, are held to the replay.
    assert!(
        runs("recorded").abs_diff(runs("replayed")) <= runs("recorded") / 10,
        "{stdout}"
    );
    assert!(matches!(code, Some(0 | 1)));
}
