#!/usr/bin/env bash
# `make e2e`: the README's Verify steps against the cluster in $KUBECONFIG.
# Installs mesher-injector (deploy/install.sh), labels chassis, creates the examples,
# checks each example pod has the mesher container and the injected annotations,
# then cleans up. Exits 0 with "skipped: no cluster" when there is none.
# IMAGE: the injector image the cluster can pull (default: what deploy/ names).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kubectl=${KUBECTL:-kubectl}

if ! command -v "$kubectl" >/dev/null 2>&1; then
  echo "skipped: no cluster (kubectl not installed)"; exit 0
fi
if [ -z "${KUBECONFIG:-}" ] && [ ! -f "$HOME/.kube/config" ] && [ -z "${KUBERNETES_SERVICE_HOST:-}" ]; then
  echo "skipped: no cluster (KUBECONFIG unset and no ~/.kube/config)"; exit 0
fi
if ! "$kubectl" version --request-timeout=5s >/dev/null 2>&1; then
  echo "skipped: no cluster (the API server in the kubeconfig does not answer)"; exit 0
fi

cleanup() {
  "$kubectl" delete -k "$here/examples" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  "$kubectl" delete -k "$here" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  "$kubectl" delete -k "$here/template" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$here/install.sh"  # IMAGE, if set, is applied before install.sh waits for anything
# A webhook configuration change reaches the API server's cache after a moment.
sleep 3
"$kubectl" apply -k "$here/examples"

fail=0
for app in server-mesher client-mesher server-pilot client-pilot; do
  pod=""
  for _ in $(seq 60); do
    pod=$("$kubectl" -n chassis get pods -l app="$app" -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
    [ -n "$pod" ] && break
    sleep 2
  done
  if [ -z "$pod" ]; then echo "FAIL $app: no pod"; fail=1; continue; fi
  containers=$("$kubectl" -n chassis get pod "$pod" -o jsonpath='{.spec.containers[*].name}')
  status=$("$kubectl" -n chassis get pod "$pod" -o jsonpath='{.metadata.annotations.sidecar\.mesher\.io/status}')
  revision=$("$kubectl" -n chassis get pod "$pod" -o jsonpath='{.metadata.annotations.sidecar\.mesher\.io/template-revision}')
  if [[ " $containers " == *" mesher "* ]] && [ "$status" = injected ] && [ -n "$revision" ]; then
    echo "ok   $app: containers [$containers], template-revision $revision"
  else
    echo "FAIL $app: containers [$containers], status '$status'"; fail=1
  fi
done
"$kubectl" -n chassis get pods
exit $fail
