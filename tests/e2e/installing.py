"""deploy/install.sh and deploy/e2e.sh run on an e2e control plane, and what they leave."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from typing import Any

from cryptography import x509

from tests.e2e import manifests
from tests.e2e.controlplane import ControlPlane
from tests.e2e.injector import kubectl_ok
from tests.e2e.manifests import ASK, INJECTION_LABEL, INJECTOR_NAMESPACE, TEMPLATE_CONFIGMAP
from tests.support.helpers import ROOT

Json = dict[str, Any]

# What deploy/e2e.sh labels the namespace it creates with (and deletes at the end).
E2E_OWNER_LABEL, E2E_OWNER_VALUE = "app.kubernetes.io/created-by", "mesher-injector-e2e"
E2E_OWNER = f"{E2E_OWNER_LABEL}={E2E_OWNER_VALUE}"
# The examples' namespace, where the README keeps user workloads: e2e.sh leaves it alone.
USERS = "chassis"
WEBHOOK_KINDS = ("mutatingwebhookconfiguration", "validatingwebhookconfiguration")


def run_script(
    plane: ControlPlane, script: str, *, timeout: float, **env: str
) -> subprocess.CompletedProcess[str]:
    """A deploy/ script with our kubectl on `plane` and this checkout's CLI."""
    return subprocess.run(
        ["bash", str(ROOT / "deploy" / script)],
        env={
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "KUBECTL": str(plane.bin_dir / "kubectl"),
            "MESHER_INJECTOR": str(ROOT / ".venv" / "bin" / "mesher-injector"),
            "TIMEOUT": "60s",
            **env,
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def install(plane: ControlPlane, **env: str) -> subprocess.CompletedProcess[str]:
    return run_script(plane, "install.sh", timeout=300, **env)


def run_e2e_script(plane: ControlPlane, **env: str) -> subprocess.CompletedProcess[str]:
    return run_script(plane, "e2e.sh", timeout=600, **env)


def get(plane: ControlPlane, *args: str) -> Json | None:
    """`kubectl get ARGS -o json`, or None when there is no such object."""
    found = plane.kubectl("get", *args, "-o", "json")
    if found.returncode != 0:
        assert "NotFound" in found.stderr, found.stderr
        return None
    result: Json = json.loads(found.stdout)
    return result


def create_pod(plane: ControlPlane, name: str, namespace: str) -> subprocess.CompletedProcess[str]:
    """A pod that asks for mesher, created in `namespace` (its JSON on stdout)."""
    pod = manifests.pod(name, annotations=ASK)
    return plane.kubectl("create", "-n", namespace, "-o", "json", "-f", "-", stdin=json.dumps(pod))


def template_data(plane: ControlPlane, namespace: str = INJECTOR_NAMESPACE) -> dict[str, str]:
    """Every key of the template ConfigMap in `namespace`."""
    found = kubectl_ok(plane, "get", "configmap", "-n", namespace, TEMPLATE_CONFIGMAP, "-o", "json")
    data: dict[str, str] = json.loads(found)["data"]
    return data


def ca_bundles(plane: ControlPlane) -> list[str]:
    """The caBundle of every entry of both webhook configurations ("" where one has none):
    install.sh, the chart and cert-manager must set them all (the mutating one has two)."""
    return [
        bundle
        for kind in WEBHOOK_KINDS
        for bundle in kubectl_ok(
            plane,
            "get",
            kind,
            "mesher-injector",
            "-o",
            'jsonpath={range .webhooks[*]}{.clientConfig.caBundle}{"\\n"}{end}',
        ).splitlines()
    ]


def serving_names(secret: Json) -> list[str]:
    """The DNS names the serving certificate in a TLS Secret is valid for."""
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.DNSName)


def gone_or_going(obj: Json | None) -> bool:
    return obj is None or "deletionTimestamp" in obj["metadata"]


def opt_in(plane: ControlPlane, namespace: str) -> None:
    kubectl_ok(plane, "create", "namespace", namespace)
    kubectl_ok(plane, "label", "namespace", namespace, f"{INJECTION_LABEL}=enabled")


def a_users_workload(plane: ControlPlane) -> Json:
    """Namespace USERS, opted in, with a Deployment of the user's: what e2e.sh must leave."""
    opt_in(plane, USERS)
    kubectl_ok(plane, "create", "deployment", "mine", "-n", USERS, "--image=registry.example/app:1")
    found = get(plane, "namespace", USERS)
    assert found is not None
    return found


def assert_untouched(plane: ControlPlane, before: Json) -> None:
    namespace = get(plane, "namespace", USERS)
    assert namespace is not None
    assert "deletionTimestamp" not in namespace["metadata"]
    assert namespace["metadata"]["labels"] == before["metadata"]["labels"]
    assert not gone_or_going(get(plane, "deployment", "mine", "-n", USERS))


def e2e_namespace(announced: str) -> str:
    """The namespace e2e.sh says (before it starts) that it creates."""
    found = re.search(r"namespace (mesher-injector-e2e-[0-9a-f]{8}): created now", announced)
    assert found, announced
    return found.group(1)


def assert_passed_and_cleaned_up(
    plane: ControlPlane, result: subprocess.CompletedProcess[str]
) -> str:
    """e2e.sh passed every check, said first which cluster it would touch, and deleted its
    namespace (the only one labelled as its own); its output's announcement, returned."""
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert result.stdout.count("ok   ") == 9, result.stdout
    announced, _, _ = result.stdout.partition("ok   ")
    assert announced.startswith(
        f"deploy/e2e.sh on the cluster of context 'e2e' (server {plane.credentials.server})"
    )
    own = e2e_namespace(announced)
    # still terminating (its pods' grace period): labelled as e2e.sh's own, and opted in
    namespace = get(plane, "namespace", own)
    assert namespace is not None
    assert "deletionTimestamp" in namespace["metadata"]
    assert (
        namespace["metadata"]["labels"].items()
        >= {
            E2E_OWNER_LABEL: E2E_OWNER_VALUE,
            INJECTION_LABEL: "enabled",
        }.items()
    )
    labelled = get(plane, "namespaces", "-l", E2E_OWNER)
    assert labelled is not None
    assert all(gone_or_going(n) for n in labelled["items"])
    assert f"deleted namespace {own}" in result.stdout
    return announced


# What deploy/install.sh makes, besides the template ConfigMap and the webhook
# configurations (WEBHOOK_KINDS): in the injector's namespace, and the rollout watch's
# cluster-wide ClusterRole and binding (a `-n` is ignored for those).
INSTALLED_OBJECTS = (
    "clusterrole/mesher-injector",
    "clusterrolebinding/mesher-injector",
    "deployment/mesher-injector",
    "service/mesher-injector",
    "service/mesher-injector-metrics",
    "serviceaccount/mesher-injector",
    "role/mesher-injector",
    "rolebinding/mesher-injector",
    "poddisruptionbudget/mesher-injector",
    "networkpolicy/mesher-injector",
    "secret/mesher-injector-tls",
)
