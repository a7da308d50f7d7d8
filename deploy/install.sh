#!/usr/bin/env bash
# Install or upgrade mesher-injector with a certificate from `mesher-injector certs`
# (no cert-manager). Safe to run again: it never overwrites the template ConfigMap and
# never leaves the API server without a CA it can verify the injectors with.
#
#   deploy/install.sh                   install, or upgrade (reuses the TLS Secret)
#   ROTATE=1 deploy/install.sh          issue a new CA and serving cert, with no failed admission
#   RESET_TEMPLATE=1 deploy/install.sh  also reset the template ConfigMap to the shipped default
#   IMAGE=registry/mesher-injector:tag deploy/install.sh   the injector image to run
#   NAMESPACE=mesh-tools deploy/install.sh   install into another namespace (default
#                                       mesher-system): the Secret, the certificate's
#                                       names, the template ConfigMap, the webhooks'
#                                       Service and namespace selectors follow it
#
# It refuses to touch an install whose webhooks call another namespace, or get their CA
# from cert-manager (deploy/cert-manager/: upgrade that one with kubectl apply -k).
#
# MESHER_INJECTOR: the CLI to run `certs` with (default: .venv/bin/mesher-injector, then
# mesher-injector on PATH). KUBECTL: kubectl to use. TIMEOUT: for each wait (default 180s).
#
# Rotation: the webhooks' caBundle first trusts the old and the new CA; then the Secret
# changes and the injector Deployment is restarted (a pod started after the Secret
# changed serves the new certificate at once); once the rollout is complete and every old
# pod is gone, the caBundle trusts the new CA only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ns=${NAMESPACE:-mesher-system}
# deploy/ names this namespace; the overlays below replace it with $ns.
shipped_ns=mesher-system
secret=mesher-injector-tls
deployment=deployment/mesher-injector
selector=app.kubernetes.io/name=mesher-injector
kubectl=${KUBECTL:-kubectl}
timeout=${TIMEOUT:-180s}
cli=${MESHER_INJECTOR:-}
if [ -z "$cli" ]; then
  if [ -x "$here/../.venv/bin/mesher-injector" ]; then cli="$here/../.venv/bin/mesher-injector"; else cli=mesher-injector; fi
fi
if ! [[ $ns =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || [ ${#ns} -gt 63 ]; then
  echo "NAMESPACE=$ns is not a namespace name (lower-case letters, digits and '-', at most 63)" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The webhooks whose caBundle we own (the validating one only once it is installed), every
# entry of each: the mutating configuration has two (fail-closed and fail-open pods).
set_ca_bundle() {
  local bundle=$1 kind names ops index
  for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
    names=$("$kubectl" get "$kind" mesher-injector -o jsonpath='{.webhooks[*].name}' 2>/dev/null) \
      || continue
    ops="" index=0
    for _ in $names; do
      ops+="${ops:+,}{\"op\":\"add\",\"path\":\"/webhooks/$index/clientConfig/caBundle\",\"value\":\"$bundle\"}"
      index=$((index + 1))
    done
    if [ -n "$ops" ]; then "$kubectl" patch "$kind" mesher-injector --type=json -p "[$ops]"; fi
  done
}

# One install per cluster: the webhook configurations are cluster-wide and call one Service.
installed_ns=$("$kubectl" get mutatingwebhookconfiguration mesher-injector \
  -o jsonpath='{.webhooks[0].clientConfig.service.namespace}' 2>/dev/null || true)
if [ -n "$installed_ns" ] && [ "$installed_ns" != "$ns" ]; then
  echo "mesher-injector is installed in namespace $installed_ns (its webhooks call it there):" \
    "run with NAMESPACE=$installed_ns, or uninstall it first (README, Uninstall)" >&2
  exit 1
fi

# An install by deploy/cert-manager/ gets its certificate and caBundle from cert-manager.
ca_from=$("$kubectl" get mutatingwebhookconfiguration mesher-injector \
  -o jsonpath='{.metadata.annotations.cert-manager\.io/inject-ca-from}' 2>/dev/null || true)
if [ -n "$ca_from" ]; then
  echo "mesher-injector's certificate comes from cert-manager ($ca_from): upgrade it with" \
    "kubectl apply -k deploy/cert-manager/ (or your overlay of it), not install.sh" >&2
  exit 1
fi

# The overlays: deploy/ and deploy/template/ moved to $ns (the webhooks' Service and
# RoleBinding subjects follow kustomize's namespace; every webhook entry's namespace
# selector names it too, KIND:ENTRY:ITEM below: `test` makes a reordered list fail here
# rather than exclude the wrong one),
# and IMAGE as a kustomize images: override, applied before anything waits.
relative() { realpath --relative-to="$work/$1" "$2"; }
mkdir -p "$work/overlay" "$work/template"
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "namespace: $ns"
  echo "resources:"
  echo "  - $(relative overlay "$here")"
  echo "patches:"
  for hook in MutatingWebhookConfiguration:0:2 MutatingWebhookConfiguration:1:2 \
    ValidatingWebhookConfiguration:0:0; do
    IFS=: read -r kind entry item <<< "$hook"
    path=/webhooks/$entry/namespaceSelector/matchExpressions/0/values/$item
    echo "  - target: {kind: $kind, name: mesher-injector}"
    echo "    patch: |-"
    echo "      - {op: test, path: $path, value: $shipped_ns}"
    echo "      - {op: replace, path: $path, value: $ns}"
  done
  if [ -n "${IMAGE:-}" ]; then
    # name[:tag] or name@digest; a registry port (host:5000/name) is not a tag.
    name=$IMAGE tag="" digest=""
    if [[ $IMAGE == *@* ]]; then
      name=${IMAGE%@*} digest=${IMAGE#*@}
    elif [[ ${IMAGE##*/} == *:* ]]; then
      name=${IMAGE%:*} tag=${IMAGE##*:}
    fi
    echo "images:"
    echo "  - name: mesher-injector"
    echo "    newName: $name"
    if [ -n "$tag" ]; then echo "    newTag: \"$tag\""; fi
    if [ -n "$digest" ]; then echo "    digest: $digest"; fi
  fi
} > "$work/overlay/kustomization.yaml"
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "namespace: $ns"
  echo "resources:"
  echo "  - $(relative template "$here/template")"
} > "$work/template/kustomization.yaml"

"$kubectl" create namespace "$ns" --dry-run=client -o yaml | "$kubectl" apply -f -

# 1. The template ConfigMap is the admin's once it exists.
if "$kubectl" -n "$ns" get configmap mesher-sidecar-template >/dev/null 2>&1; then
  if [ "${RESET_TEMPLATE:-0}" = 1 ]; then
    "$kubectl" replace -k "$work/template"
    echo "reset the template ConfigMap to the shipped default"
  else
    echo "keeping the template ConfigMap $ns/mesher-sidecar-template (RESET_TEMPLATE=1 resets it)"
  fi
else
  "$kubectl" create -k "$work/template"
fi

# 2. The serving certificate, for mesher-injector.$ns.svc: reuse the Secret, or issue a
# new pair (not applied yet).
new_secret=""
if "$kubectl" -n "$ns" get secret "$secret" >/dev/null 2>&1 && [ "${ROTATE:-0}" != 1 ]; then
  echo "reusing Secret $ns/$secret (ROTATE=1 to issue a new one)"
  target=$("$kubectl" -n "$ns" get secret "$secret" -o jsonpath='{.data.ca\.crt}')
else
  "$cli" certs --service mesher-injector --namespace "$ns" --secret-name "$secret" -o "$work/certs"
  new_secret="$work/certs/secret.yaml"
  target=$(cat "$work/certs/cabundle")
fi
current=$("$kubectl" get mutatingwebhookconfiguration mesher-injector \
  -o jsonpath='{.webhooks[0].clientConfig.caBundle}' 2>/dev/null || true)

# 3. The manifests (the overlay above).
if [ -z "$current" ] || [ "$current" = "$target" ]; then
  # First install, or nothing to rotate: the Secret can change at once.
  if [ -n "$new_secret" ]; then "$kubectl" apply -f "$new_secret"; fi
  "$kubectl" apply -k "$work/overlay"
  set_ca_bundle "$target"
  "$kubectl" -n "$ns" rollout status "$deployment" --timeout="$timeout"
else
  # The injectors serve a certificate of another CA: trust both while they switch.
  "$kubectl" apply -k "$work/overlay"
  both=$( (echo "$current" | base64 -d; echo "$target" | base64 -d) | base64 | tr -d '\n')
  set_ca_bundle "$both"
  echo "caBundle trusts the old and the new CA while the injectors switch"
  old_pods=$("$kubectl" -n "$ns" get pods -l "$selector" -o name)
  if [ -n "$new_secret" ]; then "$kubectl" apply -f "$new_secret"; fi
  "$kubectl" -n "$ns" rollout restart "$deployment"
  "$kubectl" -n "$ns" rollout status "$deployment" --timeout="$timeout"
  if [ -n "$old_pods" ]; then
    # shellcheck disable=SC2086  # one argument per pod
    "$kubectl" -n "$ns" wait --for=delete $old_pods --timeout="$timeout"
  fi
  set_ca_bundle "$target"
  echo "every injector serves the new certificate: caBundle trusts the new CA only"
fi
echo "mesher-injector is installed in namespace $ns; label a namespace: kubectl label namespace NAME sidecar-injector=enabled"
