"""A ConfigMapSource watching a local server that speaks the list/watch protocol with
the responses a real API server recorded: what it applied and why it restarted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from injector.core.settings import ConfigMapRef
from injector.core.store import Reload, TemplateSet
from injector.core.watching import Backoff, Restart
from injector.kube.configmap import ConfigMapSource
from tests.support.kube_api import NAME, NAMESPACE, KubeApi

REF = ConfigMapRef(namespace=NAMESPACE, name=NAME)


@dataclass
class Watching:
    api: KubeApi
    source: ConfigMapSource
    store: TemplateSet
    reloads: list[Reload] = field(default_factory=list)
    restarts: list[Restart] = field(default_factory=list)

    def version(self) -> str | None:
        template = self.store.template
        return template.version if template else None

    def results(self) -> list[str]:
        return [r.result for r in self.reloads]


async def serve_api(api: KubeApi) -> TestServer:
    server = TestServer(api.app(), host="127.0.0.1")
    await server.start_server()
    return server


@contextlib.asynccontextmanager
async def watching(api: KubeApi, *, read_timeout: float = 5.0) -> AsyncIterator[Watching]:
    server = await serve_api(api)
    configuration = client.Configuration(host=str(server.make_url("")).rstrip("/"))
    api_client = client.ApiClient(configuration=configuration)
    store = TemplateSet()
    holder: dict[str, Watching] = {}
    source = ConfigMapSource(
        api=api_client,
        ref=REF,
        store=store,
        report=lambda r: holder["w"].reloads.append(r),
        on_restart=lambda r, _delay: holder["w"].restarts.append(r),
        read_timeout=read_timeout,
        backoff=Backoff(base=0.01, cap=0.05),
    )
    w = holder["w"] = Watching(api=api, source=source, store=store)
    task = asyncio.create_task(source.run())
    try:
        yield w
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api_client.close()
        await server.close()
