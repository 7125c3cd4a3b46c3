#!/usr/bin/env bash
# `make bench` / `make bench-quick`: Portcullis against direct calls, in one run,
# against one in-repo upstream on loopback.
#
#   bash tests/bench/bench.sh [--quick]
#
# Targets (all in front of the same `portcullis-test-upstream --response json`):
#   direct       the upstream itself
#   empty        the gateway with an empty policy chain (audit log to SQLite, the default)
#   bare         empty chain, no quota, `[audit] sink = "none"`       (issue 4's "off")
#   quota-audit  empty chain, Redis quota (own redis-server), SQLite audit (its "on");
#                the org is far from its limit, so threads count calls ahead in
#                blocks (the default `quota.reserve = 64`)
#   quota-exact  the same with `reserve = 0`: one script call per check (or per
#                batch of concurrent checks), as for an org near its limit
#   tracing      empty chain with every span exported over OTLP/HTTP to a local sink
#   builtins     the four built-ins (slug-scope, blocklist, mcp-servers,
#                annotation-hints), decisions reused (the default), SQLite audit
#   builtins-cold  the same with `cache_decisions = false`: every decision evaluated
#   production   the four built-ins + Redis quota + SQLite audit (the production shape)
#   nopin        empty chain with `tool_pinning = "off"` on every connector (the
#                other targets pin, the default): what pinning costs a tools/list
#   stdio        empty chain, every connector the same upstream program run over
#                stdio (`transport = "stdio"`, one process per session): against
#                `empty`, what the stdio transport costs a tools/call
#   nginx        nginx as a plain reverse proxy (keep-alive upstream, no buffering,
#                no parsing): what one proxy hop costs on this machine, the floor
#                for any gateway; installed from Debian if missing (BENCH_NGINX=0
#                skips it)
#   peer         mcp-contextforge-gateway (PyPI, pinned, its own venv; see
#                tests/bench/peer/) fronting the same upstream; skipped with
#                BENCH_PEER=0, in quick mode (BENCH_PEER=1 keeps it), or when
#                its install fails (the report says so)
# Scenarios (portcullis-loadgen, HTTP/1.1 keep-alive, one connection per session):
#   call-sat     tools/call echo, $SAT sessions (throughput at saturation)
#   call-c1      tools/call echo, 1 session (latency)
#   call-64k     tools/call big {bytes: 65536}, $SAT sessions
#   list-c1      tools/list, 1 session: through the gateway the merged list of
#                10 connectors x 100 tools (1,000 tools); direct: one upstream's 100
#   list-sat     the same with $SAT sessions
#   read-16      resources/read of one text resource, 16 sessions (the upstream runs
#                with --items 8; on /mcp the URI is portcullis://c0/test://doc/1)
#   get-16       prompts/get greet {name}, 16 sessions
#   sessions-1k  1,000 concurrent sessions opened, held idle, then tools/call echo
#   reload-load  (production) call-sat while the config is hot-reloaded every 0.5 s
#                (the whole config: agents, connectors, quotas and the chain),
#                alternating between the four built-ins and the four plus
#                redact-secrets (which is then compiled afresh each time)
# Not every target runs every scenario (see `run_targets` below); quick mode
# shortens every row.
# Memory: gateway VmRSS fresh (idle), with 1,000 idle sessions, under load from
# them, and the peak (VmHWM); the peer's RSS summed over its processes.
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
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $arg (usage: bench.sh [--quick])" >&2; exit 2 ;;
  esac
done

if [ "$QUICK" = 1 ]; then
  DUR="${BENCH_DURATION:-1}"; WARM="${BENCH_WARMUP:-0.5}"; HOLD=1; MODE=quick
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
# Configs live in their own directory: the gateway watches it for reloads, and a
# deployment keeps its logs and audit database elsewhere.
CFG="$WORK/cfg"
mkdir -p "$CFG"
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

# cpu_ticks PID...: user + system CPU ticks (100 a second) summed over the PIDs.
cpu_ticks() {
  local total=0 p t
  for p in "$@"; do
    t="$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)"
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- setup
"$BIN/portcullis" keys new > "$WORK/key.txt" 2>/dev/null
KEY="$(awk '/^api key:/ {print $3}' "$WORK/key.txt")"
HASH="$(awk '/^key_sha256:/ {print $2}' "$WORK/key.txt")"
[ -n "$KEY" ] && [ -n "$HASH" ] || { echo "bench.sh: portcullis keys new gave no key" >&2; exit 1; }

start upstream "$BIN/portcullis-test-upstream" --listen 127.0.0.1:0 --response json \
  --extra-tools $((TOOLS_PER_CONNECTOR - 14)) --name bench-upstream --items 8
UP_URL="$URL"
UP_PID="$PID"
# The same upstream with a fixed 5 ms answer time (a realistic tool), for the
# call-delay rows: how much of a real call's time the gateway adds.
start upstream-delay "$BIN/portcullis-test-upstream" --listen 127.0.0.1:0 --response json \
  --extra-tools $((TOOLS_PER_CONNECTOR - 14)) --name bench-upstream-delay --delay-ms 5
UP_DELAY_URL="$URL"

# Redis for the quota targets: our own server on a free port, nothing on disk.
REDIS_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  > "$WORK/redis.out" 2> "$WORK/redis.err" &
PIDS+=("$!")
for i in $(seq 1 100); do
  if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then break; fi
  sleep 0.05
done
redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG || { echo "bench.sh: redis-server did not start" >&2; exit 1; }

BUILTINS="slug-scope blocklist mcp-servers annotation-hints"

# config FILE [--audit-none] [--quota] [--exact] [--cold] [--nopin] [POLICY...]: ten
# connectors named c0..c9 on the same upstream, then the given built-in policies.
config() {
  local file="$1"; shift
  local audit_none=0 quota=0 exact=0 cold=0 nopin=0 stdio=0 upstream="$UP_URL"
  while [ $# -gt 0 ]; do
    case "$1" in
      --nopin) nopin=1 ;;
      --stdio) stdio=1 ;;
      --upstream) upstream="$2"; shift ;;
      --audit-none) audit_none=1 ;;
      --quota) quota=1 ;;
      --exact) exact=1 ;;
      --cold) cold=1 ;;
      *) break ;;
    esac
    shift
  done
  {
    printf '[server]\nlisten = "127.0.0.1:0"\ntool_separator = "."\nlist_page_size = 100000\n\n'
    if [ "$audit_none" = 1 ]; then
      printf '[audit]\nsink = "none"\n\n'
    else
      printf '[audit]\npath = "%s/audit-%s.db"\n\n' "$WORK" "$(basename "$file" .toml)"
    fi
    if [ "$quota" = 1 ]; then
      # A limit the bench never reaches (blocks of 64 are taken; --exact: none, so
      # every check pays the Redis round trip, shared only by concurrent checks).
      printf '[quota]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:%s/0"\nkey_prefix = "bench-%s"\n' \
        "$REDIS_PORT" "$(basename "$file" .toml)"
      if [ "$exact" = 1 ]; then printf 'reserve = 0\n'; fi
      printf '\n'
      printf '[[orgs]]\nid = "bench"\nquota = { calls = 1000000000, per = "day" }\n\n'
    fi
    local i
    for i in $(seq 0 $((CONNECTORS - 1))); do
      if [ "$stdio" = 1 ]; then
        printf '[[connectors]]\nid = "conn_c%d"\nname = "c%d"\ntransport = "stdio"\ncommand = "%s"\nargs = ["--stdio", "--extra-tools", "%d"]\ndisabled_tools = ["never_*"]\ntimeout_ms = 30000\n\n' \
          "$i" "$i" "$BIN/portcullis-test-upstream" "$((TOOLS_PER_CONNECTOR - 16))"
        continue
      fi
      printf '[[connectors]]\nid = "conn_c%d"\nname = "c%d"\ntarget_url = "%s"\ndisabled_tools = ["never_*"]\ntimeout_ms = 30000\n' "$i" "$i" "$upstream"
      if [ "$nopin" = 1 ]; then printf 'tool_pinning = "off"\n'; fi
      printf '\n'
    done
    printf '[[agents]]\nid = "bench"\norg = "bench"\nkey_sha256 = "%s"\nscopes = ["mcp:call"]\nmcp_servers = [{ url = "*" }]\n\n' "$HASH"
    local p
    for p in "$@"; do
      printf '[[policies]]\nmodule = "builtin:%s"\n' "$p"
      if [ "$cold" = 1 ]; then printf 'cache_decisions = false\n'; fi
      printf '\n'
    done
  } > "$file"
}
# shellcheck disable=SC2086
{
  config "$CFG/empty.toml"
  config "$CFG/nopin.toml" --nopin
  config "$CFG/stdio.toml" --stdio
  config "$CFG/bare.toml" --audit-none
  config "$CFG/quota-audit.toml" --quota
  config "$CFG/quota-exact.toml" --quota --exact
  config "$CFG/builtins.toml" $BUILTINS
  config "$CFG/builtins-cold.toml" --cold $BUILTINS
  config "$CFG/production.toml" --quota $BUILTINS
  config "$CFG/production-delay.toml" --upstream "$UP_DELAY_URL" --quota $BUILTINS
}
# The reload-under-load variant: production plus redact-secrets (only the chain
# differs, so each swap is a policy reload and nothing else).
cp "$CFG/production.toml" "$CFG/production-plus.toml"
printf '[[policies]]\nmodule = "builtin:redact-secrets"\n' >> "$CFG/production-plus.toml"

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
cp "$CFG/empty.toml" "$CFG/tracing.toml"
printf '[telemetry]\notlp_endpoint = "http://127.0.0.1:%s"\notlp_protocol = "http"\n' "$SINK_PORT" >> "$CFG/tracing.toml"

RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
MEMORY="$WORK/memory.jsonl"
: > "$MEMORY"
RELOADS="$WORK/reloads.jsonl"
: > "$RELOADS"
PEER_STATUS="$WORK/peer.jsonl"
: > "$PEER_STATUS"

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
  local line lg rc=0 gw_pids="${CPU_GW_PIDS:-${GW_PID:-}}" gw0 up0
  [ -n "${GW_NAME:-}" ] || [ -n "${CPU_GW_PIDS:-}" ] || gw_pids=""
  "$BIN/portcullis-loadgen" --url "$url" --key "$KEY" --threads "$LG_THREADS" \
      --warmup "$WARM" --duration "$DUR" --json "$@" > "$WORK/loadgen.out" 2> "$WORK/loadgen.err" &
  lg=$!
  PIDS+=("$lg")
  # CPU time of the servers over the measured window (after the warm-up).
  sleep "$WARM"
  gw0="$(cpu_ticks $gw_pids)"; up0="$(cpu_ticks "$UP_PID")"
  wait "$lg" || rc=$?
  forget "$lg"
  line="$(cat "$WORK/loadgen.out")"
  if [ "$rc" = 0 ]; then
    line="$(echo "$line" | python3 -c '
import json, sys
r = json.load(sys.stdin)
gw, up = int(sys.argv[1]), int(sys.argv[2])
n = r.get("requests") or 0
if n:
    if sys.argv[3] == "1":
        r["gateway_cpu_us_per_req"] = round(gw * 10000 / n)
    r["upstream_cpu_us_per_req"] = round(up * 10000 / n)
print(json.dumps(r))' "$(( $(cpu_ticks $gw_pids) - gw0 ))" "$(( $(cpu_ticks "$UP_PID") - up0 ))" "$([ -n "$gw_pids" ] && echo 1 || echo 0)")"
  fi
  if [ "$rc" != 0 ]; then
    echo "bench.sh: loadgen failed for $target/$scenario:" >&2
    cat "$WORK/loadgen.err" >&2
    if [ "${MEASURE_SOFT:-0}" = 1 ]; then
      # The peer: record the failure, keep benchmarking.
      printf '{"target":"%s","scenario":"%s","failed":%s}\n' "$target" "$scenario" \
        "$(tail -n 3 "$WORK/loadgen.err" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" >> "$PEER_STATUS"
      return 1
    fi
    check_alive
    exit 1
  fi
  check_alive
  printf '{"target":"%s","scenario":"%s","result":%s}\n' "$target" "$scenario" "$line" >> "$RESULTS"
  echo "$line" | python3 -c "import json,sys; r=json.load(sys.stdin); print(f'   $target/$scenario: {r[\"rps\"]:.0f} req/s, p50 {r[\"p50_us\"]} us, p99 {r[\"p99_us\"]} us, errors {r[\"errors\"]}, CPU us/req gateway {r.get(\"gateway_cpu_us_per_req\", \"-\")} upstream {r.get(\"upstream_cpu_us_per_req\", \"-\")} loadgen {r.get(\"loadgen_cpu_us_per_req\", \"-\")}')" >&2
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

# qualified PREFIX URI: URI as agents name it on /mcp (`c0.` -> portcullis://c0/URI);
# an empty prefix (direct) leaves it as it is.
qualified() {
  if [ -z "$1" ]; then echo "$2"; else echo "portcullis://${1%.}/$2"; fi
}

# scenarios TARGET URL TOOL_PREFIX [SCENARIO...]: the given scenarios (default: all five).
scenarios() {
  local target="$1" url="$2" p="$3"; shift 3
  local want=("$@")
  [ ${#want[@]} -gt 0 ] || want=(call-sat call-c1 call-64k list-c1 list-sat)
  local sc
  for sc in "${want[@]}"; do
    case "$sc" in
      call-sat) measure "$target" call-sat "$url" --sessions "$SAT" --method call --tool "${p}echo" --args '{"text":"hello"}' ;;
      call-c1) measure "$target" call-c1 "$url" --sessions 1 --method call --tool "${p}echo" --args '{"text":"hello"}' ;;
      call-64k) measure "$target" call-64k "$url" --sessions "$SAT" --method call --tool "${p}big" --args '{"bytes":65536}' ;;
      list-c1) measure "$target" list-c1 "$url" --sessions 1 --method list ;;
      list-sat) measure "$target" list-sat "$url" --sessions "$SAT" --method list ;;
      call-delay) measure "$target" call-delay "$url" --sessions 64 --method call --tool "${p}echo" --args '{"text":"hello"}' ;;
      read-16) measure "$target" read-16 "$url" --sessions 16 --method read --uri "$(qualified "$p" test://doc/1)" ;;
      get-16) measure "$target" get-16 "$url" --sessions 16 --method get --tool "${p}greet" --args '{"name":"bench"}' ;;
      *) echo "bench.sh: unknown scenario $sc" >&2; exit 2 ;;
    esac
  done
}

# reload_under_load TARGET URL CONFIG OTHER_CONFIG: call-sat while the config file
# alternates between CONFIG and OTHER_CONFIG every 0.5 s (each write is a reload);
# the reload times come from the gateway's "policy chain reloaded ... took_ms" lines.
reload_under_load() {
  local target="$1" url="$2" cfg="$3" other="$4" err="$5"
  local live="$CFG/reload-live.toml" before reloads
  before="$(grep -c 'policy chain reloaded' "$err" || true)"
  (
    # Bounded: at most 4 swaps a second for the run's length.
    local n k
    n="$(python3 -c "print(int(($WARM + $DUR) * 2))")"
    for k in $(seq 1 "$n"); do
      sleep 0.5
      if [ $((k % 2)) = 1 ]; then cp "$other" "$live.tmp"; else cp "$cfg" "$live.tmp"; fi
      mv "$live.tmp" "$live"
    done
  ) &
  local flipper=$!
  PIDS+=("$flipper")
  measure "$target" reload-load "$url" --sessions "$SAT" --method call --tool "c0.echo" --args '{"text":"hello"}'
  wait "$flipper" 2>/dev/null || true
  forget "$flipper"
  sleep 1
  reloads="$(grep 'policy chain reloaded' "$err" | tail -n +"$((before + 1))" | sed -n 's/.*took_ms=\([0-9.]*\).*/\1/p' | tr '\n' ' ')"
  printf '{"target":"%s","scenario":"reload-load","reload_took_ms":[%s]}\n' "$target" \
    "$(echo "$reloads" | xargs | tr ' ' ',')" >> "$RELOADS"
  echo "   $target/reload-load: $(echo "$reloads" | wc -w) reloads, took_ms: $reloads" >&2
}

# gateway TARGET CONFIG [--sessions] [--reload OTHER] [SCENARIO...]: a fresh gateway;
# memory first (with --sessions: the 1,000-session row), then the scenarios.
gateway() {
  local target="$1" cfg="$2"; shift 2
  local with_sessions=0 reload_other="" memory=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --no-memory) memory=0 ;;
      --sessions) with_sessions=1 ;;
      --reload) reload_other="$2"; shift ;;
      *) break ;;
    esac
    shift
  done
  echo "== $target: gateway, $(grep -c '^\[\[policies\]\]' "$cfg") policies, $CONNECTORS connectors" >&2
  local run_cfg="$cfg"
  if [ -n "$reload_other" ]; then
    run_cfg="$CFG/reload-live.toml"
    cp "$cfg" "$run_cfg"
  fi
  start "gw-$target" "$BIN/portcullis" serve --config "$run_cfg"
  local gw_url="$URL" gw_pid="$PID"
  GW_NAME="gw-$target" GW_PID="$PID"
  sleep 0.5
  if [ "$memory" = 1 ]; then
    printf '{"target":"%s","pid_kind":"gateway","rss_fresh_kb":%s}\n' "$target" "$(rss_kb "$gw_pid")" >> "$MEMORY"
  fi
  if [ "$with_sessions" = 1 ]; then
    sessions_1k "$target" "$gw_url" "c0.echo" "$gw_pid"
  fi
  scenarios "$target" "$gw_url" "c0." "$@"
  if [ -n "$reload_other" ]; then
    reload_under_load "$target" "$gw_url" "$cfg" "$reload_other" "$WORK/gw-$target.err"
  fi
  GW_NAME=""
  stop "$gw_pid"
  # Keep the gateway's warnings and errors (not the audit lines) for diagnosis.
  grep -E 'WARN|ERROR' "$WORK/gw-$target.err" | head -n 200 > "$OUT/gateway-$target.log" || true
}

# peer: mcp-contextforge-gateway in front of the same upstream (tests/bench/peer/).
peer() {
  # Quick mode leaves the peer out (it alone takes ~1 minute to install on first use
  # and ~15 s to start); BENCH_PEER=1 brings it back, BENCH_PEER=0 drops it from full.
  if [ "${BENCH_PEER:-$([ "$QUICK" = 1 ] && echo 0 || echo 1)}" = 0 ]; then
    echo "== peer: skipped (quick mode or BENCH_PEER=0)" >&2
    printf '{"target":"peer","skipped":"quick mode or BENCH_PEER=0"}\n' >> "$PEER_STATUS"
    return
  fi
  if ! bash "$ROOT/tests/bench/peer/install.sh" > "$WORK/peer-install.log" 2>&1; then
    echo "== peer: install failed (see $OUT/peer-install.log); skipped" >&2
    cp "$WORK/peer-install.log" "$OUT/peer-install.log"
    printf '{"target":"peer","skipped":"install failed"}\n' >> "$PEER_STATUS"
    return
  fi
  echo "== peer: $(grep -i '^mcp-contextforge-gateway==' "$ROOT/tests/bench/peer/requirements.txt")" >&2
  bash "$ROOT/tests/bench/peer/start.sh" "$UP_URL" > "$WORK/peer.out" 2> "$WORK/peer.err" &
  local pid=$! i url="" key=""
  PIDS+=("$pid")
  for i in $(seq 1 1200); do   # contextforge takes a while to migrate and start
    url="$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$WORK/peer.out" | head -n1)"
    key="$(sed -n 's/^key: \(.*\)$/\1/p' "$WORK/peer.out" | head -n1)"
    if [ -n "$url" ] && [ -n "$key" ]; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [ -z "$url" ] || [ -z "$key" ]; then
    echo "== peer: did not start; skipped. Its stderr:" >&2
    tail -n 20 "$WORK/peer.err" >&2
    cp "$WORK/peer.err" "$OUT/peer.err"
    stop "$pid"
    printf '{"target":"peer","skipped":"did not start"}\n' >> "$PEER_STATUS"
    return
  fi
  # start.py registers the upstream as gateway "upstream"; the peer names its tools
  # <gateway>-<tool> with '_' as '-' (tests/bench/peer/README.md).
  local tool="upstream-echo" big="upstream-big"
  sleep 1
  printf '{"target":"peer","pid_kind":"peer","rss_fresh_kb":%s}\n' "$(tree_rss_kb "$pid")" >> "$MEMORY"
  local saved_key="$KEY"
  KEY="$key"
  CPU_GW_PIDS="$(tree_pids "$pid")"
  MEASURE_SOFT=1
  measure peer call-sat "$url" --sessions "$SAT" --method call --tool "$tool" --args '{"text":"hello"}' || true
  measure peer call-c1 "$url" --sessions 1 --method call --tool "$tool" --args '{"text":"hello"}' || true
  measure peer call-64k "$url" --sessions "$SAT" --method call --tool "$big" --args '{"bytes":65536}' || true
  MEASURE_SOFT=0
  CPU_GW_PIDS=""
  printf '{"target":"peer","pid_kind":"peer","rss_load_end_kb":%s}\n' "$(tree_rss_kb "$pid")" >> "$MEMORY"
  KEY="$saved_key"
  printf '{"target":"peer","version":"%s"}\n' "$(grep -i '^mcp-contextforge-gateway==' "$ROOT/tests/bench/peer/requirements.txt" | head -n1)" >> "$PEER_STATUS"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  stop "$pid"
}

# nginx_target: nginx in front of the upstream, two workers (one per core).
nginx_target() {
  if [ "${BENCH_NGINX:-1}" = 0 ]; then
    echo "== nginx: skipped (BENCH_NGINX=0)" >&2
    return
  fi
  if ! command -v nginx > /dev/null; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    echo "== nginx: installing nginx-light from Debian" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light > "$WORK/nginx-install.log" 2>&1 || true
  fi
  if ! command -v nginx > /dev/null; then
    echo "== nginx: not installed; skipped" >&2
    return
  fi
  local port hostport
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  hostport="$(echo "$UP_URL" | sed 's#^http://##; s#/.*$##')"
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx/nginx.conf" <<NGX
worker_processes 2;
daemon off;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  keepalive_requests 100000000;
  upstream up { server $hostport; keepalive 256; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGX
  echo "== nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //')" >&2
  nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" > "$WORK/nginx.out" 2> "$WORK/nginx.err" &
  local pid=$! i
  PIDS+=("$pid")
  for i in $(seq 1 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then break; fi
    sleep 0.05
  done
  CPU_GW_PIDS="$(tree_pids "$pid")"
  scenarios nginx "http://127.0.0.1:$port/mcp" "" call-sat call-c1 call-64k
  CPU_GW_PIDS=""
  stop "$pid"
}

# tree_pids PID: PID and its descendants (three levels: script, server, workers).
tree_pids() {
  local level="$1" next all="$1" p
  for _ in 1 2 3; do
    next=""
    for p in $level; do next="$next $(pgrep -P "$p" 2>/dev/null | xargs)"; done
    all="$all $next"
    level="$next"
  done
  echo $all
}

# tree_rss_kb PID: VmRSS summed over PID and its descendants.
tree_rss_kb() {
  local total=0 p
  for p in $(tree_pids "$1"); do
    total=$((total + $(rss_kb "$p")))
  done
  echo "$total"
}

STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"   # other work on the machine
echo "== direct: $UP_URL" >&2
printf '{"target":"direct","pid_kind":"upstream","rss_fresh_kb":%s}\n' "$(rss_kb "$UP_PID")" >> "$MEMORY"
scenarios direct "$UP_URL" ""
scenarios direct "$UP_URL" "" read-16 get-16
sessions_1k direct "$UP_URL" "echo" "$UP_PID"
# run_targets: which scenarios each target runs (the full set where a ratio matters).
nginx_target
gateway empty "$CFG/empty.toml" --sessions
gateway bare "$CFG/bare.toml" call-sat call-c1
gateway quota-audit "$CFG/quota-audit.toml" call-sat call-c1
gateway quota-exact "$CFG/quota-exact.toml" call-sat
gateway tracing "$CFG/tracing.toml" call-sat call-c1
gateway nopin "$CFG/nopin.toml" --no-memory list-c1 list-sat
gateway stdio "$CFG/stdio.toml" --no-memory call-sat call-c1
gateway builtins "$CFG/builtins.toml" call-sat call-c1 list-c1 list-sat read-16 get-16
gateway empty "$CFG/empty.toml" --no-memory read-16 get-16
gateway builtins-cold "$CFG/builtins-cold.toml" call-sat call-c1 list-c1
gateway production "$CFG/production.toml" --sessions --reload "$CFG/production-plus.toml"
# A realistic tool: the upstream answers after 5 ms; 64 sessions.
scenarios direct "$UP_DELAY_URL" "" call-delay
gateway production "$CFG/production-delay.toml" --no-memory call-delay
# Issue 4's pair again, alternating, so machine drift hits both alike (the report
# takes the median of the three call-sat runs of each).
# The built-ins' cost at one session the same way: empty chain and built-ins
# alternating (the report takes the median of the per-round differences).
for round in 2 3; do
  gateway bare "$CFG/bare.toml" --no-memory call-sat
  gateway quota-audit "$CFG/quota-audit.toml" --no-memory call-sat
  gateway quota-exact "$CFG/quota-exact.toml" --no-memory call-sat
  gateway empty "$CFG/empty.toml" --no-memory call-c1 list-c1
  gateway builtins "$CFG/builtins.toml" --no-memory call-c1
  gateway nopin "$CFG/nopin.toml" --no-memory list-c1
done
peer

# ---------------------------------------------------------------- report
CPU="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)"
python3 "$ROOT/tests/bench/report.py" \
  --results "$RESULTS" --memory "$MEMORY" --reloads "$RELOADS" --peer "$PEER_STATUS" --out-md "$OUT/results.md" --out-json "$OUT/results.json" \
  --mode "$MODE" --date "$STARTED" --nproc "$(nproc)" --cpu "${CPU:-unknown}" \
  --duration "$DUR" --warmup "$WARM" --sat "$SAT" --loadgen-threads "$LG_THREADS" \
  --commit "$(git describe --always --dirty 2>/dev/null || echo unknown)" \
  --loadavg "$LOADAVG" \
  --rustc "$(rustc --version 2>/dev/null || echo unknown)"
