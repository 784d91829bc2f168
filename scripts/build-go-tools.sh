#!/usr/bin/env bash
# Builds the Go programs the test harness runs (kube-apiserver, kube-controller-manager, etcd,
# helm, helm-docs, fake-gcs-server) from their Go modules into a cache keyed by version, and reuses them.
#
# k8s.io/kubernetes and etcd cannot be `go install`ed: their go.mod files replace sibling modules
# with relative paths. So each is built from a small throwaway module that requires it and
# replaces every such module with its published version (for Kubernetes: k8s.io/X v0.<minor>.<patch>).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/versions.env
source "$ROOT/tools/versions.env"

CACHE=${SCALABLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalableapp}
BIN="$CACHE/bin"
mkdir -p "$BIN" "$CACHE/gobuild"
export GOFLAGS="${GOFLAGS:-} -trimpath"
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

log() { printf '[build-go-tools] %s\n' "$*" >&2; }

# new_module DIR NAME: an empty module to build a dependency's main packages from.
new_module() {
  rm -rf "$1" && mkdir -p "$1"
  (cd "$1" && go mod init "$2" >/dev/null 2>&1)
}

build_kubernetes() {
  local dest="$BIN/kubernetes-$K8S_VERSION"
  if [[ -x "$dest/kube-apiserver" && -x "$dest/kube-controller-manager" ]]; then return; fi
  log "building kube-apiserver and kube-controller-manager $K8S_VERSION (takes a while, cached after)"
  local work="$CACHE/gobuild/kubernetes-$K8S_VERSION"
  new_module "$work" scalableapp.local/k8sbuild
  cd "$work"
  go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
  local gomod staging_version
  gomod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod
  staging_version="v0.${K8S_VERSION#v1.}"
  go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  # Every `k8s.io/X => ./staging/...` line of upstream's go.mod becomes `k8s.io/X => k8s.io/X v0.N.P`.
  grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | while read -r m; do
    go mod edit -replace "$m=$m@$staging_version"
  done
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
  go mod tidy >/dev/null
  mkdir -p "$dest.tmp"
  local minor ld
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  go build -ldflags "$ld" -o "$dest.tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  cd - >/dev/null
}

build_etcd() {
  local dest="$BIN/etcd-$ETCD_VERSION"
  if [[ -x "$dest/etcd" ]]; then return; fi
  log "building etcd $ETCD_VERSION"
  local work="$CACHE/gobuild/etcd-$ETCD_VERSION"
  new_module "$work" scalableapp.local/etcdbuild
  cd "$work"
  go mod edit -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  for m in api/v3 client/pkg/v3 client/v3 pkg/v3 server/v3; do
    go mod edit -replace "go.etcd.io/etcd/$m=go.etcd.io/etcd/$m@$ETCD_VERSION"
  done
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  go mod tidy >/dev/null
  mkdir -p "$dest.tmp"
  go build -ldflags "-s -w" -o "$dest.tmp/etcd" go.etcd.io/etcd/server/v3
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  cd - >/dev/null
}

# go_install NAME PKG VERSION: for modules without relative replaces.
go_install() {
  local name=$1 pkg=$2 version=$3 dest="$BIN/$1-$3"
  if [[ -x "$dest/$name" ]]; then return; fi
  log "building $name $version"
  mkdir -p "$dest.tmp"
  GOBIN="$dest.tmp" go install -ldflags "-s -w ${4:-}" "$pkg@$version"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

what=${1:-all}
case "$what" in
  kubernetes) build_kubernetes ;;
  etcd) build_etcd ;;
  helm) go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ;;
  fake-gcs-server) go_install fake-gcs-server github.com/fsouza/fake-gcs-server "$FAKE_GCS_VERSION" ;;
  helm-docs) go_install helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs "$HELM_DOCS_VERSION" ;;
  all)
    build_etcd
    go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    go_install helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs "$HELM_DOCS_VERSION"
    go_install fake-gcs-server github.com/fsouza/fake-gcs-server "$FAKE_GCS_VERSION"
    build_kubernetes
    ;;
  *) echo "usage: $0 [all|kubernetes|etcd|helm|helm-docs|fake-gcs-server]" >&2; exit 2 ;;
esac
