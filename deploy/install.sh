#!/usr/bin/env bash
# Install mesher-injector with a certificate from `mesher-injector certs` (no cert-manager).
# Usage: deploy/install.sh            (reuses the TLS Secret if it exists)
#        ROTATE=1 deploy/install.sh   (issues a new CA and serving cert)
# MESHER_INJECTOR: the CLI to run `certs` with (default: .venv/bin/mesher-injector,
# then mesher-injector on PATH). KUBECTL: kubectl to use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ns=mesher-system
secret=mesher-injector-tls
kubectl=${KUBECTL:-kubectl}
cli=${MESHER_INJECTOR:-}
if [ -z "$cli" ]; then
  if [ -x "$here/../.venv/bin/mesher-injector" ]; then cli="$here/../.venv/bin/mesher-injector"; else cli=mesher-injector; fi
fi

"$kubectl" apply -f "$here/base/namespace.yaml"
if "$kubectl" -n "$ns" get secret "$secret" >/dev/null 2>&1 && [ "${ROTATE:-0}" != 1 ]; then
  echo "reusing Secret $ns/$secret (ROTATE=1 to issue a new one)"
  cabundle=$("$kubectl" -n "$ns" get secret "$secret" -o jsonpath='{.data.ca\.crt}')
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$cli" certs --service mesher-injector --namespace "$ns" --secret-name "$secret" -o "$work"
  "$kubectl" apply -f "$work/secret.yaml"
  cabundle=$(cat "$work/cabundle")
fi
"$kubectl" apply -k "$here"
"$kubectl" patch mutatingwebhookconfiguration mesher-injector --type=json \
  -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$cabundle\"}]"
"$kubectl" -n "$ns" rollout status deployment/mesher-injector --timeout=180s
echo "mesher-injector is installed; label a namespace: kubectl label namespace NAME sidecar-injector=enabled"
