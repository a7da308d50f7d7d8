"""A webhook request's head and body, read within their limits: the body's size from
the head, then its bytes by the request's deadline; or the refusal that answers it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from aiohttp import web


@dataclass(frozen=True, slots=True)
class Refusal:
    """An HTTP error answer to a request (not an admission decision)."""

    status: int
    reason: str  # the bad_requests metric's label
    message: str


class ClientGone(Exception):
    """The client went away before its request was all in."""


def check_head(request: web.BaseRequest, max_body_bytes: int) -> int | Refusal:
    """How many body bytes a POST to a webhook may bring (its Content-Length, or the
    limit when it is chunked), or the HTTP error answer for its head."""
    encoding = (request.headers.get("Content-Encoding") or "").strip().lower()
    if encoding not in ("", "identity"):
        # Never inflated: the API server does not compress request bodies, and a small
        # compressed body can inflate to gigabytes.
        return Refusal(
            415,
            "content-encoding",
            f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed",
        )
    if request.content_type != "application/json":
        return Refusal(
            400,
            "content-type",
            f"Content-Type must be application/json, got {request.content_type!r}",
        )
    length = request.content_length
    if length is not None and length > max_body_bytes:
        return Refusal(
            413,
            "too-large",
            f"the request body ({length} bytes) is over the limit of {max_body_bytes} bytes",
        )
    return max_body_bytes if length is None else length


async def read_body(request: web.BaseRequest, *, limit: int, deadline: float) -> bytes | Refusal:
    """The body of a POST to a webhook, read by the request's deadline (loop time) and
    never past `limit` bytes (never inflated), or the refusal for it."""
    content = request.content
    try:
        if content.is_eof():  # all of it is here (the usual case): nothing to wait for
            body = await _read_at_most(content, limit)
        else:
            async with asyncio.timeout_at(deadline):
                body = await _read_at_most(content, limit)
    except TimeoutError:
        return Refusal(408, "body-timeout", "the request body did not arrive in time")
    except (ConnectionError, aiohttp.ClientError) as exc:
        raise ClientGone(str(exc) or type(exc).__name__) from None
    if body is None:
        return Refusal(413, "too-large", f"the request body is over the limit of {limit} bytes")
    return body


async def _read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes | None:
    """All of `content`, or None once it is over `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
