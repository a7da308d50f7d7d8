"""The kubernetes-asyncio calls of `status`, `restart` and `diff`: list what the cluster
holds, read the live template and a workload, check the injector, roll a workload and wait
for it. No decision is made here (see injector.core.workloads and injector.core.restart);
answers come back as the API server's own JSON, list items with only the fields those
decisions read (injector.kube.pages).
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config

from injector.core.limits import LIST_PAGE
from injector.core.names import INJECTOR_DEPLOYMENT, PRODUCT
from injector.core.restart import restart_patch, rollout_done
from injector.core.settings import ConfigMapRef
from injector.core.workloads import Snapshot, Workload
from injector.kube.pages import decode_page, read_body


def kubeconfig_namespace() -> str:
    """The current context's namespace, as kubectl would use it; else `default`."""
    try:
        _contexts, current = config.list_kube_config_contexts()
        return str((current or {}).get("context", {}).get("namespace") or "default")
    except Exception:  # no kubeconfig, or no context: kubectl says default too
        return "default"


async def _body(call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> bytes:
    """The answer's bytes; ApiException for an HTTP error, as the preloading client would
    raise."""
    return await read_body(await call(*args, _preload_content=False, **kwargs))


async def _json(call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The answer as the API server's own JSON (no model objects)."""
    data: dict[str, Any] = json.loads(await _body(call, *args, **kwargs))
    return data


async def _items(call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> list[Any]:
    """Every item of a list (as decode_page keeps it), page by page."""
    items: list[Any] = []
    token = ""
    while True:
        extra = {"_continue": token} if token else {}
        page = decode_page(await _body(call, *args, limit=LIST_PAGE, **kwargs, **extra))
        items += page.items
        token = page.next
        if not token:
            return items


@dataclass
class Cluster:
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    async def snapshot(self, *, namespace: str | None, selector: str = "") -> Snapshot:
        """Pods (with `selector`) and the owners and namespaces that say what they are;
        `namespace` None: all namespaces."""
        core, apps, batch = self.core, self.apps, client.BatchV1Api(self.api)
        if namespace is None:
            pods = await _items(core.list_pod_for_all_namespaces, label_selector=selector)
            replicasets = await _items(apps.list_replica_set_for_all_namespaces)
            jobs = await _items(batch.list_job_for_all_namespaces)
            namespaces = await _items(core.list_namespace)
        else:
            pods = await _items(core.list_namespaced_pod, namespace, label_selector=selector)
            replicasets = await _items(apps.list_namespaced_replica_set, namespace)
            jobs = await _items(batch.list_namespaced_job, namespace)
            namespaces = [await _json(core.read_namespace, namespace)]
        return Snapshot(pods=pods, replicasets=replicasets, jobs=jobs, namespaces=namespaces)

    async def configmap_data(self, ref: ConfigMapRef) -> Any:
        configmap = await _json(self.core.read_namespaced_config_map, ref.name, ref.namespace)
        return configmap.get("data")

    async def injector_available(self, namespace: str) -> int:
        deployment = await _json(
            self.apps.read_namespaced_deployment, INJECTOR_DEPLOYMENT, namespace
        )
        return int((deployment.get("status") or {}).get("availableReplicas") or 0)

    async def read(self, workload: Workload) -> dict[str, Any]:
        """The workload's object as the API server has it: a Deployment, StatefulSet,
        DaemonSet, ReplicaSet, Job, CronJob or bare Pod (`manual.POD_KINDS`; KeyError for
        another kind)."""
        apps, batch = self.apps, client.BatchV1Api(self.api)
        read = {
            "Deployment": apps.read_namespaced_deployment,
            "StatefulSet": apps.read_namespaced_stateful_set,
            "DaemonSet": apps.read_namespaced_daemon_set,
            "ReplicaSet": apps.read_namespaced_replica_set,
            "Job": batch.read_namespaced_job,
            "CronJob": batch.read_namespaced_cron_job,
            "Pod": self.core.read_namespaced_pod,
        }[workload.kind]
        return await _json(read, workload.name, workload.namespace)

    async def restart(self, workload: Workload, now: datetime.datetime) -> None:
        """What `kubectl rollout restart` does: a strategic-merge PATCH of the pod
        template's restartedAt annotation."""
        patch = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "StatefulSet": self.apps.patch_namespaced_stateful_set,
            "DaemonSet": self.apps.patch_namespaced_daemon_set,
        }[workload.kind]
        await patch(
            workload.name,
            workload.namespace,
            restart_patch(now),
            field_manager=f"{PRODUCT}-restart",
        )

    async def wait_rolled_out(self, workload: Workload, *, interval: float = 1.0) -> None:
        """Until the rollout is complete (bound it with asyncio.timeout)."""
        while True:  # polled, as kubectl rollout status does without a watch
            if rollout_done(workload.kind, await self.read(workload)):
                return
            await asyncio.sleep(interval)
