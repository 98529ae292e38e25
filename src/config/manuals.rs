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
    clap_mangen::generate_to(Cli::command(), dir)?;
    let mut written: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("inflight") && n.ends_with(".1"))
        })
        .collect();
    written.sort();
    Ok(written)
}
