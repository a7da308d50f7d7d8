"""injector.kube.cluster: `Cluster.read` asks the API server for each kind `diff` previews
(a local server records the paths); list pages, decoded with only the fields status reads,
give the workloads that the API server's whole answers give."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from aiohttp import web

from injector.core.manual import POD_KINDS
from injector.core.workloads import Snapshot, workloads
from injector.kube.cluster import Cluster
from injector.kube.pages import decode_page
from tests.support.helpers import KUBE_API, deployment_workload, recorded_items
from tests.support.kube_api import api_client_of

PATHS = {
    "Deployment": "/apis/apps/v1/namespaces/shop/deployments/web",
    "StatefulSet": "/apis/apps/v1/namespaces/shop/statefulsets/web",
    "DaemonSet": "/apis/apps/v1/namespaces/shop/daemonsets/web",
    "ReplicaSet": "/apis/apps/v1/namespaces/shop/replicasets/web",
    "Job": "/apis/batch/v1/namespaces/shop/jobs/web",
    "CronJob": "/apis/batch/v1/namespaces/shop/cronjobs/web",
    "Pod": "/api/v1/namespaces/shop/pods/web",
}


async def test_read_gets_the_object_of_every_kind_whose_pods_diff_previews() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with api_client_of(app) as api:
        cluster = Cluster(api)
        read = {
            kind: await cluster.read(replace(deployment_workload("web"), kind=kind))
            for kind in sorted(POD_KINDS)
        }

    assert read == {kind: {"path": path} for kind, path in PATHS.items()}


# The lists status reads, each a field of Snapshot and a recorded answer.
RESOURCES = ("pods", "replicasets", "jobs", "namespaces")
# Every container of the recorded pods: each pod then counts as injected by its containers.
CONTAINERS = frozenset(c["name"] for p in recorded_items("pods") for c in p["spec"]["containers"])


@pytest.mark.parametrize("sidecars", [frozenset({"mesher"}), CONTAINERS])
def test_status_finds_the_same_workloads_in_decoded_pages_as_in_whole_answers(
    sidecars: frozenset[str],
) -> None:
    whole = Snapshot(**{name: recorded_items(name) for name in RESOURCES})
    decoded = Snapshot(
        **{
            name: decode_page((KUBE_API / f"{name}-list.json").read_bytes()).items
            for name in RESOURCES
        }
    )

    found = workloads(decoded, revision="r", sidecar_names=sidecars)

    assert found == workloads(whole, revision="r", sidecar_names=sidecars)
    assert found


def test_a_page_gives_its_continue_token_and_the_last_none() -> None:
    answer = json.loads((KUBE_API / "pods-list.json").read_bytes())
    last = json.dumps(answer).encode()
    answer["metadata"]["continue"] = "next-page"

    assert decode_page(json.dumps(answer).encode()).next == "next-page"
    assert decode_page(last).next == ""
