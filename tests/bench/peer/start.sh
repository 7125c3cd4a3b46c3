#!/usr/bin/env bash
# Start ContextForge (the peer gateway) in front of UPSTREAM_URL for benchmarks.
#   bash tests/bench/peer/start.sh UPSTREAM_URL [--workers N] [--name NAME]
# Prints `listening on http://127.0.0.1:PORT/servers/<id>/mcp` and `key: <JWT>` on stdout,
# then stays in the foreground until SIGTERM/SIGINT, which stops ContextForge and all its
# workers. Needs `bash tests/bench/peer/install.sh` first. See tests/bench/peer/README.md.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
PY="$ROOT/.venv-peer/bin/python"
if [ ! -x "$PY" ]; then
  echo "[bench/peer] $PY missing: run bash tests/bench/peer/install.sh" >&2
  exit 1
fi
# exec: the signal sent to this PID reaches start.py directly.
exec "$PY" "$HERE/start.py" "$@"
