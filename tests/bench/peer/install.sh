#!/usr/bin/env bash
# Install the peer gateway (IBM ContextForge, PyPI `mcp-contextforge-gateway`) into
# <repo>/.venv-peer at the version pinned in tests/bench/peer/requirements.txt.
# Idempotent: pip runs only when requirements.txt or the interpreter changed (stamp file
# .venv-peer/.portcullis-peer-requirements.sha256); a re-run otherwise takes well under a second.
# After pip it builds the database template .venv-peer/contextforge-<version>.db (see start.py).
# Needs: python3.11 (or $PEER_PYTHON), network to PyPI.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
VENV="$ROOT/.venv-peer"
STAMP="$VENV/.portcullis-peer-requirements.sha256"
log() { echo "[bench/peer/install] $*" >&2; }

PY="${PEER_PYTHON:-}"
if [ -z "$PY" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null; then PY="$c"; break; fi
  done
fi
[ -n "$PY" ] || { log "no python3 found"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $("$PY" -V)"
  "$PY" -m venv "$VENV"
fi
# The repo's .gitignore does not list .venv-peer: keep git from seeing it.
[ -f "$VENV/.gitignore" ] || echo '*' > "$VENV/.gitignore"
want="$( (cat "$HERE/requirements.txt"; "$VENV/bin/python" -V) | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
  log "pip install -r tests/bench/peer/requirements.txt (about a minute the first time)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
  # A migrated SQLite database to copy at each start (saves ~15 s of migrations per start).
  "$VENV/bin/python" "$HERE/start.py" --prepare
  echo "$want" > "$STAMP"
fi
log "ok: $VENV/bin/gunicorn, $(ls "$VENV"/contextforge-*.db 2>/dev/null || echo 'no database template')"
