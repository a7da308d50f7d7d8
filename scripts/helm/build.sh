#!/usr/bin/env bash
# Builds helm for the chart's tests (deploy/helm/mesher-injector) from its Go module, at
# the version pinned in go.mod beside this script, as scripts/controlplane/build.sh builds
# the control plane.
#
#   scripts/helm/build.sh           build if needed; print the helm binary's path
#   scripts/helm/build.sh --where   print the helm binary's path, build nothing
#
# The binary goes to $XDG_CACHE_HOME/mesher-injector/helm/<key>/bin/helm (outside the
# repo), where <key> hashes this script, go.mod and go.sum: a change of pin builds anew,
# anything else reuses the binary at once. Override the folder with MESHER_HELM_CACHE.
# Needs Go >= 1.26 (helm v4's module asks for it) and the Go module proxy; never
# downloads a Go toolchain.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/build.sh" "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)
cache=${MESHER_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mesher-injector/helm}
helm=$cache/$key/bin/helm

if [ "${1:-}" = --where ]; then
  echo "$helm"
  exit 0
fi
if [ -x "$helm" ]; then
  echo "helm: cached in $helm" >&2
  echo "$helm"
  exit 0
fi
# Go's own tarball installs here, which is not always on a non-login shell's PATH.
command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null 2>&1 || { echo "build.sh: Go (1.26 or newer) is needed on PATH" >&2; exit 1; }

mkdir -p "$cache"
exec 9>"$cache/.lock"
# Two builds at once (make -j, two worktrees) would each take minutes: the second waits.
command -v flock >/dev/null 2>&1 && flock 9
if [ -x "$helm" ]; then
  echo "$helm"
  exit 0
fi

export GOTOOLCHAIN=local
started=$(date +%s)
staging=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$staging"' EXIT

version=$(cd "$here" && go list -m -f '{{.Version}}' helm.sh/helm/v4)
echo "building helm $version (minutes the first time)" >&2
# What helm's own Makefile stamps, so `helm version` says the pin and not v4.3.
(cd "$here" && go build -trimpath -buildvcs=false \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
  -o "$staging/helm" helm.sh/helm/v4/cmd/helm)

rm -rf "${cache:?}/$key"
mkdir -p "$cache/$key"
# The binary lands last (a rename), so a build stopped halfway is never taken as cached.
mv "$staging" "$cache/$key/bin"
trap - EXIT
# Older pins' binaries go; Go's build cache rebuilds them in seconds.
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" ! -name '.build.*' -exec rm -rf {} +
echo "helm built in $(($(date +%s) - started)) s: $helm" >&2
echo "$helm"
