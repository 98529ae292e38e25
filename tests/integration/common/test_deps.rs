//! The servers and tools the tests need that Rust does not bring
//! (redis-server, promtool): installed by `scripts/test-deps.sh` when
//! missing, once per tool for the whole test process (the other tests
//! wait for the first), saying so on the terminal.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Whether `tool` is there, installing it first when it is missing.
pub fn installed(tool: &str) -> bool {
    static DONE: Mutex<BTreeMap<String, bool>> = Mutex::new(BTreeMap::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(there) = done.get(tool) {
        return *there;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-deps.sh");
    // Its own words go to the terminal; no password prompt without one.
    let there = Command::new("bash")
        .arg(script)
        .arg(tool)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    done.insert(tool.to_string(), there);
    there
}
