//! What is generated from the command line's own definitions: shell
//! completions and man pages. Both are made from [`Cli`]'s clap command,
//! so a flag added there is completed and documented with nothing else to
//! change.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use super::Cli;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "inflight", &mut script);
    script
}

/// The man page of `inflight` itself (roff): its options and its commands.
pub fn man_page() -> Vec<u8> {
    let mut page = Vec::new();
    // Rendering into memory cannot fail.
    let _ = clap_mangen::Man::new(Cli::command()).render(&mut page);
    page
}

/// `inflight.1` and one page for each command (`inflight-serve.1`, …)
/// written into `dir`, which is made if need be; the paths written.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut root = Cli::command().disable_help_subcommand(true);
    // Built, so each command knows its full name (`inflight-serve`).
    root.build();
    let mut written = Vec::new();
    let mut commands = vec![root];
    while let Some(command) = commands.pop() {
        commands.extend(
            command
                .get_subcommands()
                .filter(|c| !c.is_hide_set())
                .cloned(),
        );
        written.push(clap_mangen::Man::new(command).generate_to(dir)?);
    }
    written.sort();
    Ok(written)
}
