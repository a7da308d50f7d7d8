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
# Where deploy/ installs the injector.
INJECTOR_NAMESPACE = "mesher-system"
# The injector's Deployment there, whose available replicas `restart` checks first.
INJECTOR_DEPLOYMENT = "mesher-injector"
# Namespaces never injected (the injector's own is added where it is known).
NEVER_INJECTED = frozenset({"kube-system", "kube-public"})
# The label that opts a namespace in (the webhook's namespaceSelector).
NAMESPACE_LABEL = "sidecar-injector"
NAMESPACE_LABEL_VALUE = "enabled"
