#!/usr/bin/env bash
# `make e2e`: the README's Verify and day-2 steps against the cluster in $KUBECONFIG.
# Before it touches anything it prints the cluster (context and server) and all it will
# touch, which is only:
#   - a namespace of its own, mesher-injector-e2e-<random>, created labelled
#     app.kubernetes.io/created-by=mesher-injector-e2e and sidecar-injector=enabled, where
#     the examples (deploy/examples/ and deploy/examples/pilot/) and its test pods run;
#     deleted at the end. No other namespace is touched (chassis, the examples' own, neither).
#   - the injector in NAMESPACE (default mesher-system). Installed already: re-installed
#     with the image it runs (IMAGE overrides) and left installed. Not installed: installed
#     with deploy/install.sh, and at the end removed again, except its namespace and the
#     template ConfigMap. Either way: a re-install, ROTATE=1 (a new serving certificate)
#     and a scale to zero and back (meanwhile pods that ask for mesher are refused).
#     The install's cluster-wide objects go with it: the webhook configurations and the
#     rollout watch's ClusterRole and ClusterRoleBinding mesher-injector.
#   - the template ConfigMap: its `version:` edited for the check that an edit survives a
#     re-install, then put back as it was. Never deleted.
# It checks that each example pod has the mesher container and the injected annotations,
# that the template edit survives a re-install, that admission works after ROTATE=1, that
# the example Job (native sidecar) completes, and that with the injector scaled to zero
# only pods that ask are refused. Exits 0 with "skipped: no cluster" when there is none.
# IMAGE: the injector image the cluster can pull. NAMESPACE: as deploy/install.sh's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kubectl=${KUBECTL:-kubectl}
ns=${NAMESPACE:-mesher-system}
injector=deployment/mesher-injector
template=mesher-sidecar-template
owner_label=app.kubernetes.io/created-by
owner=mesher-injector-e2e

if ! command -v "$kubectl" >/dev/null 2>&1; then
  echo "skipped: no cluster (kubectl not installed)"; exit 0
fi
if [ -z "${KUBECONFIG:-}" ] && [ ! -f "$HOME/.kube/config" ] && [ -z "${KUBERNETES_SERVICE_HOST:-}" ]; then
  echo "skipped: no cluster (KUBECONFIG unset and no ~/.kube/config)"; exit 0
fi
if ! "$kubectl" version --request-timeout=5s >/dev/null 2>&1; then
  echo "skipped: no cluster (the API server in the kubeconfig does not answer)"; exit 0
fi

# What is there already. The webhook configurations are cluster-wide: one install per cluster.
webhook_ns=$("$kubectl" get mutatingwebhookconfiguration mesher-injector \
  -o jsonpath='{.webhooks[0].clientConfig.service.namespace}' 2>/dev/null || true)
if [ -n "$webhook_ns" ] && [ "$webhook_ns" != "$ns" ]; then
  echo "mesher-injector is installed in namespace $webhook_ns: run with NAMESPACE=$webhook_ns" >&2
  exit 2
fi
ca_from=$("$kubectl" get mutatingwebhookconfiguration mesher-injector \
  -o jsonpath='{.metadata.annotations.cert-manager\.io/inject-ca-from}' 2>/dev/null || true)
if [ -n "$ca_from" ]; then
  echo "mesher-injector's certificate comes from cert-manager ($ca_from): deploy/e2e.sh" \
    "re-installs with deploy/install.sh, which would take it over; not run" >&2
  exit 2
fi
running_image=$("$kubectl" -n "$ns" get "$injector" \
  -o jsonpath='{.spec.template.spec.containers[?(@.name=="injector")].image}' 2>/dev/null || true)
preinstalled=0
if [ -n "$webhook_ns" ] || [ -n "$running_image" ]; then preinstalled=1; fi
if [ -z "${IMAGE:-}" ] && [ -n "$running_image" ]; then export IMAGE=$running_image; fi
e2e_ns=$owner-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
context=$("$kubectl" config current-context 2>/dev/null || echo "none (in-cluster)")
server=$("$kubectl" config view --minify -o jsonpath='{.clusters[0].cluster.server}' 2>/dev/null || true)
if [ -z "$server" ]; then server="https://${KUBERNETES_SERVICE_HOST:-}:${KUBERNETES_SERVICE_PORT:-443}"; fi

echo "deploy/e2e.sh on the cluster of context '$context' (server $server) touches only:"
echo "  - namespace $e2e_ns: created now ($owner_label=$owner, sidecar-injector=enabled)"
echo "    for the examples and the test pods; deleted at the end"
if [ "$preinstalled" = 1 ]; then
  echo "  - mesher-injector in namespace $ns, installed already: re-installed (image ${IMAGE:-as deploy/ names it}),"
  echo "    ROTATE=1, scaled to 0 and back; left installed"
else
  echo "  - mesher-injector in namespace $ns, not installed: installed with deploy/install.sh"
  echo "    (image ${IMAGE:-as deploy/ names it}), re-installed, ROTATE=1, scaled to 0 and back;"
  echo "    removed at the end, except namespace $ns and its template ConfigMap"
fi
echo "    (while it is scaled to 0, pods that ask for mesher are refused in every labelled namespace)"
echo "  - ConfigMap $ns/$template: its version edited for a moment, then put back as it was; never deleted"
echo "  - MutatingWebhookConfiguration and ValidatingWebhookConfiguration mesher-injector (caBundle)"
echo "  - ClusterRole and ClusterRoleBinding mesher-injector (the rollout watch's), applied with the"
echo "    injector and removed with it"
echo "Nothing else: no other namespace (chassis, where deploy/examples/ go, neither) and no other object."

work=$(mktemp -d)
made_namespace=0 installing=0 template_edited=0 scaled_from="" keep_work=0
relative() { realpath --relative-to="$work/$1" "$2"; }

# The template.yaml key of the template ConfigMap from file $1; its other keys stay.
set_template() {
  local data
  data=$("$kubectl" create configmap "$template" --from-file=template.yaml="$1" \
    --dry-run=client -o jsonpath='{.data}')
  "$kubectl" -n "$ns" patch configmap "$template" --type=merge -p "{\"data\":$data}" >/dev/null
}
stored_template() {
  "$kubectl" -n "$ns" get configmap "$template" -o jsonpath='{.data.template\.yaml}'
}
put_template_back() {
  if set_template "$work/template.yaml" && cmp -s <(stored_template) "$work/template.yaml"; then
    template_edited=0
  else
    echo "FAIL the template ConfigMap $ns/$template was not put back: its original is $work/template.yaml"
    keep_work=1
    return 1
  fi
}

# What an install of deploy/ in $ns made, less its namespace: the template ConfigMap lives
# there and is never deleted. The webhook configurations go first, so no pod that asks is
# refused for want of an injector meanwhile.
uninstall() {
  mkdir -p "$work/uninstall"
  cat > "$work/uninstall/kustomization.yaml" <<KUSTOMIZATION
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: $ns
resources:
  - $(relative uninstall "$here")
patches:
  - target: {kind: Namespace}
    patch: |-
      \$patch: delete
      apiVersion: v1
      kind: Namespace
      metadata: {name: unused}
KUSTOMIZATION
  "$kubectl" delete mutatingwebhookconfiguration,validatingwebhookconfiguration mesher-injector \
    --ignore-not-found >/dev/null \
    && "$kubectl" delete -k "$work/uninstall" --ignore-not-found --wait=false >/dev/null \
    && "$kubectl" -n "$ns" delete secret mesher-injector-tls --ignore-not-found >/dev/null \
    && echo "removed the injector it installed; kept namespace $ns and ConfigMap $ns/$template"
}

cleanup() {
  local rc=$?
  set +e
  if [ "$template_edited" = 1 ]; then put_template_back || rc=1; fi
  if [ -n "$scaled_from" ]; then
    "$kubectl" -n "$ns" scale "$injector" --replicas="$scaled_from" >/dev/null || rc=1
  fi
  if [ "$made_namespace" = 1 ]; then
    "$kubectl" delete namespace "$e2e_ns" --wait=false >/dev/null || rc=1
    echo "deleted namespace $e2e_ns"
  fi
  if [ "$installing" = 1 ] && [ "$preinstalled" = 0 ]; then uninstall || rc=1; fi
  if [ "$keep_work" = 0 ]; then rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$kubectl" create -f - >/dev/null <<NAMESPACE
apiVersion: v1
kind: Namespace
metadata:
  name: $e2e_ns
  labels:
    $owner_label: $owner
    sidecar-injector: enabled
NAMESPACE
made_namespace=1

installing=1
"$here/install.sh"  # IMAGE, if set, is applied before install.sh waits for anything
# A webhook configuration change reaches the API server's cache after a moment.
sleep 3

# The examples, in our namespace: their own Namespace (chassis) dropped, the rest moved.
mkdir -p "$work/examples"
cat > "$work/examples/kustomization.yaml" <<KUSTOMIZATION
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: $e2e_ns
labels:
  - pairs: {$owner_label: $owner}
    includeSelectors: false
resources:
  - $(relative examples "$here/examples")
  - $(relative examples "$here/examples/pilot")
patches:
  - target: {kind: Namespace}
    patch: |-
      \$patch: delete
      apiVersion: v1
      kind: Namespace
      metadata: {name: unused}
KUSTOMIZATION
"$kubectl" kustomize "$work/examples" > "$work/examples.yaml"
if awk -v ns="$e2e_ns" '/^kind: Namespace$/ || (/^  namespace: / && $2 != ns) { elsewhere = 1 }
    END { exit !elsewhere }' "$work/examples.yaml"; then
  echo "FAIL the examples would leave namespace $e2e_ns: not applied" >&2
  exit 1
fi
"$kubectl" apply -f "$work/examples.yaml" >/dev/null

fail=0
for app in server-mesher client-mesher server-pilot client-pilot; do
  pod=""
  for _ in $(seq 60); do
    pod=$("$kubectl" -n "$e2e_ns" get pods -l app="$app" -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
    [ -n "$pod" ] && break
    sleep 2
  done
  if [ -z "$pod" ]; then echo "FAIL $app: no pod"; fail=1; continue; fi
  containers=$("$kubectl" -n "$e2e_ns" get pod "$pod" -o jsonpath='{.spec.containers[*].name}')
  status=$("$kubectl" -n "$e2e_ns" get pod "$pod" -o jsonpath='{.metadata.annotations.sidecar\.mesher\.io/status}')
  revision=$("$kubectl" -n "$e2e_ns" get pod "$pod" -o jsonpath='{.metadata.annotations.sidecar\.mesher\.io/template-revision}')
  if [[ " $containers " == *" mesher "* ]] && [ "$status" = injected ] && [ -n "$revision" ]; then
    echo "ok   $app: containers [$containers], template-revision $revision"
  else
    echo "FAIL $app: containers [$containers], status '$status'"; fail=1
  fi
done
"$kubectl" -n "$e2e_ns" get pods

# A Job with a native sidecar completes (a classic sidecar would keep it running).
first_init=$("$kubectl" -n "$e2e_ns" get pods -l app=nightly -o jsonpath='{.items[0].spec.initContainers[0].name}' 2>/dev/null || true)
if [ "$first_init" = mesher ] && "$kubectl" -n "$e2e_ns" wait --for=condition=complete job/nightly --timeout=180s >/dev/null; then
  echo "ok   job/nightly completed with mesher as a native sidecar"
else
  echo "FAIL job/nightly: first init container '$first_init', or it did not complete"; fail=1
fi

asking_pod() {  # a bare pod that asks for mesher, created with the given name
  "$kubectl" -n "$e2e_ns" apply -f - <<POD
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

# Day 2: an admin's template edit survives a re-install; then the admin's text goes back.
stored_template > "$work/template.yaml"
if grep -q '^version:' "$work/template.yaml"; then
  sed 's/^version: .*/version: "e2e-edit"/' "$work/template.yaml" > "$work/edited.yaml"
else
  { cat "$work/template.yaml"; echo; echo 'version: "e2e-edit"'; } > "$work/edited.yaml"
fi
template_edited=1
set_template "$work/edited.yaml"
"$here/install.sh" >/dev/null
stored_template > "$work/reinstalled.yaml"
if grep -q '^version: "e2e-edit"' "$work/reinstalled.yaml"; then
  echo "ok   a template edit survives a re-install"
else
  echo "FAIL the re-install reverted the template"; fail=1
fi
if put_template_back; then
  echo "put the template ConfigMap $ns/$template back as it was"
else
  fail=1
fi

# Day 2: a certificate rotation, then a pod that asks is still injected.
ROTATE=1 "$here/install.sh" >/dev/null
if asking_pod e2e-after-rotation >/dev/null \
  && [ "$("$kubectl" -n "$e2e_ns" get pod e2e-after-rotation -o jsonpath='{.metadata.annotations.sidecar\.mesher\.io/status}')" = injected ]; then
  echo "ok   admission works after ROTATE=1"
else
  echo "FAIL admission after ROTATE=1"; fail=1
fi

# An injector outage blocks only the pods that ask.
scaled_from=$("$kubectl" -n "$ns" get "$injector" -o jsonpath='{.spec.replicas}')
"$kubectl" -n "$ns" scale "$injector" --replicas=0
"$kubectl" -n "$ns" wait --for=delete pod -l app.kubernetes.io/name=mesher-injector --timeout=120s || true
if "$kubectl" -n "$e2e_ns" run e2e-plain --image=busybox:1.36 --restart=Never -- sleep 1 >/dev/null; then
  echo "ok   with no injector, a plain pod is created"
else
  echo "FAIL with no injector, a plain pod was refused"; fail=1
fi
if asking_pod e2e-asking-during-outage >/dev/null 2>&1; then
  echo "FAIL with no injector, a pod that asks was admitted without its sidecar"; fail=1
else
  echo "ok   with no injector, a pod that asks is refused"
fi
"$kubectl" -n "$ns" scale "$injector" --replicas="$scaled_from"
scaled_from=""
"$kubectl" -n "$ns" rollout status "$injector" --timeout="${TIMEOUT:-180s}"
exit $fail
