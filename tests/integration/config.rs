//! The config file on the real binary: precedence (flag > variable > file >
//! default) as `config show` reports it and as `serve` uses it, `config
//! check` on good and bad files, and the documented example file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use inflight::config::file::KEYS;

use crate::common::child;

/// A file of its own under the temp folder, holding `text`.
fn write_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("inflight-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp folder");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path
}

/// The binary with no `INFLIGHT_*` variable of the test's own environment.
fn inflight() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_inflight"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("INFLIGHT_") {
            command.env_remove(name);
        }
    }
    command
}

fn run(command: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = child::output(command);
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// The line of `config show` for `key`, squeezed: `concurrency = 2 # file, line 3`.
fn shown(out: &str, key: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"));
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn one_setting_given_three_ways_takes_the_flag_then_the_variable_then_the_file() {
    let file = write_file(
        "precedence.toml",
        "[runs]\non_busy = \"skip\"\n[llm]\nconcurrency = 2\n",
    );
    let file = file.to_str().unwrap();

    let (code, out, err) = run(inflight().args(["config", "show"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(shown(&out, "concurrency"), "concurrency = 4 # default");

    let (_, out, _) = run(inflight().args(["config", "show", "--config", file]));
    assert_eq!(shown(&out, "concurrency"), "concurrency = 2 # file, line 4");
    assert_eq!(shown(&out, "on_busy"), "on_busy = \"skip\" # file, line 2");

    let (_, out, _) = run(inflight()
        .args(["config", "show", "--config", file])
        .env("INFLIGHT_LLM_CONCURRENCY", "3"));
    assert_eq!(
        shown(&out, "concurrency"),
        "concurrency = 3 # INFLIGHT_LLM_CONCURRENCY"
    );

    let (_, out, _) = run(inflight()
        .args(["config", "show", "--config", file, "--llm-concurrency", "5"])
        .env("INFLIGHT_LLM_CONCURRENCY", "3"));
    assert_eq!(
        shown(&out, "concurrency"),
        "concurrency = 5 # --llm-concurrency"
    );
    // The other file setting still holds.
    assert_eq!(shown(&out, "on_busy"), "on_busy = \"skip\" # file, line 2");
}

#[test]
fn show_masks_secrets() {
    let token = write_file("show-token", "s3cret-token\n");
    let file = write_file(
        "secrets.toml",
        &format!(
            "[feed]\nurls = [\"ws://u:pw@127.0.0.1:9/x?token=t0p\"]\nheaders = {{ Authorization = \"Bearer b34rer\" }}\n\
[api]\ntoken_file = {:?}\n[cluster]\nredis = \"redis://:r3dis-pw@127.0.0.1:6379/0\"\n",
            token.to_str().unwrap()
        ),
    );
    let (code, out, err) = run(inflight()
        .args(["config", "show", "--config"])
        .arg(&file)
        .env("INFLIGHT_API_TOKEN_FILE", &token));
    assert_eq!(code, 0, "{err}");
    for secret in ["s3cret-token", "pw@", "t0p", "b34rer", "r3dis-pw"] {
        assert!(!out.contains(secret), "{secret} shown:\n{out}");
    }
    assert!(out.contains("\"Authorization\" = \"****\""), "{out}");
    assert!(
        shown(&out, "token_file").ends_with("# INFLIGHT_API_TOKEN_FILE"),
        "{out}"
    );
}

#[test]
fn serve_uses_the_file_with_its_token_from_a_file() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = write_file("serve-token", "file-token\n");
    let file = write_file(
        "serve.toml",
        &format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = {:?}\n[database]\nenabled = false\n",
            token.to_str().unwrap()
        ),
    );
    let mut serve = child::Logged::spawn(
        inflight()
            .args(["serve", "--config"])
            .arg(&file)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    );
    let line = serve.wait_for("API listening");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    inflight::net::install_crypto();
    let url = format!("http://127.0.0.1:{port}/api/sessions");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (without, with) = runtime.block_on(async {
        let client = reqwest::Client::new();
        let without = client.get(&url).send().await.unwrap().status().as_u16();
        let with = client
            .get(&url)
            .bearer_auth("file-token")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        (without, with)
    });
    assert_eq!((without, with), (401, 200));
    assert!(
        !serve.seen.iter().any(|l| l.contains("database open")),
        "enabled = false keeps it in memory:\n{}",
        serve.seen.join("\n")
    );
}

#[test]
fn check_refuses_an_unknown_key_with_its_line() {
    let file = write_file("unknown.toml", "[llm]\nmodel = \"m\"\nmodle = \"m\"\n");
    let (code, out, err) = run(inflight().args(["config", "check"]).arg(&file));
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!(
            "{}:3: unknown key `modle` in [llm]",
            file.display()
        )),
        "{err}"
    );

    // serve refuses it the same way, before starting anything.
    let (code, _, err) = run(inflight().args(["serve", "--config"]).arg(&file));
    assert_eq!(code, 1);
    assert!(err.contains(":3: unknown key `modle`"), "{err}");
}

#[test]
fn check_names_the_line_of_a_bad_value_and_of_a_token_in_the_file() {
    let file = write_file("bad-value.toml", "[runs]\n\ntimeout = \"soon\"\n");
    let (code, _, err) = run(inflight().args(["config", "check"]).arg(&file));
    assert_eq!(code, 1);
    assert!(
        err.contains(":3: runs.timeout: \"soon\" is not a duration"),
        "{err}"
    );

    let file = write_file("token.toml", "[api]\ntoken = \"s3cret\"\n");
    let (code, _, err) = run(inflight().args(["config", "check"]).arg(&file));
    assert_eq!(code, 1);
    assert!(err.contains(":2: unknown key `token` in [api]"), "{err}");
    assert!(err.contains("token_file"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");

    // Settings that do not go together.
    let file = write_file("together.toml", "[llm]\nbackend = \"ollama\"\n");
    let (code, _, err) = run(inflight().args(["config", "check"]).arg(&file));
    assert_eq!(code, 1);
    assert!(err.contains("needs --model"), "{err}");
}

#[test]
fn a_file_defining_more_operations_than_a_process_knows_is_refused_at_the_first_too_many() {
    // 2 built in, so the 63rd definition is the 65th name.
    let file_text: String = (0..70)
        .map(|i| format!("[[operations]]\nname = \"op{i}\"\noutput = \"text\"\n\n"))
        .collect();
    let file = write_file("many-ops.toml", &file_text);
    let (code, _, err) = run(inflight().args(["config", "check"]).arg(&file));
    assert_eq!(code, 1);
    assert!(
        err.contains(
            ":250: operations.op62.name: \"op62\" is one operation name too many: at most 64"
        ),
        "{err}"
    );
}

#[test]
fn the_example_file_checks_and_names_every_key() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/inflight.example.toml");
    let (code, out, err) = run(inflight().args(["config", "check"]).arg(&example));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok ("), "{out}");

    let text = std::fs::read_to_string(&example).unwrap();
    let mut section = "";
    let mut named = Vec::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else if let Some((key, _)) = line.split_once(" = ") {
            named.push(format!("{section}.{key}"));
        }
    }
    for key in KEYS {
        let full = format!("{}.{}", key.section, key.name);
        assert!(named.contains(&full), "the example lacks {full}");
    }
}

#[test]
fn the_unit_file_starts_serve_with_flags_that_parse_and_room_to_drain() {
    use clap::Parser;
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/inflight.service"),
    )
    .unwrap();
    let value = |key: &str| -> &str {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
    };
    let exec: Vec<&str> = value("ExecStart").split_whitespace().collect();
    let cli = inflight::config::Cli::try_parse_from(&exec).expect("ExecStart parses");
    let Some(inflight::config::Command::Serve(args)) = cli.command else {
        panic!("ExecStart runs serve: {exec:?}")
    };
    let stop = humantime::parse_duration(value("TimeoutStopSec")).unwrap();
    // Feeds get 5 s to close, runs get the drain timeout, the API 5 s more.
    assert!(
        stop >= args.drain_timeout + std::time::Duration::from_secs(10),
        "TimeoutStopSec {stop:?} leaves no room for --drain-timeout {:?}",
        args.drain_timeout
    );
    for hardening in [
        "DynamicUser=yes",
        "StateDirectory=inflight",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
    ] {
        assert!(
            unit.lines().any(|l| l == hardening),
            "the unit lacks {hardening}"
        );
    }
}

#[test]
fn a_budget_in_money_without_prices_is_refused_at_start_and_bad_amounts_are_named() {
    let (code, _, err) = run(inflight().args([
        "serve",
        "--no-db",
        "--api",
        "127.0.0.1:0",
        "--budget-session-cost",
        "0.50",
    ]));
    assert_ne!(code, 0);
    assert!(err.contains("a budget in money needs prices"), "{err}");
    let (code, _, err) = run(inflight().args(["serve", "--no-db", "--budget-cost-per-hour=-1"]));
    assert_ne!(code, 0);
    assert!(err.contains("is not an amount"), "{err}");
    let (code, _, err) = run(inflight().args(["serve", "--no-db", "--budget-session-tokens", "0"]));
    assert_ne!(code, 0);
    assert!(err.contains("budget-session-tokens"), "{err}");
}
