"""Template source `configmap`: list, then watch, the template ConfigMap through the
Kubernetes API (kubernetes_asyncio), with injector.kube.listwatch's loop.

List with `fieldSelector=metadata.name=<name>` (so RBAC can be limited to the one
object), then watch from the list's resourceVersion with bookmarks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client, config

from injector.core.settings import ConfigMapRef
from injector.core.store import Reload, TemplateSet
from injector.core.watching import Restart
from injector.kube.kubeconfig import missing_kubeconfig
from injector.kube.listwatch import ListWatch
from injector.kube.pages import read_json


async def api_client_for(server: str = "") -> client.ApiClient:
    """One ApiClient for the process: `server` if given (e.g. kubectl proxy), else
    in-cluster config when KUBERNETES_SERVICE_HOST is set, else the kubeconfig."""
    configuration = client.Configuration()
    try:
        if server:
            configuration.host = server
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            missing = missing_kubeconfig()
            if missing:
                raise ValueError(
                    f"{missing}. Point at a cluster with KUBECONFIG=FILE, or --kube-api-server "
                    "URL (e.g. http://127.0.0.1:8001 from kubectl proxy), or run inside the cluster"
                )
            await config.load_kube_config(client_configuration=configuration)
    except config.ConfigException as exc:
        raise ValueError(f"cannot load the Kubernetes client config: {exc}") from exc
    return client.ApiClient(configuration=configuration)


async def open_configmap_source(
    *,
    kube_api_server: str,
    ref: ConfigMapRef,
    store: TemplateSet,
    report: Callable[[Reload], None],
    on_restart: Callable[[Restart, float], None],
    read_timeout: float,
    watch_timeout: int,
) -> ConfigMapSource:
    """A source with an API client of its own (closed by `close`): what `serve` hands the
    server for --template-source configmap."""
    api = await api_client_for(kube_api_server)
    return ConfigMapSource(
        api=api,
        ref=ref,
        store=store,
        report=report,
        on_restart=on_restart,
        read_timeout=read_timeout,
        watch_timeout=watch_timeout,
    )


class ConfigMapSource(ListWatch):
    """Keeps the store fed from one ConfigMap. `run` loops until cancelled."""

    def __init__(
        self,
        *,
        api: client.ApiClient,
        ref: ConfigMapRef,
        store: TemplateSet,
        report: Callable[[Reload], None],
        **loop: Any,
    ) -> None:
        """`loop`: ListWatch's (on_restart, timeouts, backoff, jitter)."""
        super().__init__(**loop)
        self.api = api
        self.v1 = client.CoreV1Api(api)
        self.ref = ref
        self.store = store
        self.report = report

    async def close(self) -> None:
        await self.api.close()

    async def list_once(self) -> None:
        listing = await read_json(
            await self.v1.list_namespaced_config_map(
                self.ref.namespace,
                field_selector=self.ref.field_selector,
                _preload_content=False,
                _request_timeout=(self.connect_timeout, self.read_timeout),
            )
        )
        items = listing.get("items") or []
        self.resource_version = str(listing["metadata"]["resourceVersion"])
        if items:
            self._apply(items[0])
        else:
            self._gone(f"ConfigMap {self.ref.namespace}/{self.ref.name} not found")

    def watch_request(self) -> Callable[..., Awaitable[Any]]:
        return functools.partial(
            self.v1.list_namespaced_config_map,
            self.ref.namespace,
            field_selector=self.ref.field_selector,
        )

    def handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        obj = event.get("raw_object") or {}
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if version:
            self.resource_version = version
        if kind in ("ADDED", "MODIFIED"):
            self._apply(obj)
        elif kind == "DELETED":
            self._gone(
                f"ConfigMap {self.ref.namespace}/{self.ref.name} was deleted; "
                "the last good template keeps serving"
            )

    def _apply(self, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        source = self.ref.describe(str(metadata.get("resourceVersion") or ""))
        data = obj.get("data")
        for reload in self.store.offer_data(
            data if isinstance(data, dict) else {}, source=source, default_key=self.ref.key
        ):
            self.report(reload)

    def _gone(self, why: str) -> None:
        for reload in self.store.source_gone(
            source=self.ref.describe(self.resource_version), why=why
        ):
            self.report(reload)
