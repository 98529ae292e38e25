//! Docs that cannot drift: every flag of every command is in
//! `docs/flags.md`, every key of the keymap in `docs/dashboard.md`.

use std::path::Path;

use clap::CommandFactory;

fn doc(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name),
    )
    .expect("the doc exists")
}

#[test]
fn every_flag_of_every_command_is_in_the_flags_doc() {
    let flags = doc("flags.md");
    let mut root = inflight::config::Cli::command();
    root.build();
    let mut commands = vec![root.clone()];
    let mut i = 0;
    while i < commands.len() {
        let subs: Vec<clap::Command> = commands[i].get_subcommands().cloned().collect();
        commands.extend(subs);
        i += 1;
    }
    let mut missing = Vec::new();
    for command in &commands {
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            if !flags.contains(&format!("`--{long}")) {
                missing.push(format!("{} --{long}", command.get_name()));
            }
        }
    }
    assert!(missing.is_empty(), "not in docs/flags.md: {missing:?}");
}

#[test]
fn every_key_binding_is_in_the_dashboard_doc() {
    let dashboard = doc("dashboard.md");
    let keys_section = dashboard.split("## Keys").nth(1).expect("a Keys section");
    let mut missing = Vec::new();
    for binding in inflight::tui::keymap::BINDINGS {
        for key in binding.keys {
            let written = match key {
                inflight::tui::keymap::Key::Char(' ') => "space".to_string(),
                inflight::tui::keymap::Key::Char(c) => format!("`{c}`"),
                inflight::tui::keymap::Key::Up => "`↑`".into(),
                inflight::tui::keymap::Key::Down => "`↓`".into(),
                inflight::tui::keymap::Key::PageUp => "PgUp".into(),
                inflight::tui::keymap::Key::PageDown => "PgDn".into(),
                inflight::tui::keymap::Key::Home => "Home".into(),
                inflight::tui::keymap::Key::End => "End".into(),
                inflight::tui::keymap::Key::Enter => "Enter".into(),
                inflight::tui::keymap::Key::Esc => "Esc".into(),
                inflight::tui::keymap::Key::Tab => "Tab".into(),
                inflight::tui::keymap::Key::Backspace => "Backspace".into(),
                inflight::tui::keymap::Key::CtrlC => "Ctrl-C".into(),
            };
            if !keys_section.contains(&written) {
                missing.push(format!("{written} ({})", binding.hint));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in docs/dashboard.md's keys: {missing:?}"
    );
}

#[test]
fn the_readmes_inflight_commands_parse_with_the_current_cli() {
    use clap::Parser;
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("the README");
    let mut in_block = false;
    let mut checked = 0;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = !in_block && line.trim_start_matches('`').starts_with("sh");
            continue;
        }
        if !in_block {
            continue;
        }
        // The command, wherever it starts on the line (`ssh -t host inflight …`,
        // `sudo inflight …`), without its comment.
        let command = line.split(" #").next().unwrap_or_default();
        let Some(at) = command.split_whitespace().position(|w| w == "inflight") else {
            continue;
        };
        // Up to a pipe, a redirection or the next command.
        let words: Vec<&str> = command
            .split_whitespace()
            .skip(at)
            .take_while(|w| !["|", ">", ">>", "<", "&&", "||", ";"].contains(w))
            .collect();
        if let Err(e) = inflight::config::Cli::try_parse_from(&words) {
            panic!("README: {line:?} does not parse: {e}");
        }
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} commands found");
}

/// The README's section between `## {name}` and the next `## `.
fn readme_section(name: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("the README");
    let heading = format!("## {name}\n");
    let (_, rest) = readme
        .split_once(&heading)
        .unwrap_or_else(|| panic!("a {name} section"));
    rest.split("\n## ").next().unwrap_or_default().to_string()
}

/// `234 433` and `234,433` read as `234433`: thousands separators out.
fn without_thousands_separators(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, c) in chars.iter().enumerate() {
        let separator = matches!(c, ' ' | ',' | '\u{202f}')
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars
                .get(i + 1..i + 4)
                .is_some_and(|d| d.iter().all(char::is_ascii_digit))
            && chars.get(i + 4).is_none_or(|d| !d.is_ascii_digit());
        if !separator {
            out.push(*c);
        }
    }
    out
}

/// Every number in `text`, whole: `172.4` is one, never `172`.
fn numbers(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let decimal_point =
            *c == '.' && !current.is_empty() && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c.is_ascii_digit() || decimal_point {
            current.push(*c);
        } else if !current.is_empty() {
            found.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        found.push(current);
    }
    found
}

#[test]
fn every_figure_in_the_readmes_performance_section_is_one_the_benchmarks_record() {
    let performance = without_thousands_separators(&readme_section("Performance"));
    let benchmarks = without_thousands_separators(&doc("BENCHMARKS.md"));
    let recorded: std::collections::HashSet<String> = numbers(&benchmarks).into_iter().collect();
    let figures = numbers(&performance);
    assert!(figures.len() >= 20, "only {} figures found", figures.len());
    let missing: Vec<&String> = figures.iter().filter(|f| !recorded.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "README figures that docs/BENCHMARKS.md does not record: {missing:?}"
    );
}

#[test]
fn the_figure_check_reads_whole_numbers() {
    assert_eq!(
        without_thousands_separators("234 433/s, 1,566,254 and 10 000 × 20"),
        "234433/s, 1566254 and 10000 × 20"
    );
    assert_eq!(numbers("172.4 MB, 5.3×, v2."), ["172.4", "5.3", "2"]);
}

#[test]
fn ci_runs_the_readmes_test_command() {
    let try_it = readme_section("Try it");
    let command = try_it
        .lines()
        .find(|line| line.contains("# the test suite"))
        .and_then(|line| line.split(" #").next())
        .map(str::trim)
        .expect("the Try it block names the test command");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines()
            .any(|line| !line.trim_start().starts_with('#') && line.contains(command)),
        ".ci/run runs {command}"
    );
}
