"""Template source `configmap`: list, then watch, the template ConfigMap through the
Kubernetes API (kubernetes_asyncio).

List with `fieldSelector=metadata.name=<name>` (so RBAC can be limited to the one
object), then watch from the list's resourceVersion with bookmarks. The stream ends on
the server's `timeoutSeconds`; it is reopened from the last resourceVersion seen. A
client read timeout means a half-dead connection cannot hang the watch. A 410 (the
resourceVersion is too old) lists again at once; any other error lists again after a
jittered exponential backoff. Every restart is logged and counted by reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from injector.core import limits
from injector.core.settings import ConfigMapRef
from injector.core.store import Reload, TemplateSet
from injector.core.watching import Backoff, Restart
from injector.kube.kubeconfig import missing_kubeconfig


def _short(text: str, limit: int = limits.MAX_API_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def classify(exc: BaseException) -> Restart:
    """The restart policy: which errors list again, which count as failures."""
    if isinstance(exc, ApiException):
        if exc.status == 410:
            return Restart("expired", relist=True, failed=False, detail=str(exc.reason))
        reason = {401: "unauthorized", 403: "forbidden", 404: "not-found"}.get(
            exc.status or 0, "api-error"
        )
        return Restart(
            reason, relist=True, failed=True, detail=_short(f"{exc.status} {exc.reason}")
        )
    if isinstance(exc, asyncio.TimeoutError):
        return Restart(
            "read-timeout", relist=False, failed=True, detail="no data within the read timeout"
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        return Restart(
            "disconnected", relist=False, failed=True, detail=f"{type(exc).__name__}: {exc}"
        )
    return Restart(
        "protocol-error", relist=True, failed=True, detail=f"{type(exc).__name__}: {exc}"
    )


class WatchProtocolError(Exception):
    """The watch stream sent something that is not a watch event."""


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


class ConfigMapSource:
    """Keeps the store fed from one ConfigMap. `run` loops until cancelled."""

    def __init__(
        self,
        *,
        api: client.ApiClient,
        ref: ConfigMapRef,
        store: TemplateSet,
        report: Callable[[Reload], None],
        on_restart: Callable[[Restart, float], None],
        read_timeout: float = limits.WATCH_READ_TIMEOUT_S,
        connect_timeout: float = limits.WATCH_CONNECT_TIMEOUT_S,
        watch_timeout: int = limits.WATCH_TIMEOUT_S,
        backoff: Backoff | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.api = api
        self.v1 = client.CoreV1Api(api)
        self.ref = ref
        self.store = store
        self.report = report
        self.on_restart = on_restart
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff()
        self.jitter = jitter
        self.resource_version = ""

    async def close(self) -> None:
        await self.api.close()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if not self.resource_version:
                    await self.list_once()
                    failures = 0
                await self.watch_once()
                restart = Restart("stream-ended", relist=False, failed=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                restart = classify(exc)
                if not self.resource_version:  # the list itself failed: it is retried
                    restart = replace(restart, relist=True)
            failures = failures + 1 if restart.failed else 0
            delay = self.backoff.delay(failures, self.jitter())
            self.on_restart(restart, delay)
            if restart.relist:
                self.resource_version = ""
            if delay:
                await asyncio.sleep(delay)

    async def list_once(self) -> None:
        resp: aiohttp.ClientResponse = await self.v1.list_namespaced_config_map(  # type: ignore[assignment]
            self.ref.namespace,
            field_selector=self.ref.field_selector,
            _preload_content=False,
            _request_timeout=(self.connect_timeout, self.read_timeout),
        )
        try:
            body = await resp.read()
        finally:
            resp.release()
        if not 200 <= resp.status <= 299:
            raise ApiException(status=resp.status, reason=_status_message(body, resp.reason))
        listing = json.loads(body)
        items = listing.get("items") or []
        self.resource_version = str(listing["metadata"]["resourceVersion"])
        if items:
            self._apply(items[0])
        else:
            self._gone(f"ConfigMap {self.ref.namespace}/{self.ref.name} not found")

    async def watch_once(self) -> None:
        """One watch request, from `resource_version`, until the server ends it."""
        timeout = aiohttp.ClientTimeout(
            sock_connect=self.connect_timeout, sock_read=self.read_timeout
        )
        async with watch.Watch() as stream:
            events = stream.stream(
                self.v1.list_namespaced_config_map,
                self.ref.namespace,
                field_selector=self.ref.field_selector,
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout,
                _request_timeout=timeout,
            )
            try:
                async for event in events:
                    self._handle(event)
            finally:
                if stream.resource_version:
                    self.resource_version = str(stream.resource_version)

    def _handle(self, event: Any) -> None:
        if not isinstance(event, dict) or "type" not in event:
            raise WatchProtocolError(f"not a watch event: {_short(str(event))!r}")
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


def _status_message(body: bytes, fallback: str | None) -> str:
    try:
        status = json.loads(body)
        return str(status.get("message") or fallback)
    except ValueError:
        return str(fallback)
