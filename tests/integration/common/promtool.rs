//! Prometheus' own checker, `promtool` (Debian's package prometheus): what
//! a scrape would make of a `/metrics` text. On a machine without it, the
//! first test that needs it installs it (`scripts/test-deps.sh`, once per
//! process, saying so); where that cannot be done, the test fails with one
//! line saying what to install.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const MISSING: &str = "promtool is not installed and could not be: install Debian's package \
                       prometheus (sudo apt-get install prometheus)";

fn installed() -> bool {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-deps.sh");
        Command::new("bash")
            .arg(script)
            .arg("promtool")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// `promtool check metrics` on `text`: its exit status and what it said.
pub fn check_metrics(text: &str) -> Output {
    assert!(installed(), "{MISSING}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{MISSING}: {e}"));
    let mut stdin = child.stdin.take().expect("promtool's stdin");
    stdin
        .write_all(text.as_bytes())
        .expect("promtool reads the text");
    drop(stdin);
    child.wait_with_output().expect("promtool ends")
}
