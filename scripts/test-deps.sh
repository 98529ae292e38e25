#!/usr/bin/env bash
# Installs what the tests need besides Rust, when it is missing, and says
# so: redis-server (Debian's package redis-server), which the cluster tests
# start on a free port of their own, and promtool (Debian's package
# prometheus), which checks /metrics the way Prometheus reads it. `cargo
# test` runs this by itself the first time a test needs one
# (tests/integration/common/redis_server.rs, promtool.rs); run it by hand
# to install ahead.
#
#   scripts/test-deps.sh                 # both
#   scripts/test-deps.sh redis-server    # one: redis-server or promtool
#
# It installs with apt-get, as root or through sudo (asking for a password
# only where someone can type it). Where that cannot be done it stops with
# one line saying what to install, and exits 1.
set -euo pipefail

say() { echo "inflight tests: $*" >&2; }

# The Debian package that has each tool.
package_of() {
  case "$1" in
    redis-server) echo redis-server ;;
    promtool) echo prometheus ;;
    *) say "unknown tool $1 (redis-server or promtool)"; exit 2 ;;
  esac
}

missing() {
  say "$1 is missing and could not be installed: install Debian's package $(package_of "$1") (sudo apt-get install $(package_of "$1")), or $1 from your system's packages, then run the tests again"
  exit 1
}

install() {
  local tool=$1 package
  package=$(package_of "$tool")
  command -v "$tool" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || missing "$tool"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || missing "$tool"
    if [ -t 0 ]; then sudo=(sudo); else sudo=(sudo -n); fi
  fi
  say "$tool is missing: installing Debian's package $package (apt-get install $package)"
  "${sudo[@]}" apt-get update -qq >/dev/null || missing "$tool"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$package" >/dev/null || missing "$tool"
  command -v "$tool" >/dev/null 2>&1 || missing "$tool"
  say "installed $("$tool" --version 2>&1 | head -1 | cut -d' ' -f1-3)"
}

if [ "$#" -eq 0 ]; then
  set -- redis-server promtool
fi
for tool in "$@"; do
  install "$tool"
done
