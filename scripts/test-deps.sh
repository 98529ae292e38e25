#!/usr/bin/env bash
# Installs what the tests need besides Rust, when it is missing, and says
# so: redis-server (Debian's package), which the cluster tests start on a
# free port of their own. `cargo test` runs this by itself the first time
# a test needs the server (tests/integration/common/redis_server.rs); run
# it by hand to install ahead.
#
# It installs with apt-get, as root or through sudo (asking for a password
# only where someone can type it). Where that cannot be done it stops with
# one line saying what to install, and exits 1.
set -euo pipefail

say() { echo "inflight tests: $*" >&2; }

missing() {
  say "redis-server is missing and could not be installed: install Debian's package redis-server (sudo apt-get install redis-server), or redis from your system's packages, then run the tests again"
  exit 1
}

command -v redis-server >/dev/null 2>&1 && exit 0
command -v apt-get >/dev/null 2>&1 || missing
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || missing
  if [ -t 0 ]; then sudo=(sudo); else sudo=(sudo -n); fi
fi
say "redis-server is missing: installing Debian's package redis-server (apt-get install redis-server)"
"${sudo[@]}" apt-get update -qq >/dev/null || missing
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq redis-server >/dev/null || missing
command -v redis-server >/dev/null 2>&1 || missing
say "installed $(redis-server --version | cut -d' ' -f1-3)"
