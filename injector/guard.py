"""Connection-level bounds aiohttp does not give: a deadline for a request's headers,
a TLS handshake timeout, and one short warning (no traceback) for broken HTTP; and the
webhook's fast path.

`ConnectionGuard` wraps aiohttp's own protocol and forwards every transport event to
it; when the first byte of a request arrives it notes a deadline that the handler
clears once the headers are in (`headers_received`, then `request_done`). A client
that trickles its headers is cut off at the deadline. While a connection has only sent
requests of the webhook's usual shape, the guard answers them itself (`FastPath`, see
injector/fastpath.py): it keeps a request's reads until the request is all there (or
the header deadline comes: a slow body is then aiohttp's, which answers 408 after its
own read timeout), and moves aiohttp's keep-alive deadline as aiohttp does after an
answer. The first bytes it does not answer go to aiohttp, whose connection it is from
then on. Idle keep-alive connections are aiohttp's business.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from injector.fastpath import DECLINED, INCOMPLETE, request_head


class FastPath(Protocol):
    """The webhook's side of the fast path."""

    def answer(self, request: bytes, body_start: int) -> bytes | None:
        """One whole request and where its body starts -> the answer to write, or None
        to hand the request to aiohttp."""

    def abandoned(self) -> None:
        """A request's headers came, then the client went away before its body."""


class ConnectionGuard(asyncio.Protocol):
    """The deadline is lazy: a request's first bytes only note when its headers are due,
    and one timer per connection, re-armed when it fires early, checks the note. So a
    keep-alive connection's requests arm and cancel no timer each (a timer per request
    was a measurable share of an admission's CPU)."""

    __slots__ = (
        "_deadline",
        "_fast",
        "_head",
        "_header_timeout",
        "_inner",
        "_loop",
        "_max_body",
        "_pending",
        "_timer",
        "_transport",
        "_write_paused",
        "in_request",
    )

    def __init__(
        self,
        inner: RequestHandler,
        *,
        header_timeout: float,
        fast: FastPath | None = None,
        max_body: int = 0,
    ) -> None:
        self._inner = inner
        self._header_timeout = header_timeout
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # when the awaited headers are due
        self._transport: asyncio.BaseTransport | None = None
        self._fast = fast  # None once aiohttp has had bytes of this connection
        self._max_body = max_body
        self._pending: bytearray | None = None  # a request's first reads, on the fast path
        self._head = INCOMPLETE  # the pending request's (body start, length), once known
        self._write_paused = False
        self.in_request = False

    @staticmethod
    def of(request: web.BaseRequest) -> ConnectionGuard | None:
        transport = request.transport
        protocol = transport.get_protocol() if transport is not None else None
        return protocol if isinstance(protocol, ConnectionGuard) else None

    def headers_received(self) -> None:
        """The handler runs: the headers are in. The body has the handler's own timeout."""
        self.in_request = True
        self._deadline = None

    def request_done(self) -> None:
        self.in_request = False

    def close(self) -> None:
        self._cancel()
        if self._transport is not None:
            self._transport.close()

    def _cancel(self) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self.in_request:
            return  # nothing awaited now; the next request's first bytes re-arm
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._check)
            return
        if self._pending is not None and self._head != INCOMPLETE:
            # The headers came, the body is slow: aiohttp's handler takes it from here,
            # and answers 408 if it does not come within its own read timeout.
            self._inner.data_received(self._hand_over(b""))
            return
        logging.getLogger("mesher_injector.http").warning(
            "client did not send its request headers within %.1f s; connection closed",
            self._header_timeout,
        )
        self.close()

    # --- asyncio.Protocol, forwarded ---------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and not self.in_request:
            self._deadline = deadline = self._loop.time() + self._header_timeout
            if self._timer is None:
                self._timer = self._loop.call_at(deadline, self._check)
        if self._fast is not None:
            rest = self._fast_received(data)
            if rest is None:
                return
            data = rest
        self._inner.data_received(data)

    def _fast_received(self, data: bytes) -> bytes | None:
        """The fast path: None when `data` completed a request that is answered, or
        began one that may still be (kept until the rest comes, within the header
        deadline); else the bytes for aiohttp, whose connection it is from now on."""
        pending = self._pending
        if pending is not None:
            pending += data
        whole = data if pending is None else pending
        head = self._head
        if head == INCOMPLETE:
            head = request_head(whole, self._max_body, len(whole) - len(data))
            if head == DECLINED:
                return self._hand_over(data)
        body_start, length = head
        if head == INCOMPLETE or len(whole) < length:
            if pending is None:
                self._pending = bytearray(data)
            self._head = head
            # A request is arriving: not idle for aiohttp's keep-alive timer, which
            # knows nothing of it (the header deadline decides about it).
            self._keep_alive(self._header_timeout)
            return None
        if len(whole) > length or self._write_paused:  # pipelined, or answers unread
            return self._hand_over(data)
        request = data if pending is None else bytes(pending)
        assert self._fast is not None
        answer = self._fast.answer(request, body_start)
        if answer is None or self._transport is None:
            return self._hand_over(data)
        self._pending, self._head, self._deadline = None, INCOMPLETE, None
        self._transport.write(answer)  # type: ignore[attr-defined]
        self._keep_alive()  # what aiohttp does after an answer: idle from now
        return None

    def _keep_alive(self, extra: float = 0.0) -> None:
        """Close the connection once idle for aiohttp's keep-alive timeout (plus `extra`)
        from now: its timer, armed at connection_made, re-checks this time when it fires."""
        inner = self._inner
        inner._next_keepalive_close_time = self._loop.time() + inner._keepalive_timeout + extra

    def _hand_over(self, data: bytes) -> bytes:
        """This connection is aiohttp's from now on: the bytes it has not seen."""
        pending = self._pending
        self._fast, self._pending, self._head = None, None, INCOMPLETE
        return data if pending is None else bytes(pending)

    def eof_received(self) -> bool | None:
        if self._pending is not None:  # a request cut short: aiohttp's to tell
            self._inner.data_received(self._hand_over(b""))
        self._inner.eof_received()
        return None  # aiohttp's answer: close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._pending is not None and self._head != INCOMPLETE and self._fast is not None:
            self._fast.abandoned()  # as aiohttp's path reports a body that never came
        self._pending = None
        self._transport = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """A TCPSite whose connections are wrapped in a ConnectionGuard, with a TLS
    handshake timeout (asyncio's default is 60 s)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        header_timeout: float,
        handshake_timeout: float,
        ssl_context: Any = None,
        fast: FastPath | None = None,
        max_body: int = 0,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self._header_timeout = header_timeout
        self._handshake_timeout = handshake_timeout
        self._fast = fast
        self._max_body = max_body

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        header_timeout, fast, max_body = self._header_timeout, self._fast, self._max_body

        def protocol() -> asyncio.Protocol:
            return ConnectionGuard(
                server(), header_timeout=header_timeout, fast=fast, max_body=max_body
            )

        self._server = await loop.create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )


class _OneLine(logging.Filter):
    """aiohttp logs a broken request (malformed HTTP, a client gone mid-request) with
    a traceback at ERROR; for input a client controls, one short WARNING is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {str(exc)[:200]}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_server_logger() -> logging.Logger:
    logger = logging.getLogger("mesher_injector.http")
    if not any(isinstance(f, _OneLine) for f in logger.filters):
        logger.addFilter(_OneLine())
    return logger
