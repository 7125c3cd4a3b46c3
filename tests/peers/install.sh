#!/usr/bin/env bash
# Install the real third-party peers the integration tests run against. Idempotent: a re-run
# with everything in place only compares two hashes and probes PostgreSQL (well under a second).
#   - rustup target wasm32-wasip2            (policy guests)
#   - redis-server                           (Debian package, only if not on PATH)
#   - PostgreSQL on 127.0.0.1:5432, database `test`, trust auth (Debian `postgresql`, only if
#     nothing answers there; when something does, nothing is changed)
#   - <repo>/.venv from tests/peers/requirements.txt  (mcp SDK client/server, uvicorn, moto, ...)
#   - tests/node/node_modules via `npm install` from the lock (server-everything, inspector, conformance, componentize-js)
# Needs: python3 (3.10+), node 20+ with npm, rustup; network to PyPI / npm / crates.io / apt only.
# Installing Debian packages or starting PostgreSQL needs root (or sudo).
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

# 3. PostgreSQL for the audit tests' PostgreSQL sink (tests/src/audit_support.rs): a server on
#    127.0.0.1:5432 with a database `test` that user `postgres` (or `root`) reaches with trust
#    auth. When something already answers on that port this step only probes it (a few tens of
#    milliseconds) and warns if the database is not reachable; it changes nothing.
PG_HOST=127.0.0.1 PG_PORT=5432 PG_DB=test
pg_up() {
  if command -v pg_isready >/dev/null; then
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
  else
    timeout 2 bash -c "exec 3<>/dev/tcp/$PG_HOST/$PG_PORT" 2>/dev/null
  fi
}
pg_db_ok() {  # the tests' own check: user postgres, else root, into database `test`, no password
  local u
  for u in postgres root; do
    psql -w -q -h "$PG_HOST" -p "$PG_PORT" -U "$u" -d "$PG_DB" -tAc 'select 1' >/dev/null 2>&1 && return 0
  done
  return 1
}
if pg_up; then
  if command -v psql >/dev/null && ! pg_db_ok; then
    log "warning: PostgreSQL answers on $PG_HOST:$PG_PORT but database '$PG_DB' is not reachable as"
    log "  user postgres or root without a password; the PostgreSQL audit tests will fail. They need"
    log "  'CREATE DATABASE $PG_DB' and 'host all all $PG_HOST/32 trust' in pg_hba.conf."
  fi
else
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
    log "apt-get install postgresql"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
  fi
  # The cluster on port 5432 (Debian creates `<version> main` on install); create one if none.
  read -r PG_VER PG_NAME < <(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p {print $1, $2; exit}') || true
  if [ -z "${PG_VER:-}" ]; then
    PG_VER="$(ls /usr/lib/postgresql | sort -V | tail -n 1)" PG_NAME=main
    log "pg_createcluster $PG_VER $PG_NAME -p $PG_PORT"
    $SUDO pg_createcluster "$PG_VER" "$PG_NAME" -p "$PG_PORT"
  fi
  # Trust auth for TCP connections from 127.0.0.1, ahead of any other rule (first match wins).
  HBA="/etc/postgresql/$PG_VER/$PG_NAME/pg_hba.conf"
  if ! $SUDO grep -qxE "host[[:space:]]+all[[:space:]]+all[[:space:]]+$PG_HOST/32[[:space:]]+trust" "$HBA"; then
    log "pg_hba.conf: trust for $PG_HOST/32"
    $SUDO sed -i "1i host all all $PG_HOST/32 trust" "$HBA"
  fi
  log "starting PostgreSQL $PG_VER/$PG_NAME"
  if ! $SUDO pg_ctlcluster "$PG_VER" "$PG_NAME" start 2>/dev/null; then
    # Already running (then reload the pg_hba.conf change), or no pg_ctlcluster rights: try service.
    $SUDO pg_ctlcluster "$PG_VER" "$PG_NAME" reload 2>/dev/null || $SUDO service postgresql start
  fi
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
  pg_up || { log "error: PostgreSQL does not answer on $PG_HOST:$PG_PORT"; exit 1; }
  has_db="$(psql -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc \
      "select 1 from pg_database where datname = '$PG_DB'")"
  if [ "$has_db" != 1 ]; then
    log "createdb $PG_DB"
    createdb -w -h "$PG_HOST" -p "$PG_PORT" -U postgres "$PG_DB"
  fi
  pg_db_ok || { log "error: database '$PG_DB' on $PG_HOST:$PG_PORT refuses users postgres and root"; exit 1; }
fi

# 4. Python venv; pip runs only when requirements.txt (or the interpreter) changed.
VENV="$REPO/.venv"
PY_STAMP="$VENV/.portcullis-requirements.sha256"
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }
want="$( (cat "$HERE/requirements.txt"; "$VENV/bin/python" -V) | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$PY_STAMP" 2>/dev/null || true)" != "$want" ]; then
  log "pip install -r tests/peers/requirements.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
  echo "$want" > "$PY_STAMP"
fi

# 5. npm peers; installed only when node_modules is missing or the lock (or node) changed.
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

log "ok: $VENV/bin/python, $NODE_DIR/node_modules/.bin/{mcp-server-everything,mcp-inspector,conformance}, $(command -v redis-server), PostgreSQL on $PG_HOST:$PG_PORT/$PG_DB"
