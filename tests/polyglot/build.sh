#!/usr/bin/env bash
# Builds the polyglot example policy args-guard three times — Rust (guest SDK),
# JavaScript (componentize-js) and Python (componentize-py) — into target/polyglot/
# with `portcullis policy build` (which also embeds the [policy] metadata):
#   target/polyglot/args_guard_rust.wasm   tests/policies/args-guard-rust
#   target/polyglot/args_guard_js.wasm     tests/polyglot/args-guard/js
#   target/polyglot/args_guard_py.wasm     tests/polyglot/args-guard/python
# Idempotent: a language is rebuilt only when its sources, the WIT, the manifest or
# the tool changed (a stamp beside each output). Needs `cargo build --bins` (the
# portcullis binary) and tests/peers/install.sh (componentize-js in tests/node,
# componentize-py in .venv). Usage: tests/polyglot/build.sh [rust|js|py ...]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="$REPO/target/polyglot"
PORTCULLIS="${PORTCULLIS:-$REPO/target/debug/portcullis}"
log() { echo "[polyglot] $*" >&2; }

[ -x "$PORTCULLIS" ] || { log "missing $PORTCULLIS: run cargo build --workspace --bins first"; exit 2; }
mkdir -p "$OUT"

# stamp LANG FILES...: a hash of the inputs that decide a build.
stamp() {
  local lang="$1"; shift
  { for f in "$@"; do find "$f" -type f \( -name '*.rs' -o -name '*.js' -o -name '*.py' \
        -o -name '*.toml' -o -name '*.wit' -o -name '*.json' \) -not -path '*/node_modules/*' \
        -not -path '*/__pycache__/*' -not -path '*/wit_world/*' | LC_ALL=C sort | xargs sha256sum; done
    echo "$lang"; } | sha256sum | cut -d' ' -f1
}

build() {
  local lang="$1" dir="$2" want="$3"; shift 3
  local out="$OUT/args_guard_$lang.wasm" stampf="$OUT/.args_guard_$lang.stamp"
  if [ -f "$out" ] && [ "$(cat "$stampf" 2>/dev/null || true)" = "$want" ]; then
    log "$lang: up to date ($out)"
    return
  fi
  log "$lang: building"
  env "$@" "$PORTCULLIS" policy build "$dir" -o "$out"
  echo "$want" > "$stampf"
}

langs=("$@"); [ ${#langs[@]} -gt 0 ] || langs=(rust js py)
for lang in "${langs[@]}"; do
  case "$lang" in
    rust)
      build rust "$REPO/tests/policies/args-guard-rust" \
        "$(stamp rust "$REPO/tests/policies/args-guard-rust" "$REPO/guest-sdk/src" "$REPO/wit"; rustc --version)" \
        CARGO_TARGET_DIR="$REPO/target/test-policies" CARGO_PROFILE_RELEASE_DEBUG=false ;;
    js)
      tool="$REPO/tests/node/node_modules/.bin/componentize-js"
      [ -x "$tool" ] || { log "missing $tool: run tests/peers/install.sh"; exit 2; }
      build js "$HERE/args-guard/js" \
        "$(stamp js "$HERE/args-guard/js" "$REPO/wit"; grep -A1 '"node_modules/@bytecodealliance/componentize-js"' "$REPO/tests/node/package-lock.json")" \
        COMPONENTIZE_JS="$tool" ;;
    py)
      tool="$REPO/.venv/bin/componentize-py"
      [ -x "$tool" ] || { log "missing $tool: run tests/peers/install.sh"; exit 2; }
      build py "$HERE/args-guard/python" \
        "$(stamp py "$HERE/args-guard/python" "$REPO/wit"; "$tool" --version)" \
        COMPONENTIZE_PY="$tool" ;;
    *) log "unknown language $lang (rust, js, py)"; exit 2 ;;
  esac
done
ls -l "$OUT"/args_guard_*.wasm >&2
