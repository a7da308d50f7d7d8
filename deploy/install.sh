#!/usr/bin/env bash
# Install or upgrade mesher-injector with a certificate from `mesher-injector certs`
# (no cert-manager). Safe to run again: it never overwrites the template ConfigMap and
# never leaves the API server without a CA it can verify the injectors with.
#
#   deploy/install.sh                   install, or upgrade (reuses the TLS Secret)
#   ROTATE=1 deploy/install.sh          issue a new CA and serving cert, with no failed admission
#   RESET_TEMPLATE=1 deploy/install.sh  also reset the template ConfigMap to the shipped default
#   IMAGE=registry/mesher-injector:tag deploy/install.sh   the injector image to run
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
ns=mesher-system
secret=mesher-injector-tls
deployment=deployment/mesher-injector
selector=app.kubernetes.io/name=mesher-injector
kubectl=${KUBECTL:-kubectl}
timeout=${TIMEOUT:-180s}
cli=${MESHER_INJECTOR:-}
if [ -z "$cli" ]; then
  if [ -x "$here/../.venv/bin/mesher-injector" ]; then cli="$here/../.venv/bin/mesher-injector"; else cli=mesher-injector; fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The webhooks whose caBundle we own (the validating one only once it is installed).
set_ca_bundle() {
  local bundle=$1 kind
  for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
    if "$kubectl" get "$kind" mesher-injector >/dev/null 2>&1; then
      "$kubectl" patch "$kind" mesher-injector --type=json \
        -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$bundle\"}]"
    fi
  done
}

"$kubectl" apply -f "$here/base/namespace.yaml"

# 1. The template ConfigMap is the admin's once it exists.
if "$kubectl" -n "$ns" get configmap mesher-sidecar-template >/dev/null 2>&1; then
  if [ "${RESET_TEMPLATE:-0}" = 1 ]; then
    "$kubectl" replace -k "$here/template"
    echo "reset the template ConfigMap to the shipped default"
  else
    echo "keeping the template ConfigMap $ns/mesher-sidecar-template (RESET_TEMPLATE=1 resets it)"
  fi
else
  "$kubectl" create -k "$here/template"
fi

# 2. The serving certificate: reuse the Secret, or issue a new pair (not applied yet).
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

# 3. The manifests, with IMAGE as a kustomize images: override, before anything waits.
mkdir -p "$work/overlay"
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - $(realpath --relative-to="$work/overlay" "$here")"
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
echo "mesher-injector is installed; label a namespace: kubectl label namespace NAME sidecar-injector=enabled"
