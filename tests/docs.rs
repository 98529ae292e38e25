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
        // The command, wherever it starts on the line (`ssh -t host inflight …`),
        // without its comment.
        let command = line.split(" #").next().unwrap_or_default();
        let Some(at) = command.split_whitespace().position(|w| w == "inflight") else {
            continue;
        };
        let words: Vec<&str> = command.split_whitespace().skip(at).collect();
        if let Err(e) = inflight::config::Cli::try_parse_from(&words) {
            panic!("README: {line:?} does not parse: {e}");
        }
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} commands found");
}
