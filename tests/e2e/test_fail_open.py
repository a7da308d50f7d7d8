"""Pods that fail open (`sidecar.mesher.io/failurePolicy: Ignore`) behind a real API server:
deploy/'s mutating configuration (both entries, their matchConditions evaluated by
kube-apiserver) registered for a local injector that answered, then stopped. While nothing
answers, a pod that fails open is created without mesher and every other pod that asks is
refused; once the injector is back at the same URL, the fail-open entry calls it, each pod
is sent once, `mesher-injector status` names the pods that failed open meanwhile and the
rollout gauges count them missing until a restart meshes them."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import manifests
from tests.e2e.commands import Live, ready_deployment
from tests.e2e.controlplane import ControlPlane
from tests.e2e.injector import (
    UNREACHABLE,
    LocalInjector,
    decisions_made,
    injecting,
    kubectl_ok,
    probe_namespace,
    running_injector,
    wait_until_a_pod_that_asks_is_refused,
    wait_until_the_api_server_calls,
)
from tests.e2e.kube import ApiError, Json, Kube
from tests.e2e.manifests import ASK, TEMPLATE_CONFIGMAP, container_names, template_configmap
from tests.e2e.rollout import eventually, leads, pods_by_state
from tests.support.helpers import DEFAULT_TEMPLATE
from tests.support.processes import free_port

pytestmark = pytest.mark.e2e

FAILURE_POLICY = "sidecar.mesher.io/failurePolicy"
FAILS_OPEN = {**ASK, FAILURE_POLICY: "Ignore"}
# Where `status` and `restart` find the template ConfigMap and the injector's Deployment.
SYSTEM = "e2e-fail-open-system"


@dataclass(frozen=True, slots=True)
class Outage:
    """deploy/'s mutating configuration registered for an injector that is not running;
    `back()` runs it again at the same URL, under the same CA, for a block."""

    control_plane: ControlPlane
    workdir: Path
    port: int
    probes: str  # a labelled namespace of its own
    live: Live  # status and restart through the admin's kubeconfig

    @contextlib.contextmanager
    def back(self) -> Iterator[LocalInjector]:
        """Back with the template from SYSTEM's ConfigMap, so it also leads the rollout
        watch there (the only replica)."""
        with running_injector(
            self.workdir,
            port=self.port,
            configmap=f"{SYSTEM}/{TEMPLATE_CONFIGMAP}",
            kubeconfig=self.control_plane.kubeconfig,
        ) as local:
            wait_until_the_api_server_calls(self.control_plane, self.probes)
            yield local


@pytest.fixture(scope="module")
def outage(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outage]:
    kubectl_ok(control_plane, "create", "namespace", SYSTEM)
    template = json.dumps(template_configmap(DEFAULT_TEMPLATE.read_text()))
    kubectl_ok(control_plane, "apply", "-n", SYSTEM, "-f", "-", stdin=template)
    stand_in = json.dumps(manifests.deployment("mesher-injector"))  # what restart checks
    kubectl_ok(control_plane, "apply", "-n", SYSTEM, "-f", "-", stdin=stand_in)
    workdir, port = tmp_path_factory.mktemp("fail-open"), free_port()
    try:
        with contextlib.ExitStack() as registration:
            with running_injector(workdir, port=port) as local:
                registration.enter_context(injecting(control_plane, local))
            wait_until_a_pod_that_asks_is_refused(control_plane)
            probes = registration.enter_context(probe_namespace(control_plane))
            yield Outage(control_plane, workdir, port, probes, Live(control_plane, local, SYSTEM))
    finally:
        kubectl_ok(control_plane, "delete", "namespace", SYSTEM, "--wait=false")


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def injected(pod: Json) -> bool:
    annotations = pod["metadata"].get("annotations") or {}
    return annotations.get("sidecar.mesher.io/status") == "injected"


async def test_while_no_injector_answers_a_pod_that_fails_open_is_created_without_mesher(
    kube: Kube, labelled_namespace: str, outage: Outage
) -> None:
    pod = await kube.create(
        pods_path(labelled_namespace), manifests.pod("a", annotations=FAILS_OPEN)
    )

    assert container_names(pod) == ["app"]
    assert not injected(pod)


@pytest.mark.parametrize("policy", [None, "Fail", "ignore"], ids=["absent", "Fail", "ignore"])
async def test_while_no_injector_answers_any_other_pod_that_asks_is_refused(
    kube: Kube, labelled_namespace: str, outage: Outage, policy: str | None
) -> None:
    annotations = ASK if policy is None else {**ASK, FAILURE_POLICY: policy}

    with pytest.raises(ApiError) as refused:
        await kube.create(
            pods_path(labelled_namespace), manifests.pod("b", annotations=annotations)
        )

    assert refused.value.status == 500
    assert UNREACHABLE in str(refused.value)


async def test_once_the_injector_is_back_the_fail_open_entry_calls_it_for_its_pods_only(
    kube: Kube, labelled_namespace: str, outage: Outage
) -> None:
    pods = pods_path(labelled_namespace)
    with outage.back() as injector:
        before = await decisions_made(injector)

        fails_open = await kube.create(pods, manifests.pod("open", annotations=FAILS_OPEN))
        strict = await kube.create(pods, manifests.pod("strict", annotations=ASK))
        never_asked = await kube.create(
            pods, manifests.pod("plain", annotations={FAILURE_POLICY: "Ignore"})
        )

        decided = await decisions_made(injector) - before
    assert container_names(fails_open) == ["app", "mesher"]
    assert injected(fails_open)
    assert container_names(strict) == ["app", "mesher"]
    assert container_names(never_asked) == ["app"]
    # Each pod that asked went to one entry: injected, then re-invoked once by the API server
    # (reinvocationPolicy IfNeeded), as with a single entry; both entries would make that
    # three re-invocations. The pod that did not ask went to neither.
    assert decided == Counter({("injected", "requested"): 2, ("skipped", "already-injected"): 2})


async def test_status_names_the_pods_that_failed_open_and_restart_meshes_them_once_it_is_back(
    kube: Kube, labelled_namespace: str, outage: Outage
) -> None:
    rolled = await ready_deployment(kube, labelled_namespace, "web", annotations=FAILS_OPEN)
    names = sorted(p["metadata"]["name"] for p in rolled["items"])
    assert not any(injected(p) for p in rolled["items"])

    code, workloads = outage.live.status(labelled_namespace)

    assert code == 1
    web = workloads["Deployment/web"]
    assert (web["state"], web["restartable"], web["fail_open_pods"]) == ("missing", True, names)
    assert web["why"] == (
        "2 fail-open pod(s) created while the injector was unreachable "
        f"({FAILURE_POLICY}: Ignore), or before the namespace was labelled: "
        f"{names[0]}, {names[1]}"
    )

    await kube.wait_for(  # restart rolls nothing while the injector has no available replica
        f"/apis/apps/v1/namespaces/{SYSTEM}/deployments/mesher-injector",
        lambda d: d["status"].get("availableReplicas") == 1,
    )
    with outage.back() as injector:
        # The rollout gauges count them missing until the restart, then current.
        await eventually(lambda: leads(injector.admin), bool)
        by_state = await eventually(
            lambda: pods_by_state(injector.admin, labelled_namespace), lambda seen: seen != {}
        )
        assert by_state == {"missing": 2}
        restarted = outage.live.restart(labelled_namespace)
        code, workloads = outage.live.status(labelled_namespace)
        await eventually(
            lambda: pods_by_state(injector.admin, labelled_namespace),
            lambda seen: seen == {"current": 2},
        )

    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert (code, workloads["Deployment/web"]["state"]) == (0, "current")
    assert workloads["Deployment/web"]["fail_open_pods"] == []
