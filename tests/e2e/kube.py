"""A small JSON client for the e2e control plane's API server (aiohttp, client certificate).

Plain REST paths keep the tests readable next to the Kubernetes API reference, and typed
without kubernetes-asyncio's untyped models."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

Json = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where the API server is and how to reach it: what a kubeconfig says."""

    server: str
    ca: Path
    cert: Path
    key: Path

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


def has_condition(obj: Json, kind: str) -> bool:
    """Whether a Kubernetes object's status has condition `kind` True (Ready, Complete...)."""
    conditions = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: Json) -> None:
        super().__init__(f"{method} {path}: {status} {body.get('message', body)}")
        self.status = status
        self.body = body


class Kube:
    """`async with Kube(credentials) as kube: await kube.get("/api/v1/namespaces")`."""

    def __init__(self, credentials: Credentials, *, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self._session = aiohttp.ClientSession(
            base_url=credentials.server,
            connector=aiohttp.TCPConnector(ssl=credentials.ssl_context()),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Json | None = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Json:
        async with self._session.request(
            method,
            path,
            json=body,
            params=params,
            headers={"Content-Type": content_type},
        ) as response:
            answer: Json = await response.json(content_type=None)
            if response.status >= 400:
                raise ApiError(method, path, response.status, answer)
            return answer

    async def text(self, path: str) -> str:
        async with self._session.get(path) as response:
            text = await response.text()
            if response.status >= 400:
                raise ApiError("GET", path, response.status, {"message": text})
            return text

    async def get(self, path: str, **params: str) -> Json:
        return await self.request("GET", path, params=params or None)

    async def create(self, path: str, body: Json, **params: str) -> Json:
        return await self.request("POST", path, body, params=params or None)

    async def patch(self, path: str, body: Json) -> Json:
        return await self.request("PATCH", path, body, content_type=MERGE_PATCH)

    async def delete(self, path: str, body: Json | None = None) -> Json:
        return await self.request("DELETE", path, body)

    async def wait_for(
        self, path: str, predicate: Callable[[Json], bool], *, limit: float = 30.0
    ) -> Json:
        """GET `path` until `predicate` holds of the answer; fail after `limit` seconds,
        showing the last answer (a missing object counts as not yet)."""
        deadline = time.monotonic() + limit
        last: Json | ApiError | None = None
        while time.monotonic() < deadline:
            try:
                last = await self.get(path)
            except ApiError as error:
                if error.status != 404:
                    raise
                last = error
            else:
                if predicate(last):
                    return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"{path} not as expected within {limit} s; last: {last}")
