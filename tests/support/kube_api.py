"""A local HTTP server that speaks the Kubernetes list/watch protocol for one ConfigMap,
built from the responses a real API server recorded (tests/fixtures/kube-api/).

It keeps the object's state and an event history: a list answers the current state and
resourceVersion; a watch streams the history after the requested resourceVersion as
chunked JSON lines and then waits for new events, ending at `timeoutSeconds`. A watch
from a compacted (too old) resourceVersion gets the recorded HTTP 200 with a 410 ERROR
event. Like RBAC with `resourceNames`, a request without the name field selector is
403. Every request is recorded for the tests to inspect.

Why it stays beside tests/e2e/test_template_watch.py (the same watch on a real API server):
it makes, on demand and within milliseconds, what a real server does rarely or never on
cue (a compacted resourceVersion at watch time, a stalled stream, a 403 on one call).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from tests.support.helpers import KUBE_API

NAMESPACE = "mesher-system"
NAME = "mesher-sidecar-template"
PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps"


def recorded(name: str) -> bytes:
    return (KUBE_API / name).read_bytes()


def recorded_events() -> list[bytes]:
    """MODIFIED (1.6.4), MODIFIED (broken YAML), DELETED, ADDED (new uid), BOOKMARK."""
    return [line for line in recorded("watch.jsonl").splitlines() if line.strip()]


def event_version(line: bytes) -> int:
    return int(json.loads(line)["object"]["metadata"]["resourceVersion"])


@dataclass
class Seen:
    watch: bool
    resource_version: str
    field_selector: str
    timeout_seconds: str
    bookmarks: str


@dataclass
class KubeApi:
    """State and switches. `forbidden`: answer 403 (a ServiceAccount with no RBAC).
    `silent`: a watch sends headers, then nothing (a half-dead connection)."""

    obj: dict[str, Any] | None = None
    version: int = 0
    history: list[tuple[int, bytes]] = field(default_factory=list)
    compacted_below: int = 0
    forbidden: bool = False
    silent: bool = False
    requests: list[Seen] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _close_watches: int = 0

    @classmethod
    def from_recorded_list(cls) -> KubeApi:
        listing = json.loads(recorded("list.json"))
        return cls(obj=listing["items"][0], version=int(listing["metadata"]["resourceVersion"]))

    async def push(self, line: bytes) -> None:
        """Apply one recorded watch event as the API server would have."""
        event = json.loads(line)
        self.version = max(self.version, event_version(line))
        if event["type"] in ("ADDED", "MODIFIED"):
            self.obj = event["object"]
        elif event["type"] == "DELETED":
            self.obj = None
        self.history.append((event_version(line), line))
        async with self._changed:
            self._changed.notify_all()

    async def end_watches(self) -> None:
        """The server ends every open watch (as at its timeoutSeconds or a restart)."""
        self._close_watches += 1
        async with self._changed:
            self._changed.notify_all()

    def _news(self, sent: int, generation: int) -> bool:
        return self._close_watches != generation or (
            bool(self.history) and self.history[-1][0] > sent
        )

    def watches(self) -> list[Seen]:
        return [r for r in self.requests if r.watch]

    def lists(self) -> list[Seen]:
        return [r for r in self.requests if not r.watch]

    # --- HTTP -----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(PATH, self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        seen = Seen(
            watch=query.get("watch", "").lower() in ("true", "1"),  # Go's ParseBool
            resource_version=query.get("resourceVersion", ""),
            field_selector=query.get("fieldSelector", ""),
            timeout_seconds=query.get("timeoutSeconds", ""),
            bookmarks=query.get("allowWatchBookmarks", ""),
        )
        self.requests.append(seen)
        if self.forbidden or seen.field_selector != f"metadata.name={NAME}":
            return web.Response(
                status=403, body=recorded("list-forbidden.json"), content_type="application/json"
            )
        if seen.watch:
            return await self.stream(request, seen)
        return self.list_response()

    def list_response(self) -> web.Response:
        listing = {
            "kind": "ConfigMapList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.version)},
            "items": [self.obj] if self.obj is not None else [],
        }
        return web.json_response(listing)

    async def stream(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        since = int(seen.resource_version or 0)
        if since < self.compacted_below:
            await response.write(recorded("watch-expired.jsonl"))
            await response.write_eof()
            return response
        if self.silent:
            await asyncio.sleep(3600)
        generation = self._close_watches
        sent = since
        while True:
            for version, line in self.history:
                if version > sent:
                    await response.write(line + b"\n")
                    sent = version
            if self._close_watches != generation:
                break
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._news, sent, generation))
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def api_client_of(app: web.Application) -> AsyncIterator[client.ApiClient]:
    """A kubernetes_asyncio client of `app`, served on loopback for the block."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    api = client.ApiClient(client.Configuration(host=str(server.make_url("")).rstrip("/")))
    try:
        yield api
    finally:
        await api.close()
        await server.close()
