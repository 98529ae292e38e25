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
    super::test_deps::installed("promtool")
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

/// `promtool check rules` on a rules file.
pub fn check_rules(path: &std::path::Path) -> Output {
    assert!(installed(), "{MISSING}");
    Command::new("promtool")
        .args(["check", "rules"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{MISSING}: {e}"))
}

/// A real Prometheus server (the same package) of the test's own, on a free
/// loopback port, scraping one target every second with `rules` loaded;
/// killed when dropped.
pub struct Prometheus {
    child: std::process::Child,
    pub url: String,
}

impl Prometheus {
    pub fn scraping(target: &str, rules: &std::path::Path, dir: &std::path::Path) -> Self {
        assert!(installed(), "{MISSING}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [{rules:?}]\n\
                 scrape_configs:\n  - job_name: inflight\n    static_configs:\n      \
                 - targets: [{target:?}]\n"
            ),
        )
        .expect("prometheus.yml written");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("prometheus does not start: {e}"));
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
