#!/usr/bin/env bash
# Builds the control plane the e2e tests run against (etcd, kube-apiserver,
# kube-controller-manager, kubectl) from their Go modules, at the versions pinned in
# kubernetes/go.mod and etcd/go.mod beside this script, as Kubernetes' envtest binaries are.
#
#   scripts/controlplane/build.sh           build if needed; print the bin folder
#   scripts/controlplane/build.sh --where   print the bin folder, build nothing
#
# The binaries go to $XDG_CACHE_HOME/mesher-injector/controlplane/<key>/bin (outside the
# repo), where <key> hashes this script and both modules' go.mod and go.sum: a change of
# pin builds anew, anything else reuses the folder at once. Go's own module and build
# caches make a rebuild after a small change quick. Override the folder with
# MESHER_CONTROLPLANE_CACHE. Needs Go >= 1.26 (etcd's module asks for it) and the Go
# module proxy; never downloads a Go toolchain.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/build.sh" "$here"/kubernetes/go.mod "$here"/kubernetes/go.sum \
  "$here"/etcd/go.mod "$here"/etcd/go.sum | sha256sum | cut -c1-16)
cache=${MESHER_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mesher-injector/controlplane}
bin=$cache/$key/bin

if [ "${1:-}" = --where ]; then
  echo "$bin"
  exit 0
fi
if [ -f "$bin/.complete" ]; then
  echo "control plane binaries: cached in $bin" >&2
  echo "$bin"
  exit 0
fi
# Go's own tarball installs here, which is not always on a non-login shell's PATH.
command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null 2>&1 || { echo "build.sh: Go (1.26 or newer) is needed on PATH" >&2; exit 1; }

mkdir -p "$cache"
exec 9>"$cache/.lock"
# Two builds at once (make -j, two worktrees) would each take minutes: the second waits.
command -v flock >/dev/null 2>&1 && flock 9
if [ -f "$bin/.complete" ]; then
  echo "$bin"
  exit 0
fi

export GOTOOLCHAIN=local
started=$(date +%s)
staging=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$staging"' EXIT

module_field() { # module_field DIR MODULE FIELD: a field of a required module, from DIR's go.mod
  (cd "$1" && go list -m -f "{{.$3}}" "$2")
}

k8s_version=$(module_field "$here/kubernetes" k8s.io/kubernetes Version)
k8s_date=$(module_field "$here/kubernetes" k8s.io/kubernetes 'Time.Format "2006-01-02T15:04:05Z"')
major=${k8s_version#v}; major=${major%%.*}
minor=${k8s_version#v*.}; minor=${minor%%.*}
# What Kubernetes' own build stamps (hack/lib/version.sh), so `kubectl version` and the API
# server's /version say v1.X.Y and not v0.0.0-master.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$k8s_date"
done

echo "building kube-apiserver, kube-controller-manager, kubectl $k8s_version (minutes the first time)" >&2
(cd "$here/kubernetes" && go build -trimpath -buildvcs=false -tags providerless \
  -ldflags "$ldflags" -o "$staging/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl)

etcd_version=$(module_field "$here/etcd" go.etcd.io/etcd/server/v3 Version)
echo "building etcd $etcd_version" >&2
(cd "$here/etcd" && go build -trimpath -buildvcs=false -ldflags "-s -w" \
  -o "$staging/etcd" go.etcd.io/etcd/server/v3)

touch "$staging/.complete"
rm -rf "$cache/$key"
mkdir -p "$cache/$key"
mv "$staging" "$bin"
trap - EXIT
# Older pins' binaries (~300 MB each) go; Go's build cache rebuilds them in seconds.
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" ! -name '.build.*' -exec rm -rf {} +
echo "control plane binaries built in $(($(date +%s) - started)) s: $bin" >&2
echo "$bin"
