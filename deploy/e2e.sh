#!/usr/bin/env bash
# `make e2e`: the README's Verify steps against the cluster in $KUBECONFIG.
# Installs mesher-injector (deploy/install.sh), labels chassis, creates the examples,
# checks each example pod has the mesher container and the injected annotations, that
# an admin's template edit survives a re-install, that admission works after ROTATE=1,
# that the example Job (native sidecar) completes, and that with the injector scaled to
# zero only pods that ask are refused; then cleans up. Exits 0 with "skipped: no cluster"
# when there is none.
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

# A Job with a native sidecar completes (a classic sidecar would keep it running).
first_init=$("$kubectl" -n chassis get pods -l app=nightly -o jsonpath='{.items[0].spec.initContainers[0].name}' 2>/dev/null || true)
if [ "$first_init" = mesher ] && "$kubectl" -n chassis wait --for=condition=complete job/nightly --timeout=180s >/dev/null; then
  echo "ok   job/nightly completed with mesher as a native sidecar"
else
  echo "FAIL job/nightly: first init container '$first_init', or it did not complete"; fail=1
fi

ns=mesher-system
cm=configmap/mesher-sidecar-template
asking_pod() {  # a bare pod that asks for mesher, created with the given name
  "$kubectl" -n chassis apply -f - <<POD
apiVersion: v1
kind: Pod
metadata:
  name: $1
  annotations: {sidecar.mesher.io/inject: "yes"}
spec:
  restartPolicy: Never
  containers: [{name: app, image: busybox:1.36, command: ["sleep", "1"]}]
POD
}

# Day 2: an admin's template edit survives a re-install.
edited=$(mktemp)
"$kubectl" -n "$ns" get "$cm" -o jsonpath='{.data.template\.yaml}' \
  | sed 's/^version: .*/version: "e2e-edit"/' > "$edited"
"$kubectl" -n "$ns" create configmap mesher-sidecar-template --from-file=template.yaml="$edited" \
  --dry-run=client -o yaml | "$kubectl" replace -f -
rm -f "$edited"
"$here/install.sh" >/dev/null
if "$kubectl" -n "$ns" get "$cm" -o jsonpath='{.data.template\.yaml}' | grep -q '^version: "e2e-edit"'; then
  echo "ok   a template edit survives a re-install"
else
  echo "FAIL the re-install reverted the template"; fail=1
fi

# Day 2: a certificate rotation, then a pod that asks is still injected.
ROTATE=1 "$here/install.sh" >/dev/null
if asking_pod e2e-after-rotation >/dev/null \
  && [ "$("$kubectl" -n chassis get pod e2e-after-rotation -o jsonpath='{.metadata.annotations.sidecar\.mesher\.io/status}')" = injected ]; then
  echo "ok   admission works after ROTATE=1"
else
  echo "FAIL admission after ROTATE=1"; fail=1
fi

# An injector outage blocks only the pods that ask.
"$kubectl" -n "$ns" scale deployment/mesher-injector --replicas=0
"$kubectl" -n "$ns" wait --for=delete pod -l app.kubernetes.io/name=mesher-injector --timeout=120s || true
if "$kubectl" -n chassis run e2e-plain --image=busybox:1.36 --restart=Never -- sleep 1 >/dev/null; then
  echo "ok   with no injector, a plain pod is created"
else
  echo "FAIL with no injector, a plain pod was refused"; fail=1
fi
if asking_pod e2e-asking-during-outage >/dev/null 2>&1; then
  echo "FAIL with no injector, a pod that asks was admitted without its sidecar"; fail=1
else
  echo "ok   with no injector, a pod that asks is refused"
fi
"$kubectl" -n "$ns" scale deployment/mesher-injector --replicas=2
"$kubectl" -n "$ns" rollout status deployment/mesher-injector --timeout=180s
"$kubectl" -n chassis delete pod e2e-plain e2e-after-rotation --ignore-not-found --wait=false >/dev/null
exit $fail
