#!/usr/bin/env bash
# Measures inflight against the seed's Python baseline, side by side, in one
# run, in release builds, and prints the Markdown recorded in
# docs/BENCHMARKS.md. Needs python3 with the `websockets` package and the
# baseline scripts (seed_baseline.py, feed_server.py) in $BASELINES
# (default: ../shared/baselines next to this repository). With TOKENIZER_URL
# set to a llama.cpp-python server, it also counts prompt tokens per meeting.
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINES=${BASELINES:-../shared/baselines}
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

python3 -c 'import websockets' 2>/dev/null || pip install --quiet websockets
cargo build --release --quiet --example load --example overload --example token_cost --example restart_time
LOAD=target/release/examples/load
TIME=/usr/bin/time

# A Python reference feed on $1 with the remaining arguments; waits until it listens.
start_feed() {
  local port=$1; shift
  python3 "$BASELINES/feed_server.py" --port "$port" "$@" > "$OUT/feed-$port.log" 2>&1 &
  for _ in $(seq 100); do grep -q listening "$OUT/feed-$port.log" 2>/dev/null && return; sleep 0.1; done
  echo "feed on $port did not start" >&2; exit 1
}

# Runs a command, appending its JSON line plus "peak_rss_mb" (from time -f %M) to $1.
measure() {
  local into=$1; shift
  "$TIME" -f '%M' -o "$OUT/rss" "$@" > "$OUT/line"
  python3 - "$OUT/line" "$OUT/rss" >> "$into" <<'PY'
import json, sys
line = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
rss_kb = int(open(sys.argv[2]).read().split()[-1])
line["peak_rss_mb"] = round(rss_kb / 1024, 1)
print(json.dumps(line))
PY
}

L=0.5
echo "## Side by side: 50 sessions × 40 transcripts at 4/s each, LLM latency ${L}s" > "$OUT/report.md"
start_feed 9311 --sessions 50 --count 40 --rate 4
measure "$OUT/paced.jsonl" python3 "$BASELINES/seed_baseline.py" consume --url ws://127.0.0.1:9311 --latency $L
for policy in naive skip coalesce; do
  measure "$OUT/paced.jsonl" "$LOAD" --feed ws://127.0.0.1:9311 --policy $policy --latency $L
done
# Fewer calls for staler results: --min-interval on the same paced feed,
# following freshness through the whole run.
measure "$OUT/interval.jsonl" "$LOAD" --feed ws://127.0.0.1:9311 --policy skip --latency $L --lag-over-time
for interval in 0 2 5 10; do
  measure "$OUT/interval.jsonl" "$LOAD" --feed ws://127.0.0.1:9311 --policy coalesce --latency $L --min-interval $interval --lag-over-time
done

# Unthrottled ingest, on two feeds: the Python reference feed, and inflight's
# own replay server (which sends faster than Python can).
start_feed 9312 --sessions 100 --count 1000 --rate 0
measure "$OUT/ingest.jsonl" python3 "$BASELINES/seed_baseline.py" consume --url ws://127.0.0.1:9312 --latency 0.05
measure "$OUT/ingest.jsonl" "$LOAD" --feed ws://127.0.0.1:9312 --policy coalesce --latency 0.05
mkdir -p "$OUT/meetings"
python3 - "$OUT/meetings" <<'PY'
import json, sys
for i in range(100):
    sid = f"sess-{i:04d}"
    with open(f"{sys.argv[1]}/{sid}.jsonl", "w") as f:
        for seq in range(1, 1001):
            f.write(json.dumps({"type": "transcript", "session_id": sid, "seq": seq, "text": f"Point {seq}: the budget review moves the release and the hiring plan.", "speaker": f"spk{seq % 3}", "start": float(seq), "end": seq + 0.5}) + "\n")
PY
cargo build --release --quiet
target/release/inflight feed --listen 127.0.0.1:9314 --dir "$OUT/meetings" --speed 0 > "$OUT/rust-feed.log" 2>&1 &
for _ in $(seq 100); do grep -q listening "$OUT/rust-feed.log" 2>/dev/null && break; sleep 0.1; done
# Short runs on a shared machine vary: three of each, alternating.
for _ in 1 2 3; do
  measure "$OUT/own.jsonl" python3 "$BASELINES/seed_baseline.py" consume --url ws://127.0.0.1:9314 --latency 0.05
  measure "$OUT/own.jsonl" "$LOAD" --feed ws://127.0.0.1:9314 --policy coalesce --latency 0.05
  # The ceiling: the same feed read and parsed, no engine.
  measure "$OUT/own.jsonl" "$LOAD" --feed ws://127.0.0.1:9314 --policy bare
  # Everything written to a SQLite file, as `serve` does by default.
  measure "$OUT/own.jsonl" "$LOAD" --feed ws://127.0.0.1:9314 --policy coalesce --latency 0.05 --db "$OUT/load.db"
done
# Restart: open a file of 100 000 sessions and take them back.
target/release/examples/restart_time --sessions 100000 --db "$OUT/restart.db" > "$OUT/restart.jsonl"

# Overload, on a paused clock (exact): demand 5×, 25× and 125× what the LLM can do.
for sessions in 40 200 1000; do
  target/release/examples/overload --sessions $sessions --permits 4 --latency 0.5 --seconds 120 >> "$OUT/overload.jsonl"
done
# Prompt tokens per meeting, when a llama.cpp server is there to count them.
if [ -n "${TOKENIZER_URL:-}" ]; then
  target/release/examples/token_cost --tokenizer "$TOKENIZER_URL" > "$OUT/tokens.jsonl"
  target/release/examples/token_cost --tokenizer "$TOKENIZER_URL" --joined >> "$OUT/tokens.jsonl"
fi

start_feed 9313 --sessions 10000 --count 20 --rate 0
measure "$OUT/memory.jsonl" python3 "$BASELINES/seed_baseline.py" consume --url ws://127.0.0.1:9313 --latency 0.05
measure "$OUT/memory.jsonl" "$LOAD" --feed ws://127.0.0.1:9313 --policy coalesce --latency 0.05
# The harness writing a database too, as `serve` runs by default.
measure "$OUT/memory.jsonl" "$LOAD" --feed ws://127.0.0.1:9313 --policy coalesce --latency 0.05 --db "$OUT/load-memory.db"
# `inflight serve` itself on the same feed, as users run it (the LLM
# simulated at the same 50 ms, 1 024 calls at once like the harness),
# with the views' 40 covered lines a session kept, then with covered lines
# released at once, both in memory only; then as `serve` runs by default,
# writing a database (a fresh file). Its peak RSS is the kernel's
# high-water mark.
for run in "40 memory" "0 memory" "40 database"; do
  read -r keep store <<< "$run"
  rm -f "$OUT/serve.db" "$OUT/serve.db-wal" "$OUT/serve.db-shm"
  python3 - "$OUT/memory.jsonl" "$keep" "$store" "$OUT/serve.db" <<'PY'
import json, re, signal, subprocess, sys, time, urllib.request
out, keep, store, db_path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
port = 9390
storage = ["--db", db_path] if store == "database" else ["--no-db"]
serve = subprocess.Popen(["target/release/inflight", "serve", *storage, "--feed", "ws://127.0.0.1:9313",
                          "--simulate-latency", "50ms..50ms", "--llm-concurrency", "1024",
                          "--keep-transcripts", keep, "--api", f"127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def metric(text, name, label=""):
    # The sum over every series of the family that has `label`.
    series = re.findall(rf"^inflight_{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)
    return sum(float(v) for labels, v in series if label in labels)
start = time.monotonic()
def get(path):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read().decode()
def status(pid, field):
    return next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith(field))
pid = serve.pid
# The feed's count while it streams (a cheap read); then the resident set
# until it has not moved for three seconds (the last runs ending); only
# then one /metrics scrape (a snapshot of every session), to check that no
# run is left and to see what a scrape adds.
while time.monotonic() - start < 300:
    time.sleep(0.5)
    try:
        if sum(f["transcripts"] for f in json.loads(get("/api/feeds"))["feeds"]) >= 200000:
            break
    except OSError:
        continue
left = None
while left != 0 and time.monotonic() - start < 300:
    steady, rss = 0, status(pid, "VmRSS")
    while steady < 3:
        time.sleep(1)
        now = status(pid, "VmRSS")
        steady, rss = (steady + 1, rss) if abs(now - rss) < 1024 else (0, now)
    hwm = status(pid, "VmHWM")
    text = get("/metrics")
    left = metric(text, "in_flight", 'phase="queued"') + metric(text, "in_flight", 'phase="running"')
    hwm_scraped = status(pid, "VmHWM")
serve.send_signal(signal.SIGTERM)
serve.wait(timeout=60)
name = f"serve --keep-transcripts {keep}" + (" (database)" if store == "database" else "")
line = {"policy": name, "sessions": 10000, "transcripts": 200000,
        "runs_left": left, "peak_rss_mb": round(hwm / 1024, 1),
        "peak_rss_with_a_scrape_mb": round(hwm_scraped / 1024, 1)}
open(out, "a").write(json.dumps(line) + "\n")
PY
done

python3 "$BASELINES/seed_baseline.py" micro --sessions 1000 --iterations 200000 > "$OUT/micro.json"
cargo bench --quiet --bench state -- --warm-up-time 1 --measurement-time 4 > /dev/null 2>&1
cargo bench --quiet --bench dashboard -- --warm-up-time 1 --measurement-time 4 > /dev/null 2>&1

python3 - "$OUT" "$L" <<'PY'
import glob, json, os, sys
out, L = sys.argv[1], float(sys.argv[2])
rows = lambda name: [json.loads(l) for l in open(os.path.join(out, name))]
def fmt(v):
    if v is None: return "–"
    if isinstance(v, float): return f"{v:g}"
    return str(v)

def table(lines, cols):
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for l in lines:
        print("| " + " | ".join(fmt(get(l)) for _, get in cols) + " |")
    print()

name = lambda l: "seed (Python, skip)" if l.get("policy") == "seed-skip" else "inflight " + l["policy"]
fresh = lambda l: l.get("max_fresh_lag_s")
cols = [("run", name), ("transcripts/s", lambda l: l.get("transcripts_per_s")), ("LLM calls", lambda l: l.get("llm_calls")),
        ("skipped", lambda l: l.get("skipped")), ("max runs of one (session, op) at once", lambda l: l.get("max_concurrent_per_session_op", 1 if l.get("policy") == "seed-skip" else None)),
        ("most queued at once", lambda l: l.get("max_queued")), ("stale sessions", lambda l: l.get("stale_sessions")),
        ("freshness lag max (s)", fresh), ("peak RSS (MB)", lambda l: l.get("peak_rss_mb"))]

paced = rows("paced.jsonl")
print(f"### Side by side on one feed: 50 sessions × 40 transcripts at 4/s each, LLM latency {L} s\n")
table(paced, cols)
print("### Ingest, unthrottled: 100 sessions × 1 000 transcripts, LLM latency 0.05 s\n")
print("On the Python reference feed:\n")
table(rows("ingest.jsonl"), cols[:3] + cols[6:])
print("On `inflight feed` (Rust), which sends faster than the Python feed; three runs each, alternating:\n")
own = rows("own.jsonl")
table(own, cols[:3] + cols[6:])
def median_rate(policy):
    rates = sorted(l["transcripts_per_s"] for l in own if l.get("policy") == policy)
    return rates[len(rates) // 2], rates[0], rates[-1]
ours, seed = median_rate("coalesce"), median_rate("seed-skip")
print(f"Median ingest: inflight {ours[0]:,.0f}/s (range {ours[1]:,.0f}–{ours[2]:,.0f}), "
      f"seed {seed[0]:,.0f}/s (range {seed[1]:,.0f}–{seed[2]:,.0f}): **{ours[0] / seed[0]:.1f}×**.\n")
bare = median_rate("bare")
with_db = median_rate("coalesce+db")
db_rows = [l for l in own if l.get("policy") == "coalesce+db"]
per_k = sorted(l["db_bytes"] / l["transcripts"] * 1000 for l in db_rows)[len(db_rows) // 2]
print(f"With the database (every transcript, result and run written to SQLite): median {with_db[0]:,.0f}/s "
      f"(range {with_db[1]:,.0f}–{with_db[2]:,.0f}), **{with_db[0] / ours[0] * 100:.0f} %** of memory only; "
      f"{per_k / 1024:,.0f} KiB on disk per 1 000 transcripts (file and WAL, runs and results included), "
      f"{sum(l.get('db_dropped') or 0 for l in db_rows)} writes dropped.\n")
on_disk = sorted(l["on_disk_per_s"] for l in db_rows if l.get("on_disk_per_s"))
if on_disk:
    print(f"A feed that outruns the writer waits for it, so with the database ingest is the writer's pace: "
          f"lines on disk (first line to the last one committed) median {on_disk[len(on_disk) // 2]:,.0f}/s "
          f"(range {on_disk[0]:,.0f}–{on_disk[-1]:,.0f}).\n")
restart = rows("restart.jsonl")[0]
print(f"Restart with {restart['sessions']:,} stored sessions ({restart['transcripts_per_session']} transcripts, "
      f"both results and a run of each per session; {restart['db_bytes'] / 2**20:,.0f} MiB): "
      f"**{restart['total_s']:.2f} s** to a full snapshot (open and read back {restart['open_s']:.2f} s, "
      f"memory rebuilt {restart['restore_s']:.2f} s, first snapshot {restart['snapshot_s']:.2f} s).\n")
print(f"Against its ceiling (a bare read-and-parse loop on the same feed, median {bare[0]:,.0f}/s, "
      f"range {bare[1]:,.0f}–{bare[2]:,.0f}): inflight ingests at **{ours[0] / bare[0] * 100:.0f} %** of it.\n")

print(f"### Calls against freshness: `--min-interval` on the paced feed, LLM latency {L} s\n")
print("Staleness: the longest any transcript waited, during the run, for a summary to cover it. "
      "Freshness lag: the same for each session's last transcript only.\n")
by_policy = {l["policy"]: l for l in paced}
curve = [by_policy.get("seed-skip")] + rows("interval.jsonl")
label = lambda l: name(l) + (f" --min-interval {l['min_interval_s']:g}s" if l.get("policy") == "coalesce" else "")
table([l for l in curve if l], [("run", label), ("LLM calls", lambda l: l.get("llm_calls")),
      ("staleness max (s)", lambda l: l.get("max_stale_s")), ("stale sessions at the end", lambda l: l.get("stale_sessions")),
      ("freshness lag max (s)", fresh)])

print("### Overload: 4 permits, LLM latency 0.5 s, a final transcript per session per second for 120 s\n")
print("Simulated on a paused clock: exact and repeatable. Ideal round robin lag = latency × (sessions / permits + 1).\n")
table(rows("overload.jsonl"), [("sessions", lambda l: l["sessions"]), ("demand / capacity", lambda l: l["demand_over_capacity"]),
      ("LLM calls", lambda l: l["calls"]), ("killed after start", lambda l: l["killed_after_start"]),
      ("max lag (s)", lambda l: round(l["max_lag_s"], 2)), ("ideal round robin (s)", lambda l: l["ideal_round_robin_lag_s"]),
      ("lag / ideal", lambda l: round(l["lag_ratio"], 3)), ("Jain fairness", lambda l: round(l["jain_fairness"], 4)),
      ("stale after the feed ends", lambda l: l["stale_after_drain"])])

if os.path.exists(os.path.join(out, "tokens.jsonl")):
    print("### Prompt tokens per meeting: incremental against re-reading everything\n")
    tok = rows("tokens.jsonl")
    table([l for l in tok if "op" in l], [("meeting", lambda l: l["meeting"] + (" (all four as one)" if l["lines"] > 100 else "")),
          ("op", lambda l: l["op"]), ("lines", lambda l: l["lines"]), ("full re-read", lambda l: l["full_prompt_tokens"]),
          ("incremental", lambda l: l["incremental_prompt_tokens"]), ("ratio", lambda l: round(l["ratio"], 3))])
    table([l for l in tok if "op" not in l], [("meetings", lambda l: l["meetings"]), ("full re-read", lambda l: l["full_prompt_tokens"]),
          ("incremental", lambda l: l["incremental_prompt_tokens"]), ("ratio", lambda l: round(l["ratio"], 3)),
          ("lines never sent", lambda l: l["lines_never_sent"])])
print("### Memory: 10 000 sessions × 20 transcripts, unthrottled, LLM latency 0.05 s\n")
memory = rows("memory.jsonl")
# The work's own peak: the harness's before it snapshots every session to
# report on them, `serve`'s before the one /metrics scrape at the end.
work_peak = lambda l: l.get("peak_rss_before_report_mb") or l.get("peak_rss_mb")
seed_peak = next((l["peak_rss_mb"] for l in memory if l.get("policy") == "seed-skip"), None)
table(memory, [cols[0], cols[1], cols[6], cols[8],
      ("peak RSS before the harness's report (MB)", lambda l: l.get("peak_rss_before_report_mb")),
      ("against the seed", lambda l: f"{work_peak(l) / seed_peak:.2f}×" if seed_peak else None),
      ("peak RSS with a /metrics scrape at the end (MB)", lambda l: l.get("peak_rss_with_a_scrape_mb"))])
print("Against the seed: the harness's peak before its own report (a snapshot of every session and a read "
      "of every result, which `serve` makes only when scraped), `serve`'s before its scrape.\n")

def est(path):
    return json.load(open(path))["mean"]["point_estimate"]  # nanoseconds
crit = "target/criterion"
one = est(f"{crit}/admission/try_start+finish, 1 thread/new/estimates.json")
two = est(f"{crit}/admission/try_start+finish, 2 threads/new/estimates.json")
floor = est(f"{crit}/admission/bare Mutex_HashMap_ insert+remove/new/estimates.json")
micro = json.load(open(os.path.join(out, "micro.json")))
py_ns = 1e9 / micro["pairs_per_s"]
print("### Admission micro-benchmark: 1 000 sessions\n")
print("| run | ns per try_start + finish | pairs/s | vs Python seed | vs bare Mutex<HashMap> |")
print("|---|---|---|---|---|")
print(f"| seed (Python) start_processing + stop_processing | {py_ns:.0f} | {micro['pairs_per_s']:,} | 1× | – |")
for label, ns in [("inflight, 1 thread", one), ("inflight, 2 threads", two), ("bare Mutex<HashMap> insert + remove", floor)]:
    print(f"| {label} | {ns:.0f} | {1e9/ns:,.0f} | {py_ns/ns:.1f}× | {floor/ns*100:.0f} % |")
print()
print("### Dashboard at 10 000 sessions\n")
print("| step | time per frame |")
print("|---|---|")
for path in sorted(glob.glob(f"{crit}/*/new/estimates.json")):
    bench = path.split("/")[-3]
    if "10k" in bench:
        print(f"| {bench} | {est(path)/1e6:.2f} ms |")
print()
print("### Raw results\n")
print("```")
for f in ["paced.jsonl", "interval.jsonl", "ingest.jsonl", "own.jsonl", "memory.jsonl", "restart.jsonl", "overload.jsonl", "tokens.jsonl", "micro.json"]:
    if os.path.exists(os.path.join(out, f)):
        print(open(os.path.join(out, f)).read().strip())
print("```")
PY
