"""Bounds on the webhook port that aiohttp does not give, built on public API only: a
deadline for each request, a TLS handshake timeout, a budget for the request bodies
held across all connections, and one short warning (no traceback) for broken HTTP.

aiohttp documents `web.Server` as a protocol factory for `loop.create_server`; `listen`
passes it there, each connection's protocol wrapped in a `ConnectionGuard` (which
forwards every transport event to aiohttp's), and with asyncio's
`ssl_handshake_timeout`. aiohttp parses and answers every request.

The deadline (`--read-timeout`) runs from a request's first byte. It is armed when bytes
arrive while no request is being handled and no answer waits for the client to read it,
and it is handed to the handler when the head is in (`headers_received`), which reads
the body by the same deadline: one read timeout per request. An idle keep-alive
connection has no deadline: aiohttp's keep-alive timeout closes it. Known limits: a
pipelined request whose first bytes came while the one before it was handled gets no
head deadline (if its head never completes, aiohttp's keep-alive timeout closes the
connection); a deadline suspended while answers wait to be read starts afresh when the
client reads again; and aiohttp parses up to 32 pipelined requests per connection, their
bodies included, before our handler sees them, outside the body budget.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web

from injector.core.limits import MAX_ECHO_CHARS, clip

LOG = logging.getLogger("mesher_injector.http")


class ConnectionGuard(asyncio.Protocol):
    """One connection's request deadline, around aiohttp's own protocol."""

    __slots__ = (
        "_handling",
        "_inner",
        "_loop",
        "_timeout",
        "_timer",
        "_transport",
        "_waiting",
        "_write_paused",
    )

    def __init__(self, inner: asyncio.Protocol, *, read_timeout: float) -> None:
        self._inner = inner
        self._timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._handling = False  # a request's handler runs
        self._waiting = False  # a request's head has begun to arrive, and is not all in
        self._write_paused = False  # an answer waits for the client to read

    @staticmethod
    def of(request: web.BaseRequest) -> ConnectionGuard | None:
        transport = request.transport
        protocol = transport.get_protocol() if transport is not None else None
        return protocol if isinstance(protocol, ConnectionGuard) else None

    def headers_received(self) -> float:
        """A request's handler starts: its head is in. Returns the loop time by which
        its body must be in too."""
        timer = self._timer
        deadline = timer.when() if timer is not None else self._loop.time() + self._timeout
        self._handling, self._waiting = True, False
        self._update()
        return deadline

    def request_done(self) -> None:
        self._handling = False
        self._update()

    def _update(self) -> None:
        """Arm the deadline while a head is awaited, and only then."""
        awaited = self._waiting and not self._handling and not self._write_paused
        if awaited and self._timer is None:
            self._timer = self._loop.call_later(self._timeout, self._expired)
        elif not awaited and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        LOG.warning(
            "client did not send its request headers within %.1f s; connection closed",
            self._timeout,
        )
        if self._transport is not None:
            self._transport.close()

    # --- asyncio.Protocol, forwarded ---------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        # Empty lines before a request are to be ignored (RFC 9112, 2.2): no head yet.
        if not self._handling and data.strip(b"\r\n"):
            self._waiting = True
            self._update()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting = False
        self._update()
        self._transport = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update()
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update()
        self._inner.resume_writing()


async def listen(
    server: web.Server,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    read_timeout: float,
    handshake_timeout: float,
) -> asyncio.Server:
    """Serve aiohttp's low-level `server` on host:port over TLS, each connection guarded."""
    loop = asyncio.get_running_loop()

    def protocol() -> asyncio.Protocol:
        return ConnectionGuard(server(), read_timeout=read_timeout)

    return await loop.create_server(
        protocol, host, port, ssl=ssl_context, ssl_handshake_timeout=handshake_timeout
    )


class BodyBudget:
    """The request-body bytes held at once, across all connections (DESIGN 12).

    A body is admitted only if its bytes fit: `take` before reading it, `give_back`
    once its request is answered. Bodies over `large` bytes (no ordinary pod's) may fill
    only `large_share` of the budget, so a flood of large stalled bodies leaves room for
    the API server's ordinary requests."""

    __slots__ = ("in_flight", "large", "large_in_flight", "large_limit", "limit")

    def __init__(self, limit: int, *, large: int, large_share: float) -> None:
        self.limit = limit
        self.large = large
        self.large_limit = int(limit * large_share)
        self.in_flight = 0
        self.large_in_flight = 0

    def take(self, size: int) -> bool:
        if self.in_flight + size > self.limit:
            return False
        if size > self.large:
            if self.large_in_flight + size > self.large_limit:
                return False
            self.large_in_flight += size
        self.in_flight += size
        return True

    def give_back(self, size: int) -> None:
        self.in_flight -= size
        if size > self.large:
            self.large_in_flight -= size


class _OneLine(logging.Filter):
    """aiohttp logs a broken request (malformed HTTP, a client gone mid-request) with
    a traceback at ERROR; for input a client controls, one short WARNING is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = (
                f"{record.getMessage()}: {type(exc).__name__}: {clip(str(exc), MAX_ECHO_CHARS)}"
            )
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_server_logger() -> logging.Logger:
    if not any(isinstance(f, _OneLine) for f in LOG.filters):
        LOG.addFilter(_OneLine())
    return LOG
