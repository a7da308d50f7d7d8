"""Our injector behind a real API server: deploy/'s MutatingWebhookConfiguration (rules,
namespaceSelector, matchConditions) evaluated by kube-apiserver, calling a local
`mesher-injector serve` by URL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import manifests, node
from tests.e2e.controlplane import ControlPlane
from tests.e2e.injector import (
    LocalInjector,
    admin_get,
    decisions_made,
    injecting,
    kubectl_ok,
    running_injector,
)
from tests.e2e.kube import ApiError, Json, Kube, has_condition
from tests.e2e.manifests import ASK, INJECTION_LABEL, container_names

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def injector(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalInjector]:
    """A local injector, registered as deploy/ registers the real one."""
    with (
        running_injector(tmp_path_factory.mktemp("injector")) as local,
        injecting(control_plane, local),
    ):
        yield local


def init_container_names(pod: Json) -> list[str]:
    return [c["name"] for c in pod["spec"].get("initContainers", [])]


async def create_pod(kube: Kube, namespace: str, pod: Json) -> Json:
    return await kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)


async def test_a_pod_that_asks_is_stored_with_the_mesher_sidecar_of_the_current_template(
    kube: Kube, labelled_namespace: str, injector: LocalInjector
) -> None:
    annotations = {**ASK, "sidecar.mesher.io/servicePorts": "rest:8080"}
    app = manifests.container("app", ports=[{"containerPort": 8080}])

    pod = await create_pod(
        kube, labelled_namespace, manifests.pod("server", annotations=annotations, containers=[app])
    )

    assert container_names(pod) == ["app", "mesher"]
    stored = pod["metadata"]["annotations"]
    assert stored["sidecar.mesher.io/status"] == "injected"
    template = json.loads(await admin_get(injector, "/template"))
    assert stored["sidecar.mesher.io/template-revision"] == template["revision"]
    mesher = pod["spec"]["containers"][1]
    assert {"name": "SERVICE_PORTS", "value": "rest:8080"} in mesher["env"]


async def test_a_server_side_dry_run_gets_the_same_sidecar_and_stores_nothing(
    kube: Kube, labelled_namespace: str, injector: LocalInjector
) -> None:
    pods = f"/api/v1/namespaces/{labelled_namespace}/pods"

    answer = await kube.create(pods, manifests.pod("trial", annotations=ASK), dryRun="All")

    assert container_names(answer) == ["app", "mesher"]
    assert (await kube.get(pods))["items"] == []


async def test_a_pod_that_does_not_ask_never_reaches_the_injector(
    kube: Kube, labelled_namespace: str, injector: LocalInjector
) -> None:
    before = await decisions_made(injector)

    pod = await create_pod(kube, labelled_namespace, manifests.pod("plain"))

    assert container_names(pod) == ["app"]
    assert await decisions_made(injector) == before


async def test_a_pod_that_asks_outside_an_opted_in_namespace_is_left_alone(
    kube: Kube, namespace: str, injector: LocalInjector
) -> None:
    before = await decisions_made(injector)

    pod = await create_pod(kube, namespace, manifests.pod("elsewhere", annotations=ASK))

    assert container_names(pod) == ["app"]
    assert await decisions_made(injector) == before


async def test_a_pod_with_an_unknown_discovery_type_is_refused_naming_it(
    kube: Kube, labelled_namespace: str, injector: LocalInjector
) -> None:
    annotations = {**ASK, "sidecar.mesher.io/discoveryType": "consul"}

    with pytest.raises(ApiError) as refused:
        await create_pod(kube, labelled_namespace, manifests.pod("bad", annotations=annotations))

    assert 'admission webhook "sidecar.mesher.io" denied the request' in str(refused.value)
    assert "consul" in str(refused.value)


def test_kubectl_shows_the_warning_for_an_unrecognised_inject_value(
    control_plane: ControlPlane, injector: LocalInjector
) -> None:
    namespace = "e2e-warning"
    kubectl_ok(control_plane, "create", "namespace", namespace)
    kubectl_ok(control_plane, "label", "namespace", namespace, f"{INJECTION_LABEL}=enabled")
    pod = manifests.pod("loose", annotations={"sidecar.mesher.io/inject": "true"})
    try:
        result = control_plane.kubectl(
            "create", "-n", namespace, "-o", "json", "-f", "-", stdin=json.dumps(pod)
        )
    finally:
        kubectl_ok(control_plane, "delete", "namespace", namespace, "--wait=false")

    assert result.returncode == 0, result.stderr
    assert "Warning: sidecar.mesher.io/inject=" in result.stderr
    assert 'use "yes" or "y" to inject' in result.stderr
    assert container_names(json.loads(result.stdout)) == ["app"]


async def test_an_injected_deployment_runs_ready_with_mesher_beside_the_app(
    kube: Kube, labelled_namespace: str, injector: LocalInjector
) -> None:
    await kube.create(
        f"/apis/apps/v1/namespaces/{labelled_namespace}/deployments",
        manifests.deployment("web", replicas=2, annotations=ASK),
    )

    await kube.wait_for(
        f"/apis/apps/v1/namespaces/{labelled_namespace}/deployments/web",
        lambda d: d["status"].get("readyReplicas") == 2,
    )
    pods = await kube.get(f"/api/v1/namespaces/{labelled_namespace}/pods", labelSelector="app=web")
    assert [container_names(p) for p in pods["items"]] == [["app", "mesher"]] * 2


def an_injected_job(name: str, *, native: str) -> dict[str, Any]:
    annotations = {**ASK, "sidecar.mesher.io/nativeSidecar": native}
    return manifests.job(name, annotations=annotations)


async def test_an_injected_job_with_mesher_as_a_native_sidecar_completes(
    kube: Kube, labelled_namespace: str, injector: LocalInjector
) -> None:
    jobs = f"/apis/batch/v1/namespaces/{labelled_namespace}/jobs"

    await kube.create(jobs, an_injected_job("nightly", native="yes"))

    await kube.wait_for(f"{jobs}/nightly", lambda j: has_condition(j, "Complete"))
    [pod] = (
        await kube.get(f"/api/v1/namespaces/{labelled_namespace}/pods", labelSelector="app=nightly")
    )["items"]
    assert init_container_names(pod)[0] == "mesher"
    assert pod["spec"]["initContainers"][0]["restartPolicy"] == "Always"


async def test_an_injected_job_with_mesher_as_a_classic_sidecar_keeps_running(
    kube: Kube, labelled_namespace: str, injector: LocalInjector
) -> None:
    jobs = f"/apis/batch/v1/namespaces/{labelled_namespace}/jobs"
    await kube.create(jobs, an_injected_job("nightly", native="no"))
    await kube.wait_for(f"{jobs}/nightly", lambda j: j["status"].get("ready") == 1)

    # Three times as long as the app runs on the stand-in node.
    await asyncio.sleep(3 * node.RUN_SECONDS)

    job = await kube.get(f"{jobs}/nightly")
    assert not has_condition(job, "Complete")
    assert job["status"]["active"] == 1
