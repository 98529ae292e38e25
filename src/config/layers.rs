//! Where each setting comes from: a flag, else its `INFLIGHT_*` variable,
//! else the config file, else its default. (Its last eighty lines are its
//! unit tests.)
//!
//! clap reads flags and variables and knows which one gave a value. A file
//! setting whose flag was given neither way is added to the command line
//! as the flag's own text and the command line is parsed again: one parser
//! for all three, and a file value that a flag or variable overrides is
//! never read.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::builder::Resettable;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::file::{FileConfig, FileSetting, KEYS, Kind};
use super::{Cli, Command, ConfigCommand, EngineArgs};

/// Where one setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File {
        line: usize,
    },
    /// The variable's name.
    Environment(String),
    Flag,
}

/// The parsed command line, with the config file folded in.
#[derive(Debug)]
pub struct Loaded {
    pub cli: Cli,
    /// For the engine's settings (dashboard, `serve`, `config show`): where
    /// each came from, by flag id.
    pub sources: HashMap<String, Source>,
    /// The config file, when one was given.
    pub file: Option<PathBuf>,
    /// The defined operations: the built-in ones and the file's.
    pub operations: crate::ops::OpRegistry,
    /// The engine's flags as parsed at last, file settings included.
    matches: Option<ArgMatches>,
}

/// Parses `argv` as the process does: `--help`, `--version` and errors in
/// the flags themselves print and exit, as clap does; a bad config file is
/// an error returned.
pub fn load(argv: Vec<OsString>) -> Result<Loaded, String> {
    let matches = Cli::command().get_matches_from(&argv);
    load_matched(argv, &matches)
}

/// [`load`] for tests: flag errors are returned too.
pub fn try_load(argv: Vec<OsString>) -> Result<Loaded, String> {
    let matches = Cli::command()
        .try_get_matches_from(&argv)
        .map_err(|e| first_line(&e.to_string()))?;
    load_matched(argv, &matches)
}

fn load_matched(mut argv: Vec<OsString>, matches: &ArgMatches) -> Result<Loaded, String> {
    let Some((path, engine)) = engine_matches(matches) else {
        let cli = Cli::from_arg_matches(matches).map_err(|e| first_line(&e.to_string()))?;
        return Ok(Loaded {
            cli,
            sources: HashMap::new(),
            file: None,
            operations: crate::ops::OpRegistry::built_in(),
            matches: None,
        });
    };
    let mut sources = sources_of(&path, engine);
    let mut operations = crate::ops::OpRegistry::built_in();
    let mut webhooks = Vec::new();
    let mut prices = crate::spend::Prices::default();
    let file = match engine.get_one::<PathBuf>("config") {
        Some(file) => {
            let config = FileConfig::load(file).map_err(|e| e.to_string())?;
            operations = config.operations.clone();
            webhooks = config.webhooks.clone();
            prices = config.prices.clone();
            let command = command_at(&path);
            for setting in &config.settings {
                check_values(&command, setting).map_err(|e| format!("{}:{e}", file.display()))?;
                if overridden(&command, engine, setting) {
                    continue;
                }
                let long = long_of(&command, setting.key.arg);
                argv.extend(setting.words(&long));
                sources.insert(
                    setting.key.arg.to_string(),
                    Source::File { line: setting.line },
                );
            }
            Some(file.clone())
        }
        None => None,
    };
    let in_file = |e: clap::Error| {
        let why = first_line(&e.to_string());
        match &file {
            Some(file) => format!("{}: {why}", file.display()),
            None => why,
        }
    };
    let all = Cli::command()
        .try_get_matches_from(&argv)
        .map_err(in_file)?;
    let mut cli = Cli::from_arg_matches(&all).map_err(in_file)?;
    if let Some(engine) = cli.engine_args_mut() {
        engine.read_token_file()?;
        engine.webhooks = webhooks;
        engine.prices = prices;
        if engine.prices.is_empty()
            && (engine.budget_session_cost.is_some()
                || engine.budget_feed_cost_per_hour.is_some()
                || engine.budget_cost_per_hour.is_some())
        {
            return Err(
                "a budget in money needs prices: add [[prices]] to the config file (docs/spend.md)"
                    .into(),
            );
        }
    }
    if let Some(engine) = cli.engine_args() {
        engine.check_ops(&operations).map_err(|e| match &file {
            Some(file) => format!("{}: {e}", file.display()),
            None => e,
        })?;
    }
    let matches = engine_matches(&all).map(|(_, m)| m.clone());
    Ok(Loaded {
        cli,
        sources,
        file,
        operations,
        matches,
    })
}

/// The path of subcommand names to the engine's flags, and their matches.
fn engine_matches(matches: &ArgMatches) -> Option<(Vec<&'static str>, &ArgMatches)> {
    match matches.subcommand() {
        None => Some((vec![], matches)),
        Some(("serve", m)) => Some((vec!["serve"], m)),
        Some(("config", m)) => match m.subcommand() {
            Some(("show", m)) => Some((vec!["config", "show"], m)),
            _ => None,
        },
        Some(_) => None,
    }
}

/// The (built) command at a path of subcommand names.
fn command_at(path: &[&str]) -> clap::Command {
    let mut command = Cli::command();
    command.build();
    for name in path {
        match command.find_subcommand(name) {
            Some(sub) => command = sub.clone(),
            None => break,
        }
    }
    command
}

fn long_of(command: &clap::Command, id: &str) -> String {
    command
        .get_arguments()
        .find(|a| a.get_id() == id)
        .and_then(|a| a.get_long())
        .unwrap_or(id)
        .to_string()
}

/// Runs each value through its flag's parser, so a bad one is reported with
/// its line rather than as a flag the user never typed.
fn check_values(command: &clap::Command, setting: &FileSetting) -> Result<(), String> {
    if matches!(setting.key.kind, Kind::Switch | Kind::NotSwitch) {
        return Ok(());
    }
    let key = format!("{}.{}", setting.key.section, setting.key.name);
    let arg = command
        .get_arguments()
        .find(|a| a.get_id() == setting.key.arg)
        .ok_or_else(|| format!("{}: {key} is not a setting here", setting.line))?;
    // The flag alone: no variable, no relation to the others.
    let alone = arg
        .clone()
        .env(None)
        .conflicts_with(Resettable::Reset)
        .requires(Resettable::Reset)
        .overrides_with(Resettable::Reset)
        .required(false);
    let long = alone.get_long().unwrap_or(setting.key.arg).to_string();
    for value in &setting.values {
        clap::Command::new("inflight")
            .no_binary_name(true)
            .arg(alone.clone())
            .try_get_matches_from([format!("--{long}={value}")])
            .map_err(|e| {
                let why = clap_reason(&e);
                let why = why.split_once("': ").map(|(_, w)| w).unwrap_or(&why);
                format!("{}: {key}: {why}", setting.line)
            })?;
    }
    Ok(())
}

/// True when a flag or variable already set this setting, or one that
/// cannot go with it (`--db` beside `enabled = false`).
fn overridden(command: &clap::Command, engine: &ArgMatches, setting: &FileSetting) -> bool {
    let explicit = |id: &str| {
        matches!(
            engine.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    if explicit(setting.key.arg) {
        return true;
    }
    // A conflict is declared on one side only (`--db` conflicts with
    // `--no-db`): look both ways.
    let conflict = |a: &clap::Arg, b: &str| {
        command
            .get_arg_conflicts_with(a)
            .iter()
            .any(|other| other.get_id() == b)
    };
    command.get_arguments().any(|other| {
        let id = other.get_id().as_str();
        id != setting.key.arg
            && explicit(id)
            && (conflict(other, setting.key.arg)
                || command
                    .get_arguments()
                    .find(|a| a.get_id() == setting.key.arg)
                    .is_some_and(|mine| conflict(mine, id)))
    })
}

/// Each engine flag's source before the file is read.
fn sources_of(path: &[&str], engine: &ArgMatches) -> HashMap<String, Source> {
    let command = command_at(path);
    command
        .get_arguments()
        .map(|arg| {
            let id = arg.get_id().as_str();
            let source = match engine.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Environment(
                    arg.get_env()
                        .map(|v| v.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                _ => Source::Default,
            };
            (id.to_string(), source)
        })
        .collect()
}

/// A clap error in one line, without its usage hints.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let joined = lines.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

impl Cli {
    /// The engine's settings, for the commands that run or show an engine.
    pub fn engine_args_mut(&mut self) -> Option<&mut EngineArgs> {
        match &mut self.command {
            None => Some(&mut self.engine),
            Some(Command::Serve(args)) => Some(args),
            Some(Command::Config(ConfigCommand::Show(args))) => Some(args),
            Some(_) => None,
        }
    }

    pub fn engine_args(&self) -> Option<&EngineArgs> {
        match &self.command {
            None => Some(&self.engine),
            Some(Command::Serve(args)) => Some(args),
            Some(Command::Config(ConfigCommand::Show(args))) => Some(args),
            Some(_) => None,
        }
    }
}

impl EngineArgs {
    /// Reads `--api-token-file`, `--api-read-token-file` and
    /// `--api-ingest-token-file` into the tokens: each file's first line,
    /// trimmed.
    pub fn read_token_file(&mut self) -> Result<(), String> {
        if let Some(path) = &self.api_token_file {
            self.api_token = Some(read_token(path)?);
        }
        if let Some(path) = &self.api_read_token_file {
            self.api_read_token = Some(read_token(path)?);
        }
        if let Some(path) = &self.api_ingest_token_file {
            self.api_ingest_token = Some(read_token(path)?);
        }
        Ok(())
    }
}

/// A token file's first line, trimmed; an empty one is an error.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(token.to_string())
}

/// Every file key with its effective value and where it came from, as a
/// config file would hold it; secrets masked.
pub fn show(loaded: &Loaded) -> Result<String, String> {
    let Some(Command::Config(ConfigCommand::Show(args))) = &loaded.cli.command else {
        return Err("not `config show`".into());
    };
    let _ = args;
    let command = command_at(&["config", "show"]);
    let matches = loaded.matches.as_ref().ok_or("no settings were parsed")?;
    let mut out = String::from(
        "# The settings in effect. Each comes from a flag, else its INFLIGHT_* variable,\n\
# else the config file, else its default.\n",
    );
    if let Some(file) = &loaded.file {
        out.push_str(&format!("# config file: {}\n", file.display()));
    }
    let mut section = "";
    for key in KEYS {
        if key.section != section {
            section = key.section;
            out.push_str(&format!("\n[{section}]\n"));
        }
        let value = shown_value(key, matches);
        let source = match loaded.sources.get(key.arg).unwrap_or(&Source::Default) {
            Source::Default => "default".to_string(),
            Source::File { line } => format!("file, line {line}"),
            Source::Environment(var) => var.clone(),
            Source::Flag => format!("--{}", long_of(&command, key.arg)),
        };
        let line = match value {
            Some(value) => format!("{} = {value}", key.name),
            None => format!("# {} is not set{}", key.name, unset_note(key.arg)),
        };
        out.push_str(&format!("{line:<48} # {source}\n"));
    }
    for (id, what, flag) in [
        ("api_token", "the API token", "--api-token"),
        ("api_read_token", "the viewer's token", "--api-read-token"),
        ("api_ingest_token", "the ingest token", "--api-ingest-token"),
    ] {
        if let Some(source) = loaded.sources.get(id)
            && *source != Source::Default
        {
            let from = match source {
                Source::Environment(var) => var.clone(),
                _ => flag.into(),
            };
            out.push_str(&format!("# {what} is set ({from}), not shown\n"));
        }
    }
    Ok(out)
}

/// What an unset setting means, where that is not nothing.
fn unset_note(arg: &str) -> &'static str {
    match arg {
        "api" => ": serve listens on 127.0.0.1:8787, the dashboard nowhere",
        "db" => ": $XDG_STATE_HOME/inflight/inflight.db (the demo: a file of its own)",
        "simulate_latency" => ": 2s..6s on the demo, none otherwise",
        "llm_url" => ": Ollama's is http://127.0.0.1:11434",
        "feed_retries" => ": never give up",
        "log_level" => ": RUST_LOG, else info",
        _ => "",
    }
}

fn shown_value(key: &super::file::Key, matches: &ArgMatches) -> Option<String> {
    let raw = |id: &str| -> Vec<String> {
        matches
            .get_raw(id)
            .map(|values| {
                values
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    // A JSON string is a TOML basic string.
    let quoted = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    match key.kind {
        Kind::Switch => Some(matches.get_flag(key.arg).to_string()),
        Kind::NotSwitch => Some((!matches.get_flag(key.arg)).to_string()),
        Kind::List => {
            let items: Vec<String> = raw(key.arg)
                .iter()
                .map(|v| {
                    if key.arg == "feeds" {
                        quoted(&crate::net::redact_url(v))
                    } else {
                        quoted(v)
                    }
                })
                .collect();
            Some(format!("[{}]", items.join(", ")))
        }
        Kind::Headers => {
            let names: Vec<String> = raw(key.arg)
                .iter()
                .map(|h| {
                    let name = h.split_once(':').map(|(n, _)| n.trim()).unwrap_or(h);
                    format!("{} = \"****\"", quoted(name))
                })
                .collect();
            Some(format!("{{ {} }}", names.join(", ")))
        }
        // A Redis URL may carry its password.
        Kind::Text if key.arg == "redis" => raw(key.arg)
            .first()
            .map(|v| quoted(&crate::net::redact_url(v))),
        Kind::Text => raw(key.arg).first().map(|v| quoted(v)),
        Kind::Int | Kind::Float => raw(key.arg).first().cloned(),
    }
}

/// `config check FILE`: the file's keys and values, then the settings they
/// make together as `serve` would use them, without starting anything.
pub fn check(file: &Path) -> Result<String, String> {
    let argv = [
        "inflight".into(),
        "serve".into(),
        "--config".into(),
        file.into(),
    ];
    let loaded = try_load(argv.to_vec())?;
    let Some(Command::Serve(args)) = &loaded.cli.command else {
        return Err("not `serve`".into());
    };
    let together = || -> Result<(), String> {
        args.backend()?;
        args.feed_options()?;
        args.api_config(args.serve_api_addr()).check()?;
        args.db_path()?;
        Ok(())
    };
    together().map_err(|e| format!("{}: {e}", file.display()))?;
    let from_file = loaded
        .sources
        .values()
        .filter(|s| matches!(s, Source::File { .. }))
        .count();
    let operations: Vec<String> = loaded
        .operations
        .defs()
        .iter()
        .map(|d| format!("{} ({}, {})", d.op, d.output.as_str(), d.when.as_str()))
        .collect();
    Ok(format!(
        "{}: ok ({from_file} settings from the file)\noperations: {}\n",
        file.display(),
        operations.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("inflight-layers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_file_setting_that_conflicts_with_a_flag_gives_way() {
        let path = file(
            "conflict.toml",
            "[database]\nenabled = false\n[llm]\nconcurrency = 3\n",
        );
        let path = path.to_str().unwrap();
        let loaded = try_load(argv(&[
            "inflight",
            "config",
            "show",
            "--config",
            path,
            "--db",
            "/tmp/x.db",
        ]))
        .expect("the flag wins, no conflict");
        assert_eq!(loaded.sources.get("no_db"), Some(&Source::Default));
        assert_eq!(loaded.sources.get("db"), Some(&Source::Flag));
        assert_eq!(
            loaded.sources.get("llm_concurrency"),
            Some(&Source::File { line: 4 })
        );
        // Without the flag, the file's switch holds.
        let loaded = try_load(argv(&["inflight", "serve", "--config", path])).unwrap();
        let Some(Command::Serve(args)) = loaded.cli.command else {
            panic!("serve")
        };
        assert!(args.no_db);
        assert_eq!(args.llm_concurrency, 3);
    }

    #[test]
    fn attach_reads_its_token_from_a_file() {
        let token = file("attach-token", "t0k\nignored\n");
        let cli = Cli::try_parse_from([
            "inflight",
            "attach",
            "--api-token-file",
            token.to_str().unwrap(),
        ])
        .unwrap();
        let Some(Command::Attach(args)) = cli.command else {
            panic!("attach")
        };
        assert_eq!(args.token().unwrap().as_deref(), Some("t0k"));
        let cli = Cli::try_parse_from(["inflight", "attach", "--api-token", "direct"]).unwrap();
        let Some(Command::Attach(args)) = cli.command else {
            panic!("attach")
        };
        assert_eq!(args.token().unwrap().as_deref(), Some("direct"));
        let empty = file("empty-token", "\n");
        let cli = Cli::try_parse_from([
            "inflight",
            "attach",
            "--api-token-file",
            empty.to_str().unwrap(),
        ])
        .unwrap();
        let Some(Command::Attach(args)) = cli.command else {
            panic!("attach")
        };
        assert!(args.token().unwrap_err().contains("is empty"));
    }
}
