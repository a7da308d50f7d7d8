"""Slow, broken and vanishing clients over real TLS: bounded in time, one short log line
each, never a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from injector.server import Server
from tests.conftest import connect, start_server
from tests.helpers import admission_fixture

READ_TIMEOUT = 0.4
BODY = json.dumps(admission_fixture("server-mesher")).encode()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    server, _ = await start_server(tmp_path, read_timeout=READ_TIMEOUT, keepalive_timeout=0.6)
    yield server
    await server.stop()


def head(length: int = len(BODY)) -> bytes:
    return (
        "POST /mutate?timeout=5s HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def closed_within(reader: asyncio.StreamReader, limit: float) -> bytes:
    """Everything the server sends until it closes; fails if it is still open at `limit`."""
    return await asyncio.wait_for(reader.read(), limit)


async def trickle_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send a request's headers one byte every 50 ms (2 s for 40 bytes) until the server
    closes the connection."""
    for byte in head()[:40]:
        writer.write(bytes([byte]))
        try:
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(0.05)
        if reader.at_eof():
            return


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert "Traceback" not in record.getMessage()
        assert record.levelno <= logging.WARNING, record.getMessage()


async def test_a_client_that_trickles_its_headers_is_cut_off(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await connect(server)
    started = time.monotonic()
    await trickle_headers(reader, writer)
    assert await closed_within(reader, 2.0) == b""
    assert time.monotonic() - started < READ_TIMEOUT + 1.0
    writer.close()
    assert any("did not send its request headers" in r.getMessage() for r in caplog.records)
    assert_no_traceback(caplog)


async def test_a_client_that_stalls_mid_body_gets_408_and_is_closed(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await connect(server)
    with structlog.testing.capture_logs() as logs:
        writer.write(head() + BODY[:100])
        await writer.drain()
        answer = await closed_within(reader, READ_TIMEOUT + 2.0)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"error": "the request body did not arrive in time"' in answer
    writer.close()
    assert [e["reason"] for e in logs if e["event"] == "bad_request"] == ["body-timeout"]
    assert_no_traceback(caplog)


async def test_many_stalled_clients_are_all_gone_after_the_timeout(server: Server) -> None:
    connections = [await connect(server) for _ in range(50)]
    for _, writer in connections:
        writer.write(head() + BODY[:10])
    await asyncio.gather(*(w.drain() for _, w in connections))
    results = await asyncio.gather(*(closed_within(r, READ_TIMEOUT + 3.0) for r, _ in connections))
    assert all(r.startswith(b"HTTP/1.1 408 ") for r in results)
    for _, writer in connections:
        writer.close()


async def test_a_client_that_hangs_up_mid_body_is_one_warning_line(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with structlog.testing.capture_logs() as logs:
        for _ in range(20):
            _reader, writer = await connect(server)
            writer.write(head() + BODY[:100])
            await writer.drain()
            writer.transport.abort()
        await asyncio.sleep(0.2)
    assert_no_traceback(caplog)
    gone = [e for e in logs if e["event"] == "client_disconnected"]
    assert 1 <= len(gone) <= 20
    assert {e["log_level"] for e in gone} == {"warning"}
    assert all(len(json.dumps(e)) < 1024 for e in gone)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"POST /mutate HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"POST /mutate HTTP/1.1\r\n" + b"X: " + b"y" * 20000 + b"\r\n\r\n",
    ],
)
async def test_malformed_http_gets_400_and_one_short_warning(
    server: Server, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    reader, writer = await connect(server)
    writer.write(request_bytes)
    await writer.drain()
    answer = await closed_within(reader, 3.0)
    writer.close()
    assert answer.split(b" ")[1] == b"400"
    assert_no_traceback(caplog)


async def test_an_idle_keep_alive_connection_is_closed(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(head() + BODY)
    await writer.drain()
    status = await reader.readline()
    assert status.startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    await closed_within(reader, 3.0)  # the rest of the answer, then the close
    assert 0.5 < time.monotonic() - started < 2.5
    writer.close()


async def test_a_client_that_never_completes_the_tls_handshake_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("injector.limits.TLS_HANDSHAKE_TIMEOUT_S", 0.5)
    server, _ = await start_server(tmp_path)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # plain TCP
        assert await asyncio.wait_for(reader.read(), 3.0) == b""
        writer.close()
    finally:
        await server.stop()


async def test_the_header_deadline_is_each_requests_own_on_a_keep_alive_connection(
    tmp_path: Path,
) -> None:
    """The deadline is noted lazily: a second request's trickled headers get their full
    READ_TIMEOUT from their own first byte, never the first request's stale deadline."""
    server, _ = await start_server(tmp_path, read_timeout=READ_TIMEOUT, keepalive_timeout=5.0)
    try:
        reader, writer = await connect(server)
        writer.write(head() + BODY)
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(READ_TIMEOUT * 0.75)  # the first request's deadline nears
        started = time.monotonic()
        await trickle_headers(reader, writer)
        rest = await closed_within(reader, 3.0)
        lasted = time.monotonic() - started
        writer.close()
        assert rest.count(b"HTTP/1.1 ") == 0  # the rest of the first answer, nothing more
        assert READ_TIMEOUT - 0.05 < lasted < READ_TIMEOUT + 1.0
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"POST /nothing-here HTTP/1.1", b"404"),
        (b"GET /mutate HTTP/1.1", b"405"),
        (b"PUT /validate-template HTTP/1.1", b"405"),
        (b"GET /metrics HTTP/1.1", b"404"),  # the admin port's, not the webhook port's
    ],
)
async def test_the_webhook_port_answers_only_its_two_posts(
    server: Server, request_line: bytes, status: bytes
) -> None:
    reader, writer = await connect(server)
    writer.write(request_line + b"\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    answer = (await reader.readline()).split(b" ")
    assert answer[1] == status
    headers = b""
    while (line := await reader.readline()) != b"\r\n":
        headers += line.lower()
    assert b"content-type: application/json" in headers
    if status == b"405":
        assert b"allow: post" in headers
    writer.close()
