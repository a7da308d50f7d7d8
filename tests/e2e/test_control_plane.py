"""The plumbing: a real API server, real controllers and the stand-in node, on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re

import pytest

from tests.e2e import manifests, node
from tests.e2e.controlplane import SERVICE_RANGES, ControlPlane
from tests.e2e.kube import Json, Kube, has_condition
from tests.support.helpers import ROOT

pytestmark = pytest.mark.e2e

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def pinned_kubernetes_version() -> str:
    go_mod = (ROOT / "scripts" / "controlplane" / "kubernetes" / "go.mod").read_text()
    found = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", go_mod, re.MULTILINE)
    assert found, "scripts/controlplane/kubernetes/go.mod names no k8s.io/kubernetes"
    return found.group(1)


async def pods_of(kube: Kube, namespace: str, app: str) -> list[Json]:
    answer = await kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"app={app}")
    items: list[Json] = answer["items"]
    return items


async def test_the_api_server_runs_the_pinned_kubernetes_version(kube: Kube) -> None:
    version = await kube.get("/version")

    assert version["gitVersion"] == pinned_kubernetes_version()


def test_our_kubectl_is_built_at_the_same_pin(control_plane: ControlPlane) -> None:
    result = control_plane.kubectl("version", "-o", "json")

    assert result.returncode == 0, result.stderr
    versions = json.loads(result.stdout)
    assert versions["clientVersion"]["gitVersion"] == pinned_kubernetes_version()
    assert versions["serverVersion"]["gitVersion"] == pinned_kubernetes_version()


async def test_the_stand_in_node_is_ready(kube: Kube) -> None:
    found = await kube.get(f"/api/v1/nodes/{node.NODE_NAME}")

    assert has_condition(found, "Ready")
    assert not found["spec"].get("taints")


async def test_a_deployments_pods_run_ready_on_loopback_addresses(
    kube: Kube, namespace: str
) -> None:
    await kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        manifests.deployment("web", replicas=2),
    )

    await kube.wait_for(
        f"/apis/apps/v1/namespaces/{namespace}/deployments/web",
        lambda d: d["status"].get("readyReplicas") == 2,
    )
    pods = await pods_of(kube, namespace, "web")
    assert [p["spec"]["nodeName"] for p in pods] == [node.NODE_NAME] * 2
    addresses = [ipaddress.ip_address(p["status"]["podIP"]) for p in pods]
    assert len(set(addresses)) == 2
    assert all(a in LOOPBACK for a in addresses)


async def test_a_deployment_rolls_its_pods_to_a_new_template(kube: Kube, namespace: str) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/web"
    await kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments", manifests.deployment("web", replicas=2)
    )
    await kube.wait_for(path, lambda d: d["status"].get("readyReplicas") == 2)
    before = {p["metadata"]["name"] for p in await pods_of(kube, namespace, "web")}

    await kube.patch(path, {"spec": {"template": {"metadata": {"annotations": {"rolled": "yes"}}}}})

    def rolled(pods: Json) -> bool:
        return len(pods["items"]) == 2 and all(
            p["metadata"].get("annotations", {}).get("rolled") == "yes"
            and has_condition(p, "Ready")
            and "deletionTimestamp" not in p["metadata"]
            for p in pods["items"]
        )

    after = await kube.wait_for(f"/api/v1/namespaces/{namespace}/pods", rolled, limit=60)
    assert {p["metadata"]["name"] for p in after["items"]}.isdisjoint(before)


async def test_deleting_a_deployment_deletes_its_pods(kube: Kube, namespace: str) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/web"
    await kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments", manifests.deployment("web")
    )
    await kube.wait_for(path, lambda d: d["status"].get("readyReplicas") == 1)

    await kube.delete(path, {"propagationPolicy": "Foreground"})

    await kube.wait_for(
        f"/api/v1/namespaces/{namespace}/pods", lambda pods: not pods["items"], limit=60
    )


async def test_a_statefulsets_pods_come_up_one_by_one_under_their_ordinal_names(
    kube: Kube, namespace: str
) -> None:
    await kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/statefulsets",
        manifests.statefulset("db", replicas=2),
    )

    await kube.wait_for(
        f"/apis/apps/v1/namespaces/{namespace}/statefulsets/db",
        lambda s: s["status"].get("readyReplicas") == 2,
    )
    pods = await pods_of(kube, namespace, "db")
    assert sorted(p["metadata"]["name"] for p in pods) == ["db-0", "db-1"]


async def test_a_daemonset_runs_one_pod_on_the_stand_in_node(kube: Kube, namespace: str) -> None:
    await kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/daemonsets", manifests.daemonset("agent")
    )

    await kube.wait_for(
        f"/apis/apps/v1/namespaces/{namespace}/daemonsets/agent",
        lambda d: d["status"].get("numberReady") == 1,
    )
    [pod] = await pods_of(kube, namespace, "agent")
    assert pod["spec"]["nodeName"] == node.NODE_NAME


async def test_a_job_completes(kube: Kube, namespace: str) -> None:
    await kube.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", manifests.job("once"))

    job = await kube.wait_for(
        f"/apis/batch/v1/namespaces/{namespace}/jobs/once", lambda j: has_condition(j, "Complete")
    )

    assert job["status"]["succeeded"] == 1


async def test_a_job_with_a_native_sidecar_completes(kube: Kube, namespace: str) -> None:
    await kube.create(
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        manifests.job("native", init_containers=[manifests.native_sidecar("mesher")]),
    )

    job = await kube.wait_for(
        f"/apis/batch/v1/namespaces/{namespace}/jobs/native",
        lambda j: has_condition(j, "Complete"),
    )

    assert job["status"]["succeeded"] == 1


async def test_a_job_with_a_classic_sidecar_keeps_running(kube: Kube, namespace: str) -> None:
    await kube.create(
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        manifests.job(
            "classic", containers=[manifests.container("app"), manifests.container("mesher")]
        ),
    )
    await kube.wait_for(
        f"/apis/batch/v1/namespaces/{namespace}/jobs/classic",
        lambda j: j["status"].get("active") == 1 and j["status"].get("ready") == 1,
    )

    # Three times as long as the app runs on the stand-in node: a Job without the classic
    # sidecar (the test above) completes well within it.
    await asyncio.sleep(3 * node.RUN_SECONDS)

    job = await kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/classic")
    assert not has_condition(job, "Complete")
    assert job["status"]["active"] == 1
    [pod] = await pods_of(kube, namespace, "classic")
    assert pod["status"]["phase"] == "Running"


async def test_a_service_gets_a_cluster_ip_inside_the_loopback_service_range(
    kube: Kube, namespace: str, control_plane: ControlPlane
) -> None:
    service = await kube.create(
        f"/api/v1/namespaces/{namespace}/services", manifests.service("web")
    )

    address = ipaddress.ip_address(service["spec"]["clusterIP"])
    assert address in ipaddress.ip_network(control_plane.service_cidr)
    assert ipaddress.IPv4Network(control_plane.service_cidr).subnet_of(SERVICE_RANGES)
