//! The real binary refusing what it cannot do: each case exits non-zero
//! before starting anything, with one clear line on stderr.

use std::process::{Command, Stdio};

/// Runs the binary with `args`, no terminal, no `INFLIGHT_*` variables;
/// returns its exit code and stderr.
fn refuse(args: &[&str]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_inflight"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("INFLIGHT_") {
            command.env_remove(name);
        }
    }
    let output = crate::common::child::output(command.args(args).stdin(Stdio::null()));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_dashboard_without_a_terminal() {
    let (code, err) = refuse(&["--no-db"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the dashboard needs a terminal"), "{err}");
    let (code, err) = refuse(&["attach"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the dashboard needs a terminal"), "{err}");
}

#[test]
fn a_remote_model_without_a_name() {
    let (code, err) = refuse(&[
        "serve",
        "--no-db",
        "--llm",
        "ollama",
        "--api",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--llm ollama needs --model NAME"), "{err}");
}

#[test]
fn a_public_api_without_a_token() {
    let (code, err) = refuse(&["serve", "--no-db", "--api", "0.0.0.0:0"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refusing to serve the API on 0.0.0.0:0 without a token"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_in_the_config_file() {
    let path = std::env::temp_dir().join(format!("inflight-failures-{}.toml", std::process::id()));
    std::fs::write(&path, "[runs]\non_bsy = \"skip\"\n").unwrap();
    let (code, err) = refuse(&["serve", "--no-db", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(":2: unknown key `on_bsy` in [runs]"), "{err}");
}

#[test]
fn a_bad_feed_url() {
    for (url, why) in [
        ("not a url", "is not a URL"),
        ("http://feeds.example.com/live", "is not a WebSocket URL"),
    ] {
        let (code, err) = refuse(&["serve", "--no-db", "--feed", url]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("for '--feed <URL>'") && err.contains(why),
            "{err}"
        );
    }
}

#[test]
fn a_bad_duration() {
    let (code, err) = refuse(&["serve", "--no-db", "--op-timeout", "soon"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("\"soon\" is not a duration") && err.contains("300s or 2m"),
        "{err}"
    );
    let (code, err) = refuse(&["serve", "--no-db", "--idle-after", "0s"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("must be above zero"), "{err}");
}
