# The two commands: `make demo` runs the local demo, `make test` runs every test.
# Both install what they need first (scripts/install-deps.sh, idempotent).
.PHONY: deps demo test env lint crds

deps:
	scripts/install-deps.sh

demo: deps
	cargo xtask demo

test:
	scripts/test.sh

env: deps
	cargo xtask env up

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
