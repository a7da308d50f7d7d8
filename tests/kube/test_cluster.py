"""injector.kube.cluster: `Cluster.read` asks the API server for each kind `diff` previews
(a local server records the paths)."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from injector.core.manual import POD_KINDS
from injector.kube.cluster import Cluster
from tests.support.helpers import deployment_workload

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
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    api = client.ApiClient(client.Configuration(host=str(server.make_url("")).rstrip("/")))
    try:
        cluster = Cluster(api)
        read = {
            kind: await cluster.read(replace(deployment_workload("web"), kind=kind))
            for kind in sorted(POD_KINDS)
        }
    finally:
        await api.close()
        await server.close()

    assert read == {kind: {"path": path} for kind, path in PATHS.items()}
