"""The product's names, in one place (pure): what deploy/, the webhook, the watcher and
the command line agree on."""

from __future__ import annotations

# The ConfigMap that holds the sidecar templates (deploy/template/), and the key of its
# default template; every other `NAME.yaml` key is a named template.
TEMPLATE_CONFIGMAP = "mesher-sidecar-template"
TEMPLATE_KEY = "template.yaml"
TEMPLATE_SUFFIX = ".yaml"
# The default template's name (its key less the suffix), as pods and metrics call it.
DEFAULT_TEMPLATE_NAME = "template"
# The product: the command, and the name of what deploy/ installs (the Deployment, whose
# available replicas `restart` checks first, the Service, labels, field managers).
PRODUCT = "mesher-injector"
INJECTOR_DEPLOYMENT = PRODUCT
INJECTOR_SERVICE = PRODUCT
TLS_SECRET = f"{PRODUCT}-tls"  # the serving certificate's Secret
ROLLOUT_LEASE = f"{PRODUCT}-rollout"  # the Lease whose holder runs the rollout watch
# Where deploy/ installs the injector, and the template ConfigMap there.
INJECTOR_NAMESPACE = "mesher-system"
DEFAULT_CONFIGMAP = f"{INJECTOR_NAMESPACE}/{TEMPLATE_CONFIGMAP}"
# Namespaces never injected (the injector's own is added where it is known).
NEVER_INJECTED = frozenset({"kube-system", "kube-public"})
# The label that opts a namespace in (the webhook's namespaceSelector).
NAMESPACE_LABEL = "sidecar-injector"
NAMESPACE_LABEL_VALUE = "enabled"
