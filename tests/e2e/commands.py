"""`mesher-injector status`, `restart` and `diff` as an admin runs them (processes, through
a kubeconfig) against the e2e control plane, with a local injector that watches the
template ConfigMap in SYSTEM (or another namespace: `Live.system`); and the workloads the
tests put before them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from injector.core.template import TemplateError, load_template
from tests.e2e import manifests
from tests.e2e.controlplane import ControlPlane
from tests.e2e.injector import LocalInjector, injecting, kubectl_ok, running_injector
from tests.e2e.kube import Json, Kube, has_condition
from tests.e2e.manifests import ASK, INJECTION_LABEL, TEMPLATE_CONFIGMAP, template_configmap
from tests.support.helpers import ROOT

# Where the template ConfigMap and the injector's own Deployment live for these tests.
SYSTEM = "e2e-injector-system"
CONFIGMAP = f"{SYSTEM}/{TEMPLATE_CONFIGMAP}"
RELOAD_LIMIT = 20.0
NO_NAMED: Mapping[str, str] = MappingProxyType({})


def revision_of(text: str) -> str:
    return load_template(text).revision


@dataclass(frozen=True, slots=True)
class Live:
    control_plane: ControlPlane
    injector: LocalInjector
    system: str = SYSTEM  # the namespace of the template ConfigMap

    @property
    def configmap(self) -> str:
        return f"{self.system}/{TEMPLATE_CONFIGMAP}"

    def put_template(self, text: str, *, named: Mapping[str, str] = NO_NAMED) -> None:
        """Store `text` in the template ConfigMap (and each of `named` as NAME.yaml), and
        wait until the injector serves them (a broken default: until it has refused it)."""
        configmap = template_configmap(text)
        configmap["data"].update({f"{name}.yaml": t for name, t in named.items()})
        kubectl_ok(
            self.control_plane,
            "apply",
            "-n",
            self.system,
            "-f",
            "-",
            stdin=json.dumps(configmap),
        )
        try:
            wanted = revision_of(text)
        except TemplateError:
            wanted = ""
        wanted_named = {name: revision_of(t) for name, t in named.items()}
        deadline = time.monotonic() + RELOAD_LIMIT
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{self.injector.admin}/template", timeout=5) as answer:
                state = json.loads(answer.read())
            serving = {
                name: state["templates"].get(name, {}).get("revision") for name in wanted_named
            }
            taken = (state["revision"] == wanted) if wanted else state["last_error"]
            if taken and serving == wanted_named:
                return
            time.sleep(0.1)
        raise AssertionError(f"the injector did not take the edit within {RELOAD_LIMIT} s")

    def cli(self, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`mesher-injector ARGS --configmap <system>/...`, with the control plane's admin
        kubeconfig unless another is given."""
        kubeconfig = kubeconfig or self.control_plane.kubeconfig
        return subprocess.run(
            [sys.executable, "-m", "injector", *args, "--configmap", self.configmap],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def report(self, *scope: str) -> tuple[int, dict[str, Any]]:
        """Exit code and the JSON report of `status SCOPE` (-n NAMESPACE, -A, -l ...)."""
        result = self.cli("status", *scope, "-o", "json")
        assert result.returncode in (0, 1), result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        assert report["template"]["configmap"] == self.configmap
        return result.returncode, report

    def status(self, namespace: str) -> tuple[int, dict[str, dict[str, Any]]]:
        """Exit code and the report's workloads in `namespace` by KIND/NAME."""
        code, report = self.report("-n", namespace)
        return code, {f"{w['kind']}/{w['name']}": w for w in report["workloads"]}

    def restart(self, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli("restart", "-n", namespace, "--poll-interval", "0.2", *args)


@contextlib.contextmanager
def watching_injector(
    control_plane: ControlPlane, workdir: Path, template: str, *, system: str = SYSTEM
) -> Iterator[Live]:
    """The namespace `system` with the template ConfigMap holding `template`, and a local
    injector that watches it, registered as the mutating webhook; the namespace is deleted
    after."""
    kubectl_ok(control_plane, "create", "namespace", system)
    try:
        kubectl_ok(
            control_plane,
            "apply",
            "-n",
            system,
            "-f",
            "-",
            stdin=json.dumps(template_configmap(template)),
        )
        with (
            running_injector(
                workdir,
                configmap=f"{system}/{TEMPLATE_CONFIGMAP}",
                kubeconfig=control_plane.kubeconfig,
            ) as local,
            injecting(control_plane, local),
        ):
            yield Live(control_plane, local, system=system)
    finally:
        kubectl_ok(control_plane, "delete", "namespace", system, "--wait=false")


async def ready_deployment(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    replicas: int = 2,
    annotations: dict[str, str] = ASK,
) -> Json:
    """A Deployment whose pods carry `annotations`, rolled out; its pods."""
    await kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        manifests.deployment(name, replicas=replicas, annotations=annotations),
    )
    return await wait_rolled_out(kube, namespace, name, replicas=replicas)


async def wait_rolled_out(kube: Kube, namespace: str, name: str, *, replicas: int) -> Json:
    """Until the Deployment has rolled out and its only pods are `replicas` Ready ones."""

    def settled(pods: Json) -> bool:
        return len(pods["items"]) == replicas and all(
            "deletionTimestamp" not in p["metadata"] and has_condition(p, "Ready")
            for p in pods["items"]
        )

    await kube.wait_for(
        f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        lambda d: (
            d["status"].get("updatedReplicas") == replicas
            and d["status"].get("readyReplicas") == replicas
        ),
        limit=60,
    )
    return await kube.wait_for(
        f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3D{name}", settled, limit=60
    )


async def generation(kube: Kube, namespace: str, name: str) -> int:
    found = await kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    value: int = found["metadata"]["generation"]
    return value


async def workloads_made_before_opting_in(kube: Kube, namespace: str) -> None:
    """A DaemonSet, a StatefulSet, a bare pod and a Job that ask for mesher, running in
    `namespace` before it is labelled: none of them went through the webhook."""
    apps, batch = f"/apis/apps/v1/namespaces/{namespace}", f"/apis/batch/v1/namespaces/{namespace}"
    await kube.create(f"{apps}/daemonsets", manifests.daemonset("agent", annotations=ASK))
    await kube.create(f"{apps}/statefulsets", manifests.statefulset("db", annotations=ASK))
    await kube.create(
        f"/api/v1/namespaces/{namespace}/pods", manifests.pod("native", annotations=ASK)
    )
    await kube.create(f"{batch}/jobs", manifests.job("nightly", annotations=ASK))
    await kube.wait_for(f"{apps}/daemonsets/agent", lambda d: d["status"].get("numberReady") == 1)
    await kube.wait_for(f"{apps}/statefulsets/db", lambda s: s["status"].get("readyReplicas") == 1)
    await kube.wait_for(f"{batch}/jobs/nightly", lambda j: j["status"].get("succeeded") == 1)
    await kube.patch(
        f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {INJECTION_LABEL: "enabled"}}}
    )


def kubeconfig_of_a_service_account_without_rights(live: Live, folder: Path) -> Path:
    """A kubeconfig for a fresh ServiceAccount that no RBAC rule names, with a token the
    API server issued for it."""
    plane = live.control_plane
    kubectl_ok(plane, "create", "serviceaccount", "-n", SYSTEM, "nobody")
    token = kubectl_ok(plane, "create", "token", "-n", SYSTEM, "nobody").strip()
    path = folder / "nobody.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "e2e",
                        "cluster": {
                            "server": plane.credentials.server,
                            "certificate-authority": str(plane.credentials.ca),
                        },
                    }
                ],
                "users": [{"name": "nobody", "user": {"token": token}}],
                "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "nobody"}}],
                "current-context": "e2e",
            }
        )
    )
    return path
