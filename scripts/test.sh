#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test against the real services.
set -euo pipefail
cd "$(dirname "$0")/.."
"$PWD/scripts/install-deps.sh"
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== shellcheck (every shell script, e2e/run-kind.sh included: it cannot run here)"
git ls-files -z '*.sh' .ci/run | xargs -0 shellcheck -x
echo "== images (dev profile: the tests check their structure, not their speed)"
PROFILE=dev scripts/build-images.sh
echo "== cargo test"
# Not under `set -e`: a failing test must still reach the summary line below.
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "${TMPDIR:-/tmp}/scalableapp-test.log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary.
awk '/^test result:/ {p+=$4; f+=$6; i+=$8} END {printf "%d passed, %d failed, %d skipped\n", p, f, i}' \
  "${TMPDIR:-/tmp}/scalableapp-test.log"
exit "$status"
