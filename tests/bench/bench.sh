#!/usr/bin/env bash
# `make bench` / `make bench-quick`: Portcullis against direct calls, in one run,
# against one in-repo upstream on loopback.
#
#   bash tests/bench/bench.sh [--quick]
#
# Targets (all in front of the same `portcullis-test-upstream --response json`):
#   direct    the upstream itself
#   empty     the gateway with an empty policy chain
#   builtins  the gateway with the four built-in policies (slug-scope, blocklist,
#             mcp-servers, annotation-hints) and the audit log on
# Scenarios (portcullis-loadgen, HTTP/1.1 keep-alive, one connection per session):
#   call-sat     tools/call echo, $SAT sessions (throughput at saturation)
#   call-c1      tools/call echo, 1 session (latency)
#   call-64k     tools/call big {bytes: 65536}, $SAT sessions
#   list-c1      tools/list, 1 session: through the gateway the merged list of
#                10 connectors x 100 tools (1,000 tools); direct: one upstream's 100
#   list-sat     the same with $SAT sessions
#   sessions-1k  1,000 concurrent sessions opened, held idle, then tools/call echo
# Memory: gateway VmRSS fresh (idle), with 1,000 idle sessions, under load from
# them, and the peak (VmHWM).
#
# Output: a markdown table on stdout and in target/bench/results.md, the raw
# figures and ratios in target/bench/results.json, the gateways' warnings and
# errors in target/bench/gateway-*.log. Every process started here is killed on
# exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $arg (usage: bench.sh [--quick])" >&2; exit 2 ;;
  esac
done

if [ "$QUICK" = 1 ]; then
  DUR="${BENCH_DURATION:-2}"; WARM="${BENCH_WARMUP:-1}"; HOLD=2; MODE=quick
else
  DUR="${BENCH_DURATION:-10}"; WARM="${BENCH_WARMUP:-2}"; HOLD=3; MODE=full
fi
SAT="${BENCH_SESSIONS:-16}"          # sessions at saturation
IDLE_SESSIONS=1000
CONNECTORS=10
TOOLS_PER_CONNECTOR=100              # the upstream has 14 built-in tools + --extra-tools
LG_THREADS="${BENCH_LOADGEN_THREADS:-1}"

CARGO="${CARGO:-cargo}"
TARGET_DIR="$($CARGO metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
if [ -n "${BENCH_BIN:-}" ]; then
  BIN="$BENCH_BIN"                   # development only: binaries built elsewhere
else
  echo "== building (release): portcullis, portcullis-test-upstream, portcullis-loadgen" >&2
  $CARGO build --release -p portcullis -p portcullis-test-upstream -p portcullis-loadgen >&2
  BIN="$TARGET_DIR/release"
fi
OUT="$TARGET_DIR/bench"
mkdir -p "$OUT"
rm -rf "$OUT/failed" "$OUT"/gateway-*.log

WORK="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")"
PIDS=()
cleanup() {
  local rc=$? pid f
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" != 0 ]; then
    # Keep the tail of every process's stderr for diagnosis.
    mkdir -p "$OUT/failed"
    for f in "$WORK"/*.err; do
      [ -e "$f" ] && tail -n 100 "$f" > "$OUT/failed/$(basename "$f")"
    done
    echo "bench.sh: failed; process logs in $OUT/failed/" >&2
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The gateway and the upstream keep one socket per session: make room for 1,000.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# start NAME CMD...: runs CMD in the background, waits (bounded) for its
# "listening on URL" line and sets $URL and $PID.
start() {
  local name="$1"; shift
  "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" &
  PID=$!
  PIDS+=("$PID")
  local i
  for i in $(seq 1 400); do
    URL="$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$WORK/$name.out" | head -n1)"
    if [ -n "$URL" ]; then return 0; fi
    if ! kill -0 "$PID" 2>/dev/null; then break; fi
    sleep 0.05
  done
  echo "bench.sh: $name did not start; its stderr:" >&2
  tail -n 20 "$WORK/$name.err" >&2
  exit 1
}

# forget PID: a process that has been reaped is no longer ours to kill.
forget() {
  local keep=() p
  for p in "${PIDS[@]}"; do
    if [ "$p" != "$1" ]; then keep+=("$p"); fi
  done
  PIDS=("${keep[@]}")
}

stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  forget "$1"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- setup
"$BIN/portcullis" keys new > "$WORK/key.txt" 2>/dev/null
KEY="$(awk '/^api key:/ {print $3}' "$WORK/key.txt")"
HASH="$(awk '/^key_sha256:/ {print $2}' "$WORK/key.txt")"
[ -n "$KEY" ] && [ -n "$HASH" ] || { echo "bench.sh: portcullis keys new gave no key" >&2; exit 1; }

start upstream "$BIN/portcullis-test-upstream" --listen 127.0.0.1:0 --response json \
  --extra-tools $((TOOLS_PER_CONNECTOR - 14)) --name bench-upstream
UP_URL="$URL"
UP_PID="$PID"

# config FILE POLICIES...: ten connectors named c0..c9 on the same upstream.
config() {
  local file="$1"; shift
  {
    printf '[server]\nlisten = "127.0.0.1:0"\ntool_separator = "."\nlist_page_size = 100000\n\n'
    local i
    for i in $(seq 0 $((CONNECTORS - 1))); do
      printf '[[connectors]]\nid = "conn_c%d"\nname = "c%d"\ntarget_url = "%s"\ndisabled_tools = ["never_*"]\ntimeout_ms = 30000\n\n' "$i" "$i" "$UP_URL"
    done
    printf '[[agents]]\nid = "bench"\norg = "bench"\nkey_sha256 = "%s"\nscopes = ["mcp:call"]\nmcp_servers = [{ url = "*" }]\n\n' "$HASH"
    local p
    for p in "$@"; do
      printf '[[policies]]\nmodule = "builtin:%s"\n\n' "$p"
    done
  } > "$file"
}
config "$WORK/empty.toml"
config "$WORK/builtins.toml" slug-scope blocklist mcp-servers annotation-hints

# An OTLP/HTTP sink that accepts every export (the "tracing" target: empty chain with
# traces exported, to measure what tracing costs).
SINK_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
python3 - "$SINK_PORT" > "$WORK/otlp-sink.log" 2>&1 <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
PIDS+=("$!")
cp "$WORK/empty.toml" "$WORK/tracing.toml"
printf '[telemetry]\notlp_endpoint = "http://127.0.0.1:%s"\notlp_protocol = "http"\n' "$SINK_PORT" >> "$WORK/tracing.toml"

RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
MEMORY="$WORK/memory.jsonl"
: > "$MEMORY"

# check_alive: the servers under test must survive every row.
check_alive() {
  local name pid
  for name in upstream "${GW_NAME:-}"; do
    [ -n "$name" ] || continue
    if [ "$name" = upstream ]; then pid="$UP_PID"; else pid="$GW_PID"; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "bench.sh: $name (pid $pid) died; the end of its stderr:" >&2
      tail -n 20 "$WORK/$name.err" >&2
      exit 1
    fi
  done
}

# measure TARGET SCENARIO URL LOADGEN-ARGS...: one loadgen run, one line of results.
measure() {
  local target="$1" scenario="$2" url="$3"; shift 3
  local line
  if ! line="$("$BIN/portcullis-loadgen" --url "$url" --key "$KEY" --threads "$LG_THREADS" \
      --warmup "$WARM" --duration "$DUR" --json "$@" 2> "$WORK/loadgen.err")"; then
    echo "bench.sh: loadgen failed for $target/$scenario:" >&2
    cat "$WORK/loadgen.err" >&2
    check_alive
    exit 1
  fi
  check_alive
  printf '{"target":"%s","scenario":"%s","result":%s}\n' "$target" "$scenario" "$line" >> "$RESULTS"
  echo "$line" | python3 -c "import json,sys; r=json.load(sys.stdin); print(f'   $target/$scenario: {r[\"rps\"]:.0f} req/s, p50 {r[\"p50_us\"]} us, p99 {r[\"p99_us\"]} us, errors {r[\"errors\"]}')" >&2
}

# sessions_1k TARGET URL TOOL PID: 1,000 sessions, held idle (RSS sampled), then load (RSS sampled).
sessions_1k() {
  local target="$1" url="$2" tool="$3" pid="$4"
  local before idle load hwm i lg
  before="$(rss_kb "$pid")"
  "$BIN/portcullis-loadgen" --url "$url" --key "$KEY" --threads "$LG_THREADS" \
    --sessions "$IDLE_SESSIONS" --hold "$HOLD" --duration "$DUR" --json \
    --method call --tool "$tool" --args '{"text":"hello"}' \
    > "$WORK/lg1k.out" 2> "$WORK/lg1k.err" &
  lg=$!
  PIDS+=("$lg")
  for i in $(seq 1 600); do
    if grep -q '^ready:' "$WORK/lg1k.err" 2>/dev/null || ! kill -0 "$lg" 2>/dev/null; then break; fi
    sleep 0.05
  done
  sleep 1
  idle="$(rss_kb "$pid")"
  # The load starts HOLD seconds after "ready"; sample in its middle.
  sleep "$(python3 -c "print(max(0.1, $HOLD - 1 + $DUR / 2))")"
  load="$(rss_kb "$pid")"
  local rc=0
  wait "$lg" || rc=$?
  forget "$lg"
  if [ "$rc" != 0 ]; then
    echo "bench.sh: loadgen failed for $target/sessions-1k:" >&2
    cat "$WORK/lg1k.err" >&2
    check_alive
    exit 1
  fi
  check_alive
  hwm="$(hwm_kb "$pid")"
  printf '{"target":"%s","scenario":"sessions-1k","result":%s}\n' "$target" "$(cat "$WORK/lg1k.out")" >> "$RESULTS"
  printf '{"target":"%s","pid_kind":"%s","rss_before_kb":%s,"rss_1k_idle_kb":%s,"rss_1k_load_kb":%s,"hwm_kb":%s,"sessions":%s}\n' \
    "$target" "$([ "$target" = direct ] && echo upstream || echo gateway)" "$before" "$idle" "$load" "$hwm" "$IDLE_SESSIONS" >> "$MEMORY"
  echo "   $target/sessions-1k: RSS ${before} KB -> ${idle} KB with $IDLE_SESSIONS idle sessions, ${load} KB under load" >&2
}

# scenarios TARGET URL TOOL_PREFIX
scenarios() {
  local target="$1" url="$2" p="$3"
  measure "$target" call-sat "$url" --sessions "$SAT" --method call --tool "${p}echo" --args '{"text":"hello"}'
  measure "$target" call-c1 "$url" --sessions 1 --method call --tool "${p}echo" --args '{"text":"hello"}'
  measure "$target" call-64k "$url" --sessions "$SAT" --method call --tool "${p}big" --args '{"bytes":65536}'
  measure "$target" list-c1 "$url" --sessions 1 --method list
  measure "$target" list-sat "$url" --sessions "$SAT" --method list
}

# gateway TARGET CONFIG: fresh gateway, memory first, then the scenarios.
gateway() {
  local target="$1" cfg="$2"
  echo "== $target: gateway, $(grep -c '^\[\[policies\]\]' "$cfg") policies, $CONNECTORS connectors" >&2
  start "gw-$target" "$BIN/portcullis" serve --config "$cfg"
  local gw_url="$URL" gw_pid="$PID"
  GW_NAME="gw-$target" GW_PID="$PID"
  sleep 0.5
  printf '{"target":"%s","pid_kind":"gateway","rss_fresh_kb":%s}\n' "$target" "$(rss_kb "$gw_pid")" >> "$MEMORY"
  sessions_1k "$target" "$gw_url" "c0.echo" "$gw_pid"
  scenarios "$target" "$gw_url" "c0."
  GW_NAME=""
  stop "$gw_pid"
  # Keep the gateway's warnings and errors (not the audit lines) for diagnosis.
  grep -E 'WARN|ERROR' "$WORK/gw-$target.err" | head -n 200 > "$OUT/gateway-$target.log" || true
}

STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"   # other work on the machine
echo "== direct: $UP_URL" >&2
printf '{"target":"direct","pid_kind":"upstream","rss_fresh_kb":%s}\n' "$(rss_kb "$UP_PID")" >> "$MEMORY"
scenarios direct "$UP_URL" ""
sessions_1k direct "$UP_URL" "echo" "$UP_PID"
gateway empty "$WORK/empty.toml"
gateway tracing "$WORK/tracing.toml"
gateway builtins "$WORK/builtins.toml"

# ---------------------------------------------------------------- report
CPU="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)"
python3 "$ROOT/tests/bench/report.py" \
  --results "$RESULTS" --memory "$MEMORY" --out-md "$OUT/results.md" --out-json "$OUT/results.json" \
  --mode "$MODE" --date "$STARTED" --nproc "$(nproc)" --cpu "${CPU:-unknown}" \
  --duration "$DUR" --warmup "$WARM" --sat "$SAT" --loadgen-threads "$LG_THREADS" \
  --commit "$(git describe --always --dirty 2>/dev/null || echo unknown)" \
  --loadavg "$LOADAVG" \
  --rustc "$(rustc --version 2>/dev/null || echo unknown)"
