# Portcullis: the two commands are `make run` and `make test`.
# Every target installs what it needs first, idempotently.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: run test build lint deps wasm-target polyglot bench bench-quick bench-peer

## Start the gateway on a demo config in front of the in-repo demo upstream (the first build
## takes ~10-15 minutes on two cores).
run: wasm-target
	bash host/demo/run.sh

## Install test prerequisites (tests/peers/install.sh: redis, PostgreSQL on 127.0.0.1:5432,
## Python venv, npm peers), lint, and run every test (unit, policy, integration).
test: deps build lint polyglot
	$(CARGO) test --workspace --no-fail-fast

build: wasm-target
	$(CARGO) build --workspace --bins

lint: wasm-target
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The args-guard policy in Rust, JavaScript and Python (target/polyglot/), for the
## three-language tests; rebuilt only when its sources change.
polyglot: deps build
	PORTCULLIS="$$($(CARGO) metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/portcullis" \
		bash tests/polyglot/build.sh

## Everything the tests talk to: wasm target, redis-server, PostgreSQL (127.0.0.1:5432, database
## `test`, trust auth; installed and started only when nothing answers there), Python venv, npm peers.
deps:
	bash tests/peers/install.sh

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

## Benchmarks (release build; method and results in docs/benchmarks.md and tests/bench/README.md).
bench: wasm-target bench-peer
	bash tests/bench/bench.sh

## The peer gateway (mcp-contextforge-gateway, pinned) in .venv-peer. A failed install
## does not stop `make bench`: the report then says the peer was skipped and why.
bench-peer:
	-bash tests/bench/peer/install.sh

bench-quick: wasm-target
	bash tests/bench/bench.sh --quick
