"""A local HTTP server that answers what `status` and `restart` ask a Kubernetes API
server, from the list answers a real one recorded (tests/fixtures/kube-api/*-list.json):
pods, ReplicaSets, Jobs and namespaces (in one namespace or all), the template ConfigMap,
the injector Deployment, and the workloads' GET and strategic-merge PATCH.

A PATCH is recorded and bumps the workload's generation; with `rollouts_complete` the
"controller" then reports the rollout complete and the workload's pods come back
injected with `revision` (what the webhook would do); without it, the rollout never
completes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from tests.helpers import KUBE_API, ROOT

KINDS = {
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
    "replicasets": "ReplicaSet",
    "jobs": "Job",
    "pods": "Pod",
    "namespaces": "Namespace",
}


def recorded_items(resource: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads((KUBE_API / f"{resource}-list.json").read_text())[
        "items"
    ]
    return items


@dataclass
class Patch:
    path: str
    content_type: str
    field_manager: str
    body: dict[str, Any]


@dataclass
class KubeCluster:
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    revision: str = ""
    rollouts_complete: bool = True
    patches: list[Patch] = field(default_factory=list)
    forbidden: bool = False

    @classmethod
    def recorded(cls) -> KubeCluster:
        objects = {resource: recorded_items(resource) for resource in KINDS}
        template = json.loads((KUBE_API / "list.json").read_text())["items"][0]
        template["data"]["template.yaml"] = (ROOT / "config" / "template.yaml").read_text()
        objects["configmaps"] = [template]
        injector = yaml.safe_load((ROOT / "deploy" / "base" / "deployment.yaml").read_text())
        injector["status"] = {"replicas": 2, "availableReplicas": 2}
        objects["deployments"].append(injector)
        objects["namespaces"].append(
            {"metadata": {"name": "plain", "labels": {"kubernetes.io/metadata.name": "plain"}}}
        )
        return cls(objects=objects)

    def find(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        for item in self.objects.get(resource, []):
            meta = item["metadata"]
            if meta["name"] == name and meta.get("namespace", namespace) == namespace:
                return item
        return None

    def pods_of(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        owners = {(kind, name)}
        if kind == "Deployment":
            for rs in self.objects["replicasets"]:
                refs = rs["metadata"].get("ownerReferences", [])
                if any(r["kind"] == "Deployment" and r["name"] == name for r in refs):
                    owners.add(("ReplicaSet", rs["metadata"]["name"]))
        return [
            p
            for p in self.objects["pods"]
            if p["metadata"]["namespace"] == namespace
            and any(
                (r["kind"], r["name"]) in owners for r in p["metadata"].get("ownerReferences", [])
            )
        ]

    # --- HTTP -----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/{resource}", self.list_all)
        app.router.add_get("/apis/{group}/v1/{resource}", self.list_all)
        app.router.add_get("/api/v1/namespaces/{namespace}", self.get_namespace)
        app.router.add_get("/api/v1/namespaces/{namespace}/{resource}", self.list_namespaced)
        app.router.add_get(
            "/apis/{group}/v1/namespaces/{namespace}/{resource}", self.list_namespaced
        )
        app.router.add_get("/api/v1/namespaces/{namespace}/{resource}/{name}", self.get)
        app.router.add_get("/apis/{group}/v1/namespaces/{namespace}/{resource}/{name}", self.get)
        app.router.add_patch(
            "/apis/{group}/v1/namespaces/{namespace}/{resource}/{name}", self.patch
        )
        return app

    def _forbidden(self) -> web.Response | None:
        if not self.forbidden:
            return None
        return web.Response(
            status=403,
            body=(KUBE_API / "list-forbidden.json").read_bytes(),
            content_type="application/json",
        )

    @staticmethod
    def _selected(items: list[dict[str, Any]], selector: str) -> list[dict[str, Any]]:
        wanted = dict(term.split("=", 1) for term in selector.split(",") if "=" in term)
        return [i for i in items if wanted.items() <= (i["metadata"].get("labels") or {}).items()]

    def _list(
        self, resource: str, items: list[dict[str, Any]], request: web.Request
    ) -> web.Response:
        items = self._selected(items, request.query.get("labelSelector", ""))
        kind = KINDS.get(resource, "Object") + "List"
        return web.json_response(
            {"kind": kind, "metadata": {"resourceVersion": "315"}, "items": items}
        )

    async def list_all(self, request: web.Request) -> web.StreamResponse:
        resource = request.match_info["resource"]
        return self._forbidden() or self._list(resource, self.objects.get(resource, []), request)

    async def list_namespaced(self, request: web.Request) -> web.StreamResponse:
        resource, namespace = request.match_info["resource"], request.match_info["namespace"]
        items = [
            i for i in self.objects.get(resource, []) if i["metadata"].get("namespace") == namespace
        ]
        return self._forbidden() or self._list(resource, items, request)

    async def get_namespace(self, request: web.Request) -> web.StreamResponse:
        found = self.find("namespaces", "", request.match_info["namespace"])
        return self._forbidden() or self._one(found)

    async def get(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        return self._forbidden() or self._one(self.find(m["resource"], m["namespace"], m["name"]))

    @staticmethod
    def _one(found: dict[str, Any] | None) -> web.Response:
        if found is None:
            return web.Response(
                status=404,
                body=(KUBE_API / "get-missing.json").read_bytes(),
                content_type="application/json",
            )
        return web.json_response(found)

    async def patch(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        found = self.find(m["resource"], m["namespace"], m["name"])
        if found is None:
            return self._one(None)
        body = await request.json()
        self.patches.append(
            Patch(
                path=request.path,
                content_type=request.content_type,
                field_manager=request.query.get("fieldManager", ""),
                body=body,
            )
        )
        annotations = body["spec"]["template"]["metadata"]["annotations"]
        template_meta = found["spec"]["template"].setdefault("metadata", {})
        template_meta.setdefault("annotations", {}).update(annotations)
        meta = found["metadata"]
        meta["generation"] = meta.get("generation", 1) + 1
        if self.rollouts_complete:
            found.setdefault("status", {})["observedGeneration"] = meta["generation"]
            for pod in self.pods_of(KINDS[m["resource"]], m["namespace"], m["name"]):
                self.inject(pod)
        return web.json_response(found)

    def inject(self, pod: dict[str, Any]) -> None:
        """What the webhook does to the pod when it is re-created."""
        annotations = pod["metadata"].setdefault("annotations", {})
        annotations["sidecar.mesher.io/status"] = "injected"
        annotations["sidecar.mesher.io/template-revision"] = self.revision
        if not any(c["name"] == "mesher" for c in pod["spec"]["containers"]):
            pod["spec"]["containers"].append({"name": "mesher", "image": "mesher"})

    def set_injector_available(self, available: int) -> None:
        injector = self.find("deployments", "mesher-system", "mesher-injector")
        assert injector is not None
        injector["status"]["availableReplicas"] = available
