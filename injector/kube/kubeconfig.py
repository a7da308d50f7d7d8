"""Where kubectl finds its kubeconfig, checked without importing the cluster client (so
`inject` decides cheaply whether to ask a cluster)."""

from __future__ import annotations

import os

KUBECONFIG_DEFAULT = "~/.kube/config"  # where kubectl looks when $KUBECONFIG is unset


def missing_kubeconfig() -> str:
    """Why there is no kubeconfig where kubectl would look ($KUBECONFIG's files, else
    ~/.kube/config), naming the place; "" when one exists."""
    listed = os.environ.get("KUBECONFIG", "")
    paths = [p for p in listed.split(os.pathsep) if p] or [os.path.expanduser(KUBECONFIG_DEFAULT)]
    if any(os.path.isfile(p) for p in paths):
        return ""
    return f"no kubeconfig: {f'KUBECONFIG={listed}' if listed else paths[0]} does not exist"
