//! The real binary as a child process whose log lines (stdout) a test can
//! wait for; killed when dropped.
//!
//! Every wait here has one overall deadline, counted from the call, not
//! from the last line read: a child that keeps logging without ever
//! printing the awaited line, or that never exits, is killed when the
//! deadline passes and the test fails with everything it printed. No test
//! can hang on a child.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Longest a test waits for a line it expects.
pub const LINE_LIMIT: Duration = Duration::from_secs(60);
/// Longest a test waits for a child to exit once it should.
pub const EXIT_LIMIT: Duration = Duration::from_secs(30);
/// How often a waiting test looks whether the child has exited.
const EXIT_POLL: Duration = Duration::from_millis(10);

pub struct Logged {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Logged {
    /// Starts `command` with stdout read line by line, stderr dropped.
    pub fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (from now on) containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> String {
        self.wait_for_nth(needle, 1)
    }

    /// The `n`th line (from now on) containing `needle`.
    pub fn wait_for_nth(&mut self, needle: &str, n: usize) -> String {
        let mut found = 0;
        self.wait_line(&format!("{n} × {needle:?}"), |line| {
            if line.contains(needle) {
                found += 1;
            }
            found == n
        })
    }

    /// The first line (from now on) containing `one` or `other`.
    pub fn wait_for_either(&mut self, one: &str, other: &str) -> String {
        self.wait_line(&format!("{one:?} or {other:?}"), |line| {
            line.contains(one) || line.contains(other)
        })
    }

    /// Reads lines until `done` says so, within [`LINE_LIMIT`] in all.
    fn wait_line(&mut self, what: &str, mut done: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + LINE_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if done(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    panic!(
                        "no {what} in the log within {LINE_LIMIT:?} (the child was killed):\n{}",
                        self.seen.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit();
                    panic!(
                        "no {what} in the log: the child closed its output ({status}):\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (within [`EXIT_LIMIT`]) for the exit, reading what it printed
    /// meanwhile and last; the exit code. A child still running at the
    /// deadline is killed and the test fails.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.wait_exit().code()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "the child did not exit within {EXIT_LIMIT:?} (it was killed):\n{}",
                    self.seen.join("\n")
                );
            }
            match self.lines.recv_timeout(EXIT_POLL) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Timeout) => {}
                // Output closed first: the exit follows.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(EXIT_POLL),
            }
        };
        // What it printed last; a grandchild holding the pipe open cannot
        // keep this going past the deadline.
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        status
    }

    /// SIGTERM, and a clean exit.
    pub fn stop(mut self) {
        self.signal(libc::SIGTERM);
        assert_eq!(self.exit_code(), Some(0), "{}", self.seen.join("\n"));
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `command.output()` within `limit`: the child's exit and everything it
/// wrote. A child still running at `limit` is killed and the test fails.
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still ran after {limit:?}: killed");
        }
        std::thread::sleep(EXIT_POLL);
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// [`output_within`] for a command that should finish at once.
pub fn output(command: &mut Command) -> Output {
    output_within(command, EXIT_LIMIT)
}

/// The value of `name=` in a log line (quotes taken off).
pub fn field(line: &str, name: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        .trim_matches('"')
        .to_string()
}

/// The real binary, logging at info without colour, for `Logged::spawn`.
pub fn inflight() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_inflight"));
    command.env("RUST_LOG", "info").env("NO_COLOR", "1");
    command
}

/// A fresh, empty folder of this process's own for a test.
pub fn fresh_dir(subject: &str, name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("inflight-{subject}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
