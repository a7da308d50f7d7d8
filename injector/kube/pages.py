"""Answers of the API server read as bytes, and list pages decoded into only the fields
our decisions read: what `status`, `restart` and `diff` list (injector.kube.cluster) and
the rollout leader's pod list (injector.kube.rollout).

A 50,000-pod list is 385 MB of JSON; json.loads made Python objects of all of it (15 s of
`status`'s 25, mostly the garbage collector walking them: bench/RESULTS.md). msgspec builds
the fields below only, as plain dicts and lists, and skips the rest (0.7 s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypedDict

import msgspec
from kubernetes_asyncio.client.exceptions import ApiException


async def read_body(response: Any) -> bytes:
    """A raw answer's (`_preload_content=False`: an aiohttp response) bytes; ApiException
    for an HTTP error, as the preloading client would raise, its reason the API server's
    message."""
    try:
        body: bytes = await response.read()
    finally:
        response.release()
    if not 200 <= response.status <= 299:
        error = ApiException(status=response.status, reason=_status_message(body, response.reason))
        error.body = body
        raise error
    return body


async def read_json(response: Any) -> Any:
    """A raw answer's JSON, as read_body reads it."""
    return json.loads(await read_body(response))


def _status_message(body: bytes, fallback: str | None) -> str:
    try:
        status = json.loads(body)
        return str(status.get("message") or fallback)
    except (ValueError, AttributeError):
        return str(fallback)


class _Named(TypedDict, total=False):
    name: Any


class _Owner(TypedDict, total=False):
    kind: Any
    name: Any
    controller: Any


class _Metadata(TypedDict, total=False):
    name: Any
    namespace: Any
    labels: dict[str, Any] | None
    annotations: dict[str, Any] | None
    ownerReferences: list[_Owner] | None
    creationTimestamp: Any
    deletionTimestamp: Any


class _Spec(TypedDict, total=False):
    containers: list[_Named] | None
    initContainers: list[_Named] | None


class _Item(TypedDict, total=False):
    metadata: _Metadata | None
    spec: _Spec | None


# `continue` is a keyword
_ListMetadata = TypedDict("_ListMetadata", {"continue": Any, "resourceVersion": Any}, total=False)


class _Page(TypedDict, total=False):
    metadata: _ListMetadata | None
    items: list[_Item] | None


_PAGE = msgspec.json.Decoder(_Page)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]  # with the fields above only
    next: str  # the continue token; "" on the last page
    resource_version: str


def decode_page(body: bytes) -> Page:
    """A list answer's items, with the fields above only, its continue token and its
    resourceVersion."""
    page: dict[str, Any] = _PAGE.decode(body)  # type: ignore[assignment]
    metadata = page.get("metadata") or {}
    return Page(
        items=page.get("items") or [],
        next=str(metadata.get("continue") or ""),
        resource_version=str(metadata.get("resourceVersion") or ""),
    )
