"""List, then watch, through kubernetes_asyncio: the loop both watches share (the template
ConfigMap's, injector.kube.configmap, and the rollout leader's pods', injector.kube.rollout).

A list gives a resourceVersion; the watch resumes from the last one seen, with bookmarks.
The stream ends on the server's `timeoutSeconds` and is reopened. A client read timeout
means a half-dead connection cannot hang the watch. A 410 (the resourceVersion is too
old) lists again at once; any other error lists again after a jittered exponential
backoff. Every restart is reported (logged and counted by the caller) with its reason.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from injector.core import limits
from injector.core.watching import Backoff, Restart


def short(text: str) -> str:
    """An API error or an event, cut for a log line or an exception message."""
    return limits.clip(text, limits.MAX_API_ERROR_CHARS)


def classify(exc: BaseException) -> Restart:
    """The restart policy: which errors list again, which count as failures."""
    if isinstance(exc, ApiException):
        if exc.status == 410:
            return Restart("expired", relist=True, failed=False, detail=str(exc.reason))
        reason = {401: "unauthorized", 403: "forbidden", 404: "not-found"}.get(
            exc.status or 0, "api-error"
        )
        return Restart(reason, relist=True, failed=True, detail=short(f"{exc.status} {exc.reason}"))
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


class ListWatch:
    """The loop: `list_once` (sets `resource_version`), then `watch_once` until the
    stream ends, again and again until cancelled. Subclasses say what to list and watch."""

    def __init__(
        self,
        *,
        on_restart: Callable[[Restart, float], None],
        read_timeout: float = limits.WATCH_READ_TIMEOUT_S,
        connect_timeout: float = limits.WATCH_CONNECT_TIMEOUT_S,
        watch_timeout: int = limits.WATCH_TIMEOUT_S,
        backoff: Backoff | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.on_restart = on_restart
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff()
        self.jitter = jitter
        self.resource_version = ""

    async def list_once(self) -> None:
        raise NotImplementedError

    def watch_request(self) -> Callable[..., Awaitable[Any]]:
        """The call that lists with `watch=True` (kubernetes_asyncio's Watch adds it)."""
        raise NotImplementedError

    def handle(self, event: dict[str, Any]) -> None:
        """One event (`type`, `raw_object`); Watch has raised ERROR events already."""
        raise NotImplementedError

    async def watch_once(self) -> None:
        """One watch request, from `resource_version`, until the server ends it."""
        async with watch.Watch() as stream:
            events = stream.stream(
                self.watch_request(),
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout,
                _request_timeout=self.stream_timeout,
            )
            try:
                async for event in events:
                    if not isinstance(event, dict) or "type" not in event:
                        raise WatchProtocolError(f"not a watch event: {short(str(event))!r}")
                    self.handle(event)
            finally:
                if stream.resource_version:
                    self.resource_version = str(stream.resource_version)

    @property
    def stream_timeout(self) -> aiohttp.ClientTimeout:
        """The client's timeout of one watch request: connect, then silence between lines."""
        return aiohttp.ClientTimeout(sock_connect=self.connect_timeout, sock_read=self.read_timeout)

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
                if not self.resource_version:  # the list itself failed: retried, after a
                    restart = replace(restart, relist=True, failed=True)  # backoff (a 410 too)
            failures = failures + 1 if restart.failed else 0
            delay = self.backoff.delay(failures, self.jitter())
            self.on_restart(restart, delay)
            if restart.relist:
                self.resource_version = ""
            if delay:
                await asyncio.sleep(delay)
