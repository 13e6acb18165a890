#!/usr/bin/env bash
# Build the Kubernetes kubelet from the Go module proxy, for the kubelet
# end-to-end suite (e2e/kubelet), which runs this when its cached binary is
# missing or of another version. About 6 minutes on two cores.
#
# Usage: OUT=/var/cache/pier-e2e/kubelet-v1.37.2 build-kubelet.sh
#        FORCE=1 ... rebuilds even when OUT is already that version.
#
# Env: KUBE_VERSION (default v1.37.2), OUT (the binary, required),
#      BUILD_DIR (the throwaway module, default /var/cache/pier-e2e/kubelet-build).
#
# `go install k8s.io/kubernetes/cmd/kubelet@vX` does not work: the go.mod of
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with
# ./staging/src/... paths, which the module proxy does not serve. So this
# makes a throwaway main module that requires k8s.io/kubernetes and replaces
# every staging module it requires with its published tag (v0.<minor>.<patch>),
# then builds cmd/kubelet from it.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
OUT="${OUT:?set OUT to the path of the kubelet binary to build}"
BUILD_DIR="${BUILD_DIR:-/var/cache/pier-e2e/kubelet-build}"
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"   # v1.37.2 -> v0.37.2

export PATH="/usr/local/go/bin:$PATH"
export GOFLAGS=-mod=mod
export GOTOOLCHAIN=local
export CGO_ENABLED="${CGO_ENABLED:-0}"      # official kubelet builds are static

if [[ -z "${FORCE:-}" && -x "$OUT" ]] && "$OUT" --version 2>/dev/null | grep -qx "Kubernetes ${KUBE_VERSION}"; then
  echo "build-kubelet.sh: $OUT is already ${KUBE_VERSION}"
  exit 0
fi

mkdir -p "$BUILD_DIR" "$(dirname "$OUT")"
cd "$BUILD_DIR"

echo "build-kubelet.sh: downloading k8s.io/kubernetes@${KUBE_VERSION}"
K8S_DIR="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -f "$K8S_DIR/go.mod" ]] || { echo "build-kubelet.sh: no go.mod for k8s.io/kubernetes@${KUBE_VERSION}" >&2; exit 1; }
GO_DIRECTIVE="$(awk '$1=="go"{print $2; exit}' "$K8S_DIR/go.mod")"

# The staging modules: the left-hand sides of "k8s.io/x => ./staging/src/k8s.io/x".
mapfile -t STAGING < <(awk '$2=="=>" && $3 ~ /^\.\/staging\// {print $1}' "$K8S_DIR/go.mod" | sort -u)
# Only those k8s.io/kubernetes requires (some replaced ones, like
# sample-controller, are not published for every tag).
REQUIRED="$(awk '/^require \(/{f=1;next} f&&/^\)/{f=0} f{print $1} /^require [^(]/{print $2}' "$K8S_DIR/go.mod")"

{
  echo "module kubelet-build"
  echo
  echo "go ${GO_DIRECTIVE}"
  echo
  echo "require k8s.io/kubernetes ${KUBE_VERSION}"
  echo
  echo "replace ("
  for m in "${STAGING[@]}"; do
    if grep -qx "$m" <<<"$REQUIRED"; then
      echo "	$m => $m ${STAGING_VERSION}"
    fi
  done
  echo ")"
} > go.mod   # regenerated every run; go.sum is kept (go get updates it)

# Resolve the rest of the build list (requires and go.sum for cmd/kubelet's imports).
go get "k8s.io/kubernetes/cmd/kubelet@${KUBE_VERSION}"

# The version stamping of hack/lib/version.sh, so `kubelet --version` says KUBE_VERSION.
MAJOR="${KUBE_VERSION#v}"; MAJOR="${MAJOR%%.*}"
MINOR="${KUBE_VERSION#v*.}"; MINOR="${MINOR%%.*}"
BUILD_DATE="$(date -u +'%Y-%m-%dT%H:%M:%SZ')"
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=${MAJOR} -X ${pkg}.gitMinor=${MINOR}"
  LDFLAGS+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${BUILD_DATE}"
done

echo "build-kubelet.sh: building k8s.io/kubernetes/cmd/kubelet -> $OUT (this takes a while)"
start=$(date +%s)
go build -trimpath -ldflags "$LDFLAGS" -o "$OUT.tmp" k8s.io/kubernetes/cmd/kubelet
mv -f "$OUT.tmp" "$OUT"
echo "build-kubelet.sh: built in $(( $(date +%s) - start ))s: $("$OUT" --version)"
