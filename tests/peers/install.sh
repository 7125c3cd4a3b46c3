#!/usr/bin/env bash
# Install the real third-party peers the integration tests run against. Idempotent: a re-run
# with everything in place only compares two hashes (well under a second).
#   - rustup target wasm32-wasip2            (policy guests)
#   - redis-server                           (Debian package, only if not on PATH)
#   - <repo>/.venv from tests/peers/requirements.txt  (mcp SDK client/server, uvicorn, moto, ...)
#   - tests/node/node_modules via `npm install` from the lock (server-everything, inspector, conformance, componentize-js)
# Needs: python3 (3.10+), node 20+ with npm, rustup; network to PyPI / npm / crates.io / apt only.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
log() { echo "[peers/install] $*" >&2; }

# 1. Rust target for Wasm policy components.
if command -v rustup >/dev/null; then
  if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    log "rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2
  fi
else
  log "warning: rustup not found; skipping wasm32-wasip2"
fi

# 2. redis-server from Debian (root, or sudo when available).
if ! command -v redis-server >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "apt-get install redis-server"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server
fi

# 3. Python venv; pip runs only when requirements.txt (or the interpreter) changed.
VENV="$REPO/.venv"
PY_STAMP="$VENV/.portcullis-requirements.sha256"
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }
want="$( (cat "$HERE/requirements.txt"; "$VENV/bin/python" -V) | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$PY_STAMP" 2>/dev/null || true)" != "$want" ]; then
  log "pip install -r tests/peers/requirements.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
  echo "$want" > "$PY_STAMP"
fi

# 4. npm peers; installed only when node_modules is missing or the lock (or node) changed.
NODE_DIR="$REPO/tests/node"
NPM_STAMP="$NODE_DIR/node_modules/.portcullis-lock.sha256"
want="$( (cat "$NODE_DIR/package-lock.json"; node --version) | sha256sum | cut -d' ' -f1)"
if [ ! -d "$NODE_DIR/node_modules" ] || [ "$(cat "$NPM_STAMP" 2>/dev/null || true)" != "$want" ]; then
  log "npm install in tests/node"
  # Inspector 2.x declares node >=22.19 but its CLI works on node 20: engine warnings are expected.
  # `npm install` honours the lock file like `npm ci`, but tolerates the platform-specific
  # optional packages (other OSes/arches) that componentize-js lists and the registry lacks.
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error)
  echo "$want" > "$NPM_STAMP"
fi

log "ok: $VENV/bin/python, $NODE_DIR/node_modules/.bin/{mcp-server-everything,mcp-inspector,conformance}, $(command -v redis-server)"
