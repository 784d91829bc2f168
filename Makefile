# The two commands: `make demo` runs the local demo, `make test` runs every test.
# Both install what they need first (scripts/install-deps.sh, idempotent).
.PHONY: deps demo test env lint crds chart-docs images docs

deps:
	scripts/install-deps.sh

demo: deps
	cargo build --quiet --workspace --bins
	cargo xtask demo

test:
	scripts/test.sh

env: deps
	cargo xtask env up

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	git ls-files -z '*.sh' .ci/run | xargs -0 shellcheck -x

# Regenerate what is generated from the code (tests fail when these drift).
crds:
	cargo run --quiet -p operator -- crd > crds/scalableapp.yaml
	cp crds/scalableapp.yaml charts/scalable-operator/files/scalableapp-crd.yaml

chart-docs:
	cd charts/scalable-operator && "$${SCALABLE_CACHE:-$$HOME/.cache/scalableapp}/bin/helm-docs-$$(sed -n 's/^HELM_DOCS_VERSION=//p' ../../tools/versions.env)/helm-docs" \
	  --chart-search-root . --template-files README.md.gotmpl

# OCI image layouts of operator, api-server and worker, built without a container engine.
images: deps
	scripts/build-images.sh

# docs/crd-reference.md and docs/configuration.md, generated from the code.
docs:
	cargo build --quiet --workspace --bins
	cargo xtask docs
