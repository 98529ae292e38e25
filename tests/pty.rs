//! The real binary in a pseudo-terminal: the dashboard comes up on the
//! embedded demo, answers keys, gives the terminal back on `q` and on
//! SIGTERM, and keeps NO_COLOR.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use portable_pty::{Child, CommandBuilder, PtySize, native_pty_system};

const ROWS: u16 = 30;
const COLS: u16 = 110;
const LEAVE_ALTERNATE_SCREEN: &[u8] = b"\x1b[?1049l";

struct Dashboard {
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    output: mpsc::Receiver<Vec<u8>>,
    parser: vt100::Parser,
    raw: Vec<u8>,
}

impl Dashboard {
    fn start(envs: &[(&str, &str)]) -> Self {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pty");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_inflight"));
        // Long runs, so a trigger always finds or leaves something to cancel.
        cmd.args(["--demo-speed", "4", "--simulate-latency", "30s"]);
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
            let _keep_master = pty.master;
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

    fn restored_terminal(&self) -> bool {
        self.raw
            .windows(LEAVE_ALTERNATE_SCREEN.len())
            .any(|w| w == LEAVE_ALTERNATE_SCREEN)
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

    ui.press("q");
    assert!(ui.wait_exit(), "q exits cleanly");
    assert!(ui.restored_terminal(), "the alternate screen is left");
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
        let pid = ui.child.process_id().expect("a pid");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        assert!(ui.wait_exit(), "{signal} ends the dashboard cleanly");
        assert!(
            ui.restored_terminal(),
            "{signal} leaves the alternate screen"
        );
    }
}
