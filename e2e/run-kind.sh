#!/usr/bin/env bash
# The e2e suite on kind, in one command, for a machine with Docker and kind:
#   e2e/run-kind.sh          create the cluster, run everything, delete the cluster
#   e2e/run-kind.sh --keep   leave the cluster running afterwards (kind delete cluster --name scalable-e2e)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CLUSTER=${E2E_CLUSTER:-scalable-e2e}
KEEP=0
[[ "${1:-}" == "--keep" ]] && KEEP=1
say() { printf '\n==> %s\n' "$*"; }
for tool in docker kind kubectl cargo helm; do
  command -v "$tool" >/dev/null || { echo "e2e/run-kind.sh needs $tool on PATH" >&2; exit 1; }
done
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

say "creating kind cluster $CLUSTER (a control plane and two workers)"
kind create cluster --name "$CLUSTER" --config e2e/kind.yaml --wait 180s
if [[ $KEEP == 0 ]]; then
  trap 'say "deleting kind cluster $CLUSTER"; kind delete cluster --name "$CLUSTER"' EXIT
fi
KUBECONFIG_FILE=$(mktemp)
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_FILE"

say "building and loading the images (tag $VERSION)"
for target in operator api-server worker; do
  docker build -f images/Dockerfile --target "$target" -t "scalableapp/$target:$VERSION" .
  kind load docker-image --name "$CLUSTER" "scalableapp/$target:$VERSION"
done

say "installing the prometheus-operator CRDs"
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
helm --kubeconfig "$KUBECONFIG_FILE" upgrade --install prometheus-operator-crds \
  prometheus-community/prometheus-operator-crds --namespace monitoring --create-namespace

say "running the e2e suite"
cargo build -p operator
E2E_KUBECONFIG=$KUBECONFIG_FILE \
E2E_CHART_SET="image.pullPolicy=IfNotPresent" \
  cargo test -p e2e --test e2e -- --nocapture
