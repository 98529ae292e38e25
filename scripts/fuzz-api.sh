#!/usr/bin/env bash
# Fuzzes a running `inflight serve` against its own OpenAPI document with
# schemathesis (PyPI): every HTTP operation, with every check, as each
# role in turn. It fails on any server error, any answer the document
# does not describe, and any crash.
#
#   scripts/fuzz-api.sh [EXAMPLES] [BINARY]
#
# EXAMPLES is schemathesis' --max-examples per operation and phase (20 by
# default; docs/TESTING.md records a long run). BINARY is the inflight to
# fuzz (target/debug/inflight by default). schemathesis is installed, when
# missing, into a virtualenv under target/test-tools.
#
# Three passes share one server with a database, on a free port:
#   operator  the operator's token, and the ingest token where the
#             document asks for it: every route does its work;
#   viewer    a viewer's token: reads answer, writes are refused (403);
#   none      no token: everything but /healthz and /readyz is 401.
# The WebSocket routes (/ws, /api/recording, /ingest) are left out: an
# HTTP fuzzer cannot speak past their handshake. The tests speak to them,
# and check their messages against the same document.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

EXAMPLES=${1:-20}
BINARY=${2:-target/debug/inflight}
VERSION=4.32.5
TOOLS=${INFLIGHT_TEST_TOOLS:-target/test-tools}
VENV=$TOOLS/schemathesis-$VERSION
case $VENV in /*) ;; *) VENV=$root/$VENV ;; esac
case $BINARY in /*) ;; *) BINARY=$root/$BINARY ;; esac

say() { echo "fuzz-api: $*" >&2; }

# schemathesis in a virtualenv of its own; where Python has no venv module
# (Debian's python3 without python3-venv), in a folder of its own instead.
command -v python3 >/dev/null 2>&1 || { say "python3 is missing: install it (Debian: apt-get install python3 python3-venv)"; exit 1; }
if [ -x "$VENV/bin/st" ]; then
  st=("$VENV/bin/st")
elif [ -d "$VENV/site/schemathesis" ]; then
  st=(env "PYTHONPATH=$VENV/site" python3 -m schemathesis.cli)
else
  say "installing schemathesis $VERSION from PyPI into $VENV"
  if python3 -m venv "$VENV" >&2 2>/dev/null && "$VENV/bin/pip" install -q "schemathesis==$VERSION" >&2; then
    st=("$VENV/bin/st")
  else
    rm -rf "$VENV"
    python3 -m pip install -q --target "$VENV/site" "schemathesis==$VERSION" >&2 \
      || { say "could not install schemathesis $VERSION from PyPI (pip install schemathesis==$VERSION)"; exit 1; }
    st=(env "PYTHONPATH=$VENV/site" python3 -m schemathesis.cli)
  fi
fi
[ -x "$BINARY" ] || { say "no $BINARY: build it first (cargo build)"; exit 2; }

work=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
"$BINARY" openapi > "$work/openapi.json"
"$BINARY" serve --api "127.0.0.1:$port" --api-token fuzz-operator \
  --api-read-token fuzz-viewer --api-ingest-token fuzz-ingest \
  --db "$work/inflight.sqlite" > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  curl -fsS "$url/healthz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; say "the server did not start"; exit 1; }
  sleep 0.1
done

cat > "$work/operator.toml" <<EOF
[auth.openapi.operator]
bearer = "fuzz-operator"
[auth.openapi.ingest]
bearer = "fuzz-ingest"
EOF
# /readyz answers 503 by design while no feed is connected.
cat > "$work/checks.toml" <<'EOF'
[[operations]]
include-path = "/readyz"
checks.not_a_server_error.enabled = false
EOF
cat "$work/checks.toml" >> "$work/operator.toml"

run() {
  local role=$1 config=$2
  shift 2
  # INFLIGHT_FUZZ_REPORT=DIR keeps every request and answer (HAR), a
  # folder per role.
  if [ -n "${INFLIGHT_FUZZ_REPORT:-}" ]; then
    set -- "$@" --report har --report-dir "$INFLIGHT_FUZZ_REPORT/$role"
  fi
  say "pass: $role"
  # From the scratch folder: schemathesis keeps a cache where it runs.
  (cd "$work" && "${st[@]}" --no-color --config-file "$config" run "$work/openapi.json" \
    --url "$url" --checks all --max-examples "$EXAMPLES" \
    --exclude-path /ws --exclude-path /api/recording --exclude-path /ingest \
    --seed 1 "$@")
}

status=0
run operator "$work/operator.toml" || status=1
run viewer "$work/checks.toml" -H "Authorization: Bearer fuzz-viewer" || status=1
run none "$work/checks.toml" || status=1
if ! kill -0 "$server" 2>/dev/null; then
  say "the server died"; status=1
fi
if grep -q "panicked" "$work/serve.log"; then
  grep -m5 "panicked" "$work/serve.log" >&2
  say "the server panicked"; status=1
fi
exit "$status"
