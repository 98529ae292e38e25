#!/usr/bin/env bash
# Mutation testing of one folder: change its code one small way at a time
# (a `+` into a `-`, a function body into a default value, …) and see whether
# the tests notice. A missed mutant is a line no test checks.
#
#   scripts/mutants.sh src/state            # about half an hour on two cores
#   scripts/mutants.sh src/engine           # about an hour
#   scripts/mutants.sh src/state -F guard   # extra arguments go to cargo-mutants
#
# Needs cargo-mutants (`cargo install --locked cargo-mutants`). Not part of CI:
# it takes too long for that. Results: target/mutants/<folder>/mutants.out/
# (missed.txt, timeout.txt, caught.txt, unviable.txt). docs/TESTING.md
# records the scores and the mutants accepted as equivalent.
set -euo pipefail
cd "$(dirname "$0")/.."

folder=${1:?usage: scripts/mutants.sh FOLDER [cargo-mutants args]}
folder=${folder%/}
shift

if ! command -v cargo-mutants >/dev/null; then
  echo "scripts/mutants.sh needs cargo-mutants: cargo install --locked cargo-mutants" >&2
  exit 2
fi

# Only the tests that exercise the folder, to keep a run in minutes: the
# unit tests, and the integration tests by module (filters on test names,
# so `state::` also picks the unit tests under src/state).
case "$folder" in
  src/state) tests=(--lib --test integration -- state:: state_stress:: deadline::) ;;
  src/engine) tests=(--lib --test integration --test logs -- engine:: deadline:: lifecycle::
                     replay_engine:: feeds:: api:: llm_http:: dashboard:: serve:: scheduling::
                     llm_structured:: refusals_are_logged housekeeping_says) ;;
  src/llm) tests=(--lib --test integration -- llm:: llm_http:: llm_structured:: scheduling::
                  replay_engine::) ;;
  src/db) tests=(--lib --test integration -- db:: restart::) ;;
  src/ops) tests=(--lib --test integration -- ops:: operations:: config::) ;;
  src/webhooks) tests=(--lib --test integration -- webhooks:: cluster_serve::three) ;;
  *) tests=() ;;
esac

out="target/mutants/$(basename "$folder")"
mkdir -p "$out"
# No debug info: each mutant rebuilds and relinks every test binary, and
# linking is most of that time.
export CARGO_PROFILE_DEV_DEBUG=0
cargo mutants -f "$folder/**/*.rs" --output "$out" "$@" -- "${tests[@]}"
