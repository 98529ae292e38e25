//! The real binary in a pseudo-terminal: the dashboard comes up on the
//! embedded demo, answers keys, gives the terminal back on `q`, on SIGTERM,
//! SIGHUP and a panic on the UI thread, and keeps NO_COLOR; `inflight
//! attach` follows a real `inflight serve` through its death and restart.
//!
//! "Gives the terminal back" is checked three ways: the alternate screen is
//! left, the cursor is shown again, and the terminal's own mode (termios,
//! read from the pty) is cooked again, with line editing and echo.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};

const ROWS: u16 = 30;
const COLS: u16 = 110;
const LEAVE_ALTERNATE_SCREEN: &[u8] = b"\x1b[?1049l";
const HIDE_CURSOR: &[u8] = b"\x1b[?25l";
const SHOW_CURSOR: &[u8] = b"\x1b[?25h";

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// The pty's line discipline: canonical input (line editing) and echo.
#[derive(Debug, PartialEq)]
struct LineMode {
    canonical: bool,
    echo: bool,
}

const COOKED: LineMode = LineMode {
    canonical: true,
    echo: true,
};
const RAW: LineMode = LineMode {
    canonical: false,
    echo: false,
};

struct Dashboard {
    child: Box<dyn Child + Send + Sync>,
    /// Kept open for as long as the test runs, so the pty's mode can still
    /// be read after the child exits.
    master: Box<dyn MasterPty + Send>,
    writer: Box<dyn Write + Send>,
    output: mpsc::Receiver<Vec<u8>>,
    parser: vt100::Parser,
    raw: Vec<u8>,
}

impl Dashboard {
    fn start(envs: &[(&str, &str)]) -> Self {
        // Long runs, so a trigger always finds or leaves something to cancel.
        Self::run(&["--demo-speed", "4", "--simulate-latency", "30s"], envs)
    }

    /// The binary with `args` in a pty of its own.
    fn run(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pty");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_inflight"));
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        cmd.env_remove("NO_COLOR");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = pty.slave.spawn_command(cmd).expect("the binary starts");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().expect("a reader");
        let writer = pty.master.take_writer().expect("a writer");
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Self {
            child,
            master: pty.master,
            writer,
            output,
            parser: vt100::Parser::new(ROWS, COLS, 0),
            raw: Vec::new(),
        }
    }

    fn screen(&self) -> String {
        self.parser.screen().contents()
    }

    /// Reads output until `done` holds for the screen, or panics after 20 s.
    fn wait_for(&mut self, what: &str, done: impl Fn(&vt100::Screen) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self.parser.screen()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => {
                    self.parser.process(&chunk);
                    self.raw.extend_from_slice(&chunk);
                }
                Err(_) => panic!("timed out waiting for {what}; screen:\n{}", self.screen()),
            }
        }
    }

    fn press(&mut self, keys: &str) {
        self.writer
            .write_all(keys.as_bytes())
            .expect("keys reach the pty");
        self.writer.flush().expect("keys flushed");
    }

    /// Waits for the process to end, draining its output; returns success.
    fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            while let Ok(chunk) = self.output.try_recv() {
                self.parser.process(&chunk);
                self.raw.extend_from_slice(&chunk);
            }
            if let Some(status) = self.child.try_wait().expect("child status") {
                // Collect what was written just before exit.
                while let Ok(chunk) = self.output.recv_timeout(Duration::from_millis(200)) {
                    self.raw.extend_from_slice(&chunk);
                }
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "the dashboard did not exit; screen:\n{}",
                self.screen()
            );
            if let Ok(chunk) = self.output.recv_timeout(Duration::from_millis(50)) {
                self.raw.extend_from_slice(&chunk);
            }
        }
    }

    fn line_mode(&self) -> LineMode {
        let fd = self.master.as_raw_fd().expect("the pty's fd");
        // SAFETY: `termios` is plain data that tcgetattr fills in; the fd
        // belongs to `self.master`, which is open.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::tcgetattr(fd, &mut termios) }, 0, "tcgetattr");
        LineMode {
            canonical: termios.c_lflag & libc::ICANON != 0,
            echo: termios.c_lflag & libc::ECHO != 0,
        }
    }

    /// The dashboard is up: raw mode, hidden cursor.
    fn assert_took_the_terminal(&self) {
        assert_eq!(self.line_mode(), RAW, "the dashboard runs in raw mode");
        assert!(find_last(&self.raw, HIDE_CURSOR).is_some(), "cursor hidden");
    }

    /// After exit: the alternate screen left, the cursor shown after it was
    /// last hidden, and the line discipline cooked again.
    fn assert_gave_the_terminal_back(&self, how: &str) {
        assert!(
            find_last(&self.raw, LEAVE_ALTERNATE_SCREEN).is_some(),
            "{how}: the alternate screen is left"
        );
        let hidden = find_last(&self.raw, HIDE_CURSOR).expect("the cursor was hidden");
        assert!(
            find_last(&self.raw, SHOW_CURSOR).is_some_and(|shown| shown > hidden),
            "{how}: the cursor is shown again"
        );
        assert_eq!(self.line_mode(), COOKED, "{how}: raw mode is off");
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn the_dashboard_triggers_cancels_and_quits() {
    let mut ui = Dashboard::start(&[]);
    ui.wait_for("the sessions table", |s| {
        s.contents().contains("garden-coop") && s.contents().contains("Summary")
    });
    assert!(
        ui.screen().contains("builtin (simulated)"),
        "the builtin backend says what it is"
    );

    ui.press("t");
    ui.wait_for("the trigger's answer", |s| {
        let text = s.contents();
        text.contains("summary started") || text.contains("summary pending")
    });
    ui.press("c");
    ui.wait_for("the cancel's answer", |s| {
        s.contents().contains("summary cancelled (run")
    });

    ui.press("?");
    ui.wait_for("help", |s| s.contents().contains("Keys · Esc or ? closes"));
    ui.press("\x1b");
    ui.wait_for("help closed", |s| {
        !s.contents().contains("Keys · Esc or ? closes")
    });

    ui.assert_took_the_terminal();
    ui.press("q");
    assert!(ui.wait_exit(), "q exits cleanly");
    ui.assert_gave_the_terminal_back("q");
}

#[test]
fn no_color_keeps_the_selection_visible_without_colour() {
    let mut ui = Dashboard::start(&[("NO_COLOR", "1")]);
    ui.wait_for("the sessions table", |s| {
        s.contents().contains("garden-coop")
    });
    let screen = ui.parser.screen().clone();
    let mut selected_rows = 0;
    for row in 0..ROWS {
        let mut inverse = false;
        for col in 0..COLS {
            if let Some(cell) = screen.cell(row, col) {
                assert_eq!(
                    cell.fgcolor(),
                    vt100::Color::Default,
                    "no colour at {row},{col}"
                );
                assert_eq!(
                    cell.bgcolor(),
                    vt100::Color::Default,
                    "no colour at {row},{col}"
                );
                inverse |= cell.inverse();
            }
        }
        if inverse {
            selected_rows += 1;
        }
    }
    assert_eq!(
        selected_rows, 1,
        "exactly the selected row is in reverse video"
    );
    ui.press("q");
    assert!(ui.wait_exit());
}

#[test]
fn sigterm_and_sighup_give_the_terminal_back() {
    for signal in ["-TERM", "-HUP"] {
        let mut ui = Dashboard::start(&[]);
        ui.wait_for("the sessions table", |s| s.contents().contains("Sessions"));
        ui.assert_took_the_terminal();
        let pid = ui.child.process_id().expect("a pid");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        assert!(ui.wait_exit(), "{signal} ends the dashboard cleanly");
        ui.assert_gave_the_terminal_back(signal);
    }
}

#[test]
fn a_panic_on_the_ui_thread_gives_the_terminal_back() {
    let mut ui = Dashboard::start(&[("INFLIGHT_TEST_PANIC", "ui")]);
    assert!(!ui.wait_exit(), "a panic is a failure");
    ui.assert_gave_the_terminal_back("a panic");
    // The hook leaves the alternate screen first, so the message stays on
    // the screen the operator gets back (the guard's own restore follows).
    let left = ui
        .raw
        .windows(LEAVE_ALTERNATE_SCREEN.len())
        .position(|w| w == LEAVE_ALTERNATE_SCREEN)
        .unwrap();
    let after = String::from_utf8_lossy(&ui.raw[left..]);
    assert!(
        after.contains("a panic on the UI thread, as asked"),
        "the panic message is printed on the restored screen: {after:?}"
    );
}

use crate::common::child;

/// `inflight serve` on the demo at `port`, with an operator's and a viewer's
/// token; mind maps only when triggered (its config file says so), so a
/// mind map asked for from the keyboard starts.
fn serve_on(port: u16) -> child::Logged {
    let config =
        std::env::temp_dir().join(format!("inflight-pty-{}-{port}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[[operations]]\nname = \"mind_map\"\nwhen = \"manual\"\n",
    )
    .unwrap();
    let mut serve = child::Logged::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_inflight"))
            .args(["serve", "--no-db", "--demo-speed", "4", "--config"])
            .arg(&config)
            .args(["--simulate-latency", "30s"])
            .args(["--api", &format!("127.0.0.1:{port}")])
            .args(["--api-token", "op", "--api-read-token", "view"])
            .env("RUST_LOG", "info"),
    );
    serve.wait_for("API listening");
    serve
}

/// The rows of the sessions table that show `session` (its feed column
/// tells them from the message line).
fn rows_of(screen: &str, session: &str) -> Vec<String> {
    screen
        .lines()
        .filter(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some(session) && words.next().is_some_and(|w| w.starts_with('#'))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn attach_follows_a_server_through_its_death_and_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut serve = serve_on(port);
    let mut attach = Dashboard::run(&["attach", &url], &[("INFLIGHT_API_TOKEN", "op")]);
    attach.wait_for("the server's sessions", |s| {
        s.contents().contains("connected") && s.contents().contains("garden-coop")
    });
    assert!(attach.screen().contains(&format!("127.0.0.1:{port}")));

    // The first row's mind map, from the keyboard: a run starts there.
    attach.press("2");
    attach.wait_for("the trigger's answer", |s| {
        s.contents().contains("garden-coop · mind map started (run")
    });
    attach.wait_for("both runs in the row", |s| {
        rows_of(&s.contents(), "garden-coop")
            .first()
            .is_some_and(|row| row.matches("▶ run").count() == 2)
    });

    // The server dies: the last picture stays, marked.
    let _ = serve.child.kill();
    let _ = serve.child.wait();
    attach.wait_for("the disconnected mark", |s| {
        s.contents().contains("disconnected")
    });
    assert_eq!(
        rows_of(&attach.screen(), "garden-coop").len(),
        1,
        "{}",
        attach.screen()
    );

    // It comes back: live again, each session once.
    let _serve = serve_on(port);
    attach.wait_for("the link back", |s| {
        let text = s.contents();
        text.contains("connected") && !text.contains("disconnected")
    });
    let sessions = [
        "garden-coop",
        "hiring-sync",
        "incident-retro",
        "launch-review",
    ];
    attach.wait_for("every one of the new server's sessions", |s| {
        let text = s.contents();
        sessions
            .iter()
            .all(|session| !rows_of(&text, session).is_empty())
    });
    let screen = attach.screen();
    for session in sessions {
        assert_eq!(
            rows_of(&screen, session).len(),
            1,
            "{session} once:\n{screen}"
        );
    }
    attach.press("q");
    assert!(attach.wait_exit(), "attach quits cleanly");
}

#[test]
fn attached_with_a_viewer_token_triggers_are_off_and_the_screen_says_why() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _serve = serve_on(port);
    let mut attach = Dashboard::run(
        &["attach", &format!("http://127.0.0.1:{port}")],
        &[("INFLIGHT_API_TOKEN", "view")],
    );
    attach.wait_for("the hint bar's reason", |s| {
        s.contents()
            .contains("read-only: attached with a viewer's token")
            && s.contents().contains("garden-coop")
    });
    attach.press("2");
    attach.wait_for("the refusal", |s| {
        s.contents().contains("triggers and cancels are off")
    });
    assert!(
        !attach.screen().contains("mind map started"),
        "{}",
        attach.screen()
    );
    attach.press("q");
    assert!(attach.wait_exit());
}

use crate::common::scripted;

/// An OpenAI-compatible server that answers summaries and refuses every
/// mind map the way llama-cpp-python refuses `response_format` (the body
/// it was seen to send), on every rung of the format ladder.
fn refusing_mind_maps() -> scripted::Script {
    use serde_json::json;
    std::sync::Arc::new(|_, request: &scripted::Recorded| {
        if request.path.ends_with("/models") {
            return scripted::json_response("200 OK", &json!({"data": [{"id": "m"}]}));
        }
        if request.body.to_string().contains("mind map") {
            return scripted::json_response(
                "500 Internal Server Error",
                &json!({"error": {
                    "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}",
                    "type": "internal_server_error", "param": null, "code": null
                }}),
            );
        }
        let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
            json!({"model": "m", "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        vec![
            scripted::head("200 OK", "text/event-stream", &[]),
            scripted::send(&format!(
                "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
                chunk(json!({"content": "They talked."}), serde_json::Value::Null),
                chunk(json!({}), json!("stop"))
            )),
        ]
    })
}

#[test]
fn a_server_refusing_mind_maps_has_its_reason_on_the_screen() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(scripted::start(refusing_mind_maps()));
    let url = server.url();
    let mut dashboard = Dashboard::run(
        &[
            "--demo-speed",
            "8",
            "--no-db",
            "--llm",
            "openai",
            "--llm-url",
            &url,
            "--model",
            "m",
            "--llm-concurrency",
            "2",
        ],
        &[],
    );
    // The table says the short cause (beside the retry it waits for), and
    // the message line says it once.
    dashboard.wait_for("the cause in the table", |s| {
        s.contents().contains("↻1 ✗ 500")
    });
    dashboard.wait_for("one line for the shared cause", |s| {
        s.contents().contains("mind map failing in") && s.contents().contains("500 response_format")
    });
    // The details show the server's own words.
    dashboard.press("\r");
    dashboard.wait_for("the server's reason in the details", |s| {
        let text = s.contents();
        text.contains("failed") && text.contains("Input should be 'text'")
    });
    dashboard.press("q");
    assert!(dashboard.wait_exit());
    drop(server);
}

/// A config with action items (json, with a schema), decisions at the end,
/// and the summary, without the mind map; its path.
fn operations_config() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("inflight-pty-ops-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        r#"
[runs]
ops = ["summary", "action_items", "decisions"]

[[operations]]
name = "action_items"
label = "Actions"
key = "3"
schema = { type = "object", properties = { items = { type = "array", items = { type = "object", properties = { owner = { type = "string" }, task = { type = "string" } }, required = ["owner", "task"] } } }, required = ["items"] }

[[operations]]
name = "decisions"
key = "4"
when = "end"
"#,
    )
    .unwrap();
    path
}

/// The table's header line: the columns shown.
fn header_of(screen: &str) -> String {
    screen
        .lines()
        .find(|l| l.trim_start().starts_with("! Session"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_config_files_operations_have_their_columns_keys_and_details() {
    let config = operations_config();
    let config = config.to_str().unwrap();
    let mut ui = Dashboard::run(
        &[
            "--demo-speed",
            "8",
            "--simulate-latency",
            "200ms",
            "--config",
            config,
        ],
        &[],
    );
    ui.wait_for("an action item in a session's details", |s| {
        s.contents().contains("garden-coop")
    });
    let header = header_of(&ui.screen());
    assert!(
        header.contains("Summary") && header.contains("Actions") && header.contains("Decisions"),
        "{header}"
    );
    assert!(!header.contains("Mind map"), "not chosen: {header}");
    // The operation's own key runs it.
    ui.press("3");
    ui.wait_for("the trigger's answer", |s| {
        let text = s.contents();
        text.contains("action items started") || text.contains("action items pending")
    });
    // Details: one pane per operation, the action items as a list.
    ui.press("\r");
    ui.wait_for("the action items listed", |s| {
        let text = s.contents();
        text.contains(" Actions · covers") && text.contains("• owner: ")
    });
    assert!(ui.screen().contains("no decisions yet"), "{}", ui.screen());
    ui.press("?");
    ui.wait_for("help with the operations' keys", |s| {
        s.contents().contains("run actions") && s.contents().contains("run decisions")
    });
    ui.press("\x1b");
    ui.press("q");
    assert!(ui.wait_exit());
}

#[test]
fn attach_draws_the_servers_operations_not_its_own() {
    let config = operations_config();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = child::Logged::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_inflight"))
            .args(["serve", "--no-db", "--demo-speed", "8", "--config"])
            .arg(&config)
            .args(["--simulate-latency", "200ms"])
            .args(["--api", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info"),
    );
    serve.wait_for("API listening");
    // The attaching process has no config file: the columns are the server's.
    let mut attach = Dashboard::run(&["attach", &format!("http://127.0.0.1:{port}")], &[]);
    attach.wait_for("the server's sessions", |s| {
        s.contents().contains("connected") && s.contents().contains("garden-coop")
    });
    let header = header_of(&attach.screen());
    assert!(
        header.contains("Actions") && header.contains("Decisions") && !header.contains("Mind map"),
        "{header}"
    );
    attach.press("\r");
    attach.wait_for("the action items listed", |s| {
        s.contents().contains(" Actions · covers") && s.contents().contains("• owner: ")
    });
    attach.press("q");
    assert!(attach.wait_exit());
}

#[test]
fn a_spent_budget_shows_the_spend_overlay_ranks_it_and_plus_raises_it_and_b_lifts_it() {
    // The builtin backend prices as `extractive`; a meeting's budget of
    // 400 tokens is spent within a few lines.
    let config =
        std::env::temp_dir().join(format!("inflight-pty-spend-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        r#"
[[prices]]
model = "extractive"
prompt_per_million = 1000
completion_per_million = 4000

[budgets]
session_tokens = 400
"#,
    )
    .unwrap();
    let mut ui = Dashboard::run(
        &[
            "--demo-speed",
            "8",
            "--simulate-latency",
            "100ms",
            "--no-db",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    ui.wait_for("a session past its budget", |s| {
        s.contents().contains("⊘ budget")
    });
    assert!(header_of(&ui.screen()).contains("Cost"), "{}", ui.screen());
    ui.press("$");
    ui.wait_for("the spend overlay", |s| {
        let text = s.contents();
        text.contains("Spend in USD") && text.contains("by session")
    });
    ui.press("\x1b");
    ui.wait_for("the overlay closed", |s| {
        !s.contents().contains("Spend in USD")
    });
    // Select the first session that is past its budget, and lift it.
    let first = ui
        .screen()
        .lines()
        .position(|l| l.contains("⊘ budget"))
        .expect("a row past its budget");
    let top = ui
        .screen()
        .lines()
        .position(|l| l.trim_start().starts_with("! Session"))
        .expect("the header")
        + 1;
    ui.press(&"j".repeat(first - top));
    ui.press("+");
    ui.wait_for("the raise's answer", |s| {
        s.contents().contains("budget raised by 400 tokens in all")
    });
    ui.press("B");
    ui.wait_for("the lift's answer", |s| {
        s.contents().contains("budget lifted: its runs go on")
    });
    ui.press("q");
    assert!(ui.wait_exit(), "q exits cleanly");
    let _ = std::fs::remove_file(&config);
}

/// A recording of two meetings, built with the recording's own types:
/// `early` speaks from the start, `late` from 40 s in; each line's summary
/// call takes a second. It starts at 12:00:00 UTC.
fn two_meeting_recording(path: &std::path::Path) {
    use inflight::model::{Operation, SessionId};
    use inflight::record::{Answer, Line, Record, Settings};
    let config = inflight::engine::EngineConfig {
        automatic_ops: vec![Operation::SUMMARY],
        ..Default::default()
    };
    let started_unix_us = 1_796_472_000_000_000; // a day at 12:00:00 UTC
    let mut records = vec![Record::Header {
        version: inflight::record::FORMAT_VERSION,
        inflight: "test".into(),
        started_unix_us,
        settings: Settings::of(&config),
    }];
    for (name, from) in [("early-meeting", 0u64), ("late-meeting", 40)] {
        let session = SessionId::parse(name).unwrap();
        for n in 0..10u64 {
            let at = (from + 2 * n + 1) * 1_000_000;
            records.push(Record::Transcript {
                at,
                feed: Some(0),
                line: Line {
                    session: session.clone(),
                    seq: Some(n + 1),
                    text: format!("{name} line {n}"),
                    speaker: None,
                    start: None,
                    end: None,
                    is_final: true,
                    kind: None,
                },
            });
            records.push(Record::Llm {
                at,
                session: session.clone(),
                op: Operation::SUMMARY,
                first: Some(at + 200_000),
                end: at + 1_000_000,
                answer: Answer::Text {
                    text: format!("{name} so far"),
                    model: "m".into(),
                    truncated: false,
                },
                usage: Default::default(),
            });
        }
    }
    records.sort_by_key(|r| r.at().unwrap_or(0));
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_replay_plays_pauses_steps_and_seeks_showing_the_recorded_clock_and_its_sessions() {
    let dir = crate::common::child::fresh_dir("pty", "replay");
    let file = dir.join("two.jsonl");
    two_meeting_recording(&file);
    let mut ui = Dashboard::run(&["replay", file.to_str().unwrap(), "--speed", "10"], &[]);
    // Playing at 10×: the early meeting, then the late one as its time comes.
    ui.wait_for("the replay's clock and the early meeting", |s| {
        let text = s.contents();
        text.contains("replay 12:00:") && text.contains("▶ 10×") && text.contains("early-meeting")
    });
    assert!(
        ui.screen().contains("p play/pause"),
        "the keys are in the hint bar"
    );
    ui.wait_for("the late meeting, forty seconds in", |s| {
        s.contents().contains("late-meeting")
    });
    // Paused: the clock stands.
    ui.press("p");
    ui.wait_for("paused", |s| s.contents().contains("⏸ paused"));
    let clock = |screen: &str| {
        let at = screen.find("replay 12:").expect("the recorded clock");
        screen[at + 7..at + 15].to_string()
    };
    let paused_at = clock(&ui.screen());
    // Back to the fifth second: the late meeting has not begun.
    ui.press("T");
    ui.press("5\r");
    ui.wait_for("the moment five seconds in", |s| {
        let text = s.contents();
        text.contains("replay 12:00:05 UTC") && !text.contains("late-meeting")
    });
    assert!(ui.screen().contains("early-meeting"), "{}", ui.screen());
    assert!(paused_at.as_str() > "12:00:05", "{paused_at}");
    // A step moves to the next recorded moment (the line at 7 s) and
    // stays paused.
    ui.press(".");
    ui.wait_for("a step on", |s| {
        let text = s.contents();
        text.contains("replay 12:00:07 UTC") && text.contains("⏸ paused")
    });
    // Ten seconds on, and back.
    ui.press(">");
    ui.wait_for("ten seconds on", |s| {
        s.contents().contains("replay 12:00:17 UTC")
    });
    ui.press("<");
    ui.wait_for("ten seconds back", |s| {
        s.contents().contains("replay 12:00:07 UTC")
    });
    // Nothing recorded can be changed.
    ui.press("t");
    ui.wait_for("the refusal", |s| s.contents().contains("a replay"));
    ui.press("q");
    assert!(ui.wait_exit(), "q exits cleanly");
}
