#!/usr/bin/env bash
# `make run`: build, start the in-repo demo upstream and the gateway in front of it,
# and print how to connect. The demo key is created once and kept in .portcullis/.
set -euo pipefail
cd "$(dirname "$0")/../.."
CARGO="${CARGO:-cargo}"
echo "Building portcullis and the demo upstream (debug). The first build compiles every dependency" >&2
echo "and takes ~10-15 minutes on two cores; later runs take seconds. Cargo's progress follows." >&2
$CARGO build -p portcullis -p portcullis-test-upstream
TARGET="$($CARGO metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET/debug"
STATE=.portcullis
mkdir -p "$STATE"
if [ ! -s "$STATE/demo.key" ]; then
  umask 077
  "$BIN/portcullis" keys new 2>/dev/null > "$STATE/demo.keys.txt"
  awk '/^api key:/ {print $3}' "$STATE/demo.keys.txt" > "$STATE/demo.key"
  awk '/^key_sha256:/ {print $2}' "$STATE/demo.keys.txt" > "$STATE/demo.sha256"
  rm -f "$STATE/demo.keys.txt"
  chmod 600 "$STATE/demo.key"
fi
HASH="$(cat "$STATE/demo.sha256")"
UP_PORT="${DEMO_UPSTREAM_PORT:-3901}"
GW_LISTEN="${DEMO_LISTEN:-127.0.0.1:8080}"
sed -e "s/@UPSTREAM_PORT@/$UP_PORT/" -e "s/@LISTEN@/$GW_LISTEN/" -e "s/@KEY_SHA256@/$HASH/" \
  host/demo/portcullis.toml.in > "$STATE/demo.toml"

"$BIN/portcullis-test-upstream" --listen "127.0.0.1:$UP_PORT" --name demo-upstream > "$STATE/upstream.log" 2>&1 &
UP_PID=$!
trap 'kill $UP_PID 2>/dev/null || true' EXIT

cat <<MSG

Portcullis demo
  gateway:   http://$GW_LISTEN/mcp           (all connectors, tools named demo.<tool>)
             http://$GW_LISTEN/mcp/conn_demo (one connector, upstream names)
  upstream:  http://127.0.0.1:$UP_PORT/mcp   (in-repo demo MCP server)
  config:    $STATE/demo.toml
  API key:   in $STATE/demo.key (only its sha256 is in the config)

Connect with any MCP client over Streamable HTTP with the header
  Authorization: Bearer \$(cat $STATE/demo.key)
for example:
  npx @modelcontextprotocol/inspector --cli http://$GW_LISTEN/mcp --transport http \\
      --header "Authorization: Bearer \$(cat $STATE/demo.key)" --method tools/list
or with curl:
  curl -si http://$GW_LISTEN/mcp -H "Authorization: Bearer \$(cat $STATE/demo.key)" -H 'Content-Type: application/json' \\
      -H 'Accept: application/json, text/event-stream' \\
      -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}'
Edit $STATE/demo.toml while it runs (agents, connectors, disabled_tools, [[policies]]):
it reloads without a restart. Tools the demo server adds later are held for approval:
  $BIN/portcullis connectors pending --config $STATE/demo.toml
Ctrl-C stops both.

MSG
"$BIN/portcullis" serve --config "$STATE/demo.toml"
