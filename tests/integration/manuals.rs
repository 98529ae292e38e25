//! The command line's conventions, from the real binary: shell completions
//! and man pages generated from the same clap definitions name every flag
//! of every command, and `--version` says which build it is.

use crate::common::child::{fresh_dir, inflight as bin, output};
use clap::CommandFactory;

/// Every command as the path of names below `inflight` (the root is
/// empty), with its long flags.
fn commands() -> Vec<(Vec<String>, Vec<String>)> {
    let mut root = inflight::config::Cli::command();
    root.build();
    let mut found = Vec::new();
    let mut queue = vec![(Vec::<String>::new(), root)];
    while let Some((path, command)) = queue.pop() {
        let flags = command
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|long| !["help", "version"].contains(long))
            .map(str::to_string)
            .collect();
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let mut below = path.clone();
            below.push(sub.get_name().to_string());
            queue.push((below, sub.clone()));
        }
        found.push((path, flags));
    }
    found
}

fn stdout_of(args: &[&str]) -> String {
    let out = output(bin().args(args));
    assert!(out.status.success(), "inflight {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_for_bash_zsh_and_fish_name_every_flag_of_every_command() {
    let all = commands();
    assert!(all.len() >= 10, "{} commands", all.len());
    assert!(
        all.iter()
            .any(|(path, flags)| path == &["serve"] && flags.contains(&"feed".into())),
        "serve --feed is among them"
    );
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        let mut missing = Vec::new();
        for (path, flags) in &all {
            for long in flags {
                let named = match shell {
                    // fish: `complete -c inflight … -l feed`.
                    "fish" => script.contains(&format!("-l {long}")),
                    _ => script.contains(&format!("--{long}")),
                };
                if !named {
                    missing.push(format!("{} --{long}", path.join(" ")));
                }
            }
        }
        assert!(missing.is_empty(), "{shell} completes no {missing:?}");
        for (path, _) in &all {
            if let Some(name) = path.last() {
                assert!(script.contains(name.as_str()), "{shell}: no {name}");
            }
        }
    }
    let refused = output(bin().args(["completions", "tcsh"]));
    assert_eq!(
        refused.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bash"));
}

#[test]
fn man_pages_name_every_flag_of_every_command() {
    // The page on stdout is inflight's own, listing its commands.
    let page = stdout_of(&["man"]).replace("\\-", "-");
    assert!(
        page.starts_with(".ie") || page.contains(".TH inflight 1"),
        "{page}"
    );
    for (path, _) in commands().iter().filter(|(path, _)| path.len() == 1) {
        assert!(page.contains(&path[0]), "inflight.1 lists no {}", path[0]);
    }

    let dir = fresh_dir("manuals", "pages");
    let listed = stdout_of(&["man", "--dir", dir.to_str().unwrap()]);
    let mut missing = Vec::new();
    for (path, flags) in commands() {
        let name = std::iter::once("inflight".to_string())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join("-");
        let file = dir.join(format!("{name}.1"));
        assert!(listed.contains(&format!("{name}.1")), "{listed}");
        let page = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .replace("\\-", "-");
        for long in flags {
            if !page.contains(&format!("--{long}")) {
                missing.push(format!("{name} --{long}"));
            }
        }
    }
    assert!(missing.is_empty(), "no man page names {missing:?}");
}

#[test]
fn the_version_names_the_commit_and_what_is_built_in() {
    let short = stdout_of(&["-V"]);
    assert_eq!(
        short.trim(),
        format!("inflight {}", env!("CARGO_PKG_VERSION"))
    );
    let long = stdout_of(&["--version"]);
    let mut lines = long.lines();
    assert_eq!(
        lines.next(),
        Some(format!("inflight {}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let commit = lines
        .next()
        .and_then(|l| l.strip_prefix("commit: "))
        .unwrap_or_else(|| panic!("no commit line: {long}"));
    // Built from a git checkout (as the tests are): the commit's short hash.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(commit, head, "{long}"),
        None => assert_eq!(commit, "unknown", "{long}"),
    }
    let built_in = lines
        .next()
        .and_then(|l| l.strip_prefix("built in: "))
        .unwrap_or_else(|| panic!("no built-in line: {long}"));
    for part in ["SQLite", "Redis", "TLS", "/metrics", "replay"] {
        assert!(built_in.contains(part), "{long}");
    }
}
