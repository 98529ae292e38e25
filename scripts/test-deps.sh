#!/usr/bin/env bash
# The test suite on any machine: installs what the tests need when it is
# missing, says so, then runs every test.
#
#   scripts/test.sh               # everything
#   scripts/test.sh cluster::     # arguments go to the test binaries (filters)
#
# What the tests need besides Rust: redis-server (Debian's package), which
# the cluster tests start on a free port of their own. When it is missing
# it is installed with apt-get (as root, or through sudo). Where that cannot
# be done, the run stops at once with one line saying what to install.
#
# Examples are not built here: `cargo clippy --all-targets` checks them.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "scripts/test.sh: $*" >&2; }

missing() {
  say "redis-server is missing and could not be installed: install Debian's package redis-server (sudo apt-get install redis-server), or redis from your system's packages, then run this again"
  exit 1
}

install_redis() {
  command -v apt-get >/dev/null 2>&1 || missing
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || missing
    # Ask for a password only where someone can type it.
    if [ -t 0 ]; then sudo=(sudo); else sudo=(sudo -n); fi
  fi
  say "redis-server is missing: installing Debian's package redis-server (apt-get install redis-server)"
  "${sudo[@]}" apt-get update -qq >/dev/null || missing
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq redis-server >/dev/null || missing
  command -v redis-server >/dev/null 2>&1 || missing
  say "installed $(redis-server --version | cut -d' ' -f1-3)"
}

command -v redis-server >/dev/null 2>&1 || install_redis

# Every target but the examples, then the doc tests.
cargo test --lib --bins --tests "$@"
cargo test --doc "$@"
