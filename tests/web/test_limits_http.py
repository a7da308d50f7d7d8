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

from injector.core import limits
from injector.web.guard import BodyBudget
from injector.web.server import Server
from tests.support.helpers import admission_fixture
from tests.support.servers import connect, start_server

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
    in_flight = server.injector.metrics.registry.get_sample_value(
        "mesher_injector_request_body_bytes_in_flight"
    )
    assert in_flight == 0  # every hung-up body gave its reservation back


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
    monkeypatch.setattr("injector.core.limits.TLS_HANDSHAKE_TIMEOUT_S", 0.5)
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
    """A second request's trickled headers get their full READ_TIMEOUT from their own
    first byte, never a deadline left from the first request."""
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


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One HTTP/1.1 answer: its status line, headers (lower-case names) and body."""
    status = await reader.readline()
    headers: dict[bytes, bytes] = {}
    while (line := await reader.readline()) != b"\r\n":
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, headers, body


async def assert_open_until_keep_alive(reader: asyncio.StreamReader) -> None:
    """Idle now, the connection is closed at the keep-alive timeout of the servers these
    tests start (1.2 s), not at their read timeout (0.3 s)."""
    started = time.monotonic()
    assert await closed_within(reader, 3.0) == b""
    assert 1.0 < time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "extra_headers",
    [
        b"Content-Type: application/json\r\n",  # a second Content-Type
        b"".join(b"X-H%d: v\r\n" % n for n in range(200)),  # too many header lines
        b"X-Long: " + b"v" * 9000 + b"\r\n",  # a header line over aiohttp's limit
    ],
    ids=["duplicate-content-type", "too-many-headers", "huge-header-line"],
)
async def test_requests_aiohttp_refuses_get_its_400(server: Server, extra_headers: bytes) -> None:
    reader, writer = await connect(server)
    writer.write(head()[:-2] + extra_headers + b"\r\n" + BODY)
    await writer.drain()
    status, _, _ = await read_answer(reader)
    writer.close()
    assert status.split(b" ")[1] == b"400", status  # aiohttp's parser answers as HTTP/1.0
    assert server.injector.metrics.decided("requested") == 0


async def test_a_request_without_content_type_gets_400_naming_it(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(head().replace(b"Content-Type: application/json\r\n", b"") + BODY)
    await writer.drain()
    status, _, body = await read_answer(reader)
    writer.close()
    assert status.startswith(b"HTTP/1.1 400 ")
    assert "Content-Type must be application/json" in json.loads(body)["error"]


async def test_proxy_connection_close_closes_the_connection(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(head()[:-2] + b"Proxy-Connection: close\r\n\r\n" + BODY)
    await writer.drain()
    status, _, _ = await read_answer(reader)
    assert status.startswith(b"HTTP/1.1 200 ")
    assert await closed_within(reader, 1.0) == b""
    writer.close()


@pytest.mark.parametrize("request_line", [b"POST /nothing-here HTTP/1.1", b"GET /mutate HTTP/1.1"])
async def test_a_connection_idle_after_a_404_or_405_lives_until_the_keep_alive_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, request_line: bytes
) -> None:
    server, _ = await start_server(tmp_path, read_timeout=0.3, keepalive_timeout=1.2)
    try:
        reader, writer = await connect(server)
        writer.write(request_line + b"\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        status, _, _ = await read_answer(reader)
        assert status.split(b" ")[1] in (b"404", b"405")
        await assert_open_until_keep_alive(reader)
        writer.close()
    finally:
        await server.stop()
    assert not any("did not send its request headers" in r.getMessage() for r in caplog.records)


async def test_a_pipelining_client_that_pauses_past_the_read_timeout_gets_every_answer(
    server: Server,
) -> None:
    """3,000 requests in one go (about 9 MB of answers), answers unread for longer than
    the read timeout: every answer comes, in order. (Where the unread answers wait is
    asyncio's and the kernel's business: this does not show that writes pause.)"""
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: fills fast
    sock.connect(("127.0.0.1", server.port))
    reader, writer = await connect(server, sock=sock)
    review = admission_fixture("server-mesher")
    total = 3000
    for n in range(total):
        review["request"]["uid"] = f"uid-{n}"
        body = json.dumps(review).encode()
        writer.write(head(len(body)) + body)
    await writer.drain()
    await asyncio.sleep(READ_TIMEOUT * 3)  # nobody reads meanwhile
    uids = []
    for _ in range(total):
        _, _, answer = await asyncio.wait_for(read_answer(reader), 10)
        uids.append(json.loads(answer)["response"]["uid"])
    writer.close()
    assert uids == [f"uid-{n}" for n in range(total)]
    assert server.injector.metrics.decided("requested") == total


@pytest.mark.parametrize("after", [b"", b"\r\n"], ids=["nothing", "an-empty-line"])
async def test_a_connection_idle_after_a_body_sent_apart_from_its_head_lives_until_keep_alive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, after: bytes
) -> None:
    """The body's bytes (and an empty line after the request, which RFC 9112 says to
    ignore) are no next request: no head deadline follows them."""
    server, _ = await start_server(tmp_path, read_timeout=0.3, keepalive_timeout=1.2)
    try:
        reader, writer = await connect(server)
        writer.write(head())
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(BODY[:1000])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(BODY[1000:] + after)
        await writer.drain()
        assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200 ")
        await assert_open_until_keep_alive(reader)
        writer.close()
    finally:
        await server.stop()
    assert not any("did not send its request headers" in r.getMessage() for r in caplog.records)


async def test_a_request_has_one_read_timeout_from_its_first_byte_to_its_last(
    server: Server,
) -> None:
    """Headers sent just before the deadline, then a body that stalls: 408 at the
    deadline of the first byte, not a second read timeout after the headers."""
    reader, writer = await connect(server)
    started = time.monotonic()
    data = head()
    writer.write(data[:20])
    await writer.drain()
    await asyncio.sleep(READ_TIMEOUT * 0.75)
    writer.write(data[20:] + BODY[:100])
    await writer.drain()
    status, _, _ = await asyncio.wait_for(read_answer(reader), 3.0)
    lasted = time.monotonic() - started
    assert status.startswith(b"HTTP/1.1 408 ")
    assert READ_TIMEOUT - 0.05 < lasted < READ_TIMEOUT * 1.5
    # then closed, after aiohttp's lingering close (the rest of the body read and dropped)
    assert await closed_within(reader, limits.LINGER_S + 1.0) == b""
    writer.close()


async def test_a_body_past_the_budget_gets_429_with_retry_after_and_others_are_served(
    tmp_path: Path,
) -> None:
    """A budget of 64 KiB of bodies: a stalled 40 KiB body holds most of it, so a second
    one is refused at once (counted, logged once), while a small one still fits; once
    the first is gone, the budget is whole again."""
    server, _ = await start_server(
        tmp_path, max_body_bytes=40_000, max_body_bytes_in_flight=64 * 1024
    )
    metrics = server.injector.metrics
    try:
        holder_reader, holder = await connect(server)
        holder.write(head(40_000) + b" " * 100)  # 40 KB announced, 100 bytes sent
        await holder.drain()
        await asyncio.sleep(0.1)
        assert (
            metrics.registry.get_sample_value("mesher_injector_request_body_bytes_in_flight")
            == 40_000
        )

        with structlog.testing.capture_logs() as logs:
            reader, writer = await connect(server)
            writer.write(head(30_000) + b" " * 30_000)
            await writer.drain()
            status, headers, body = await read_answer(reader)
            writer.close()
        assert status.startswith(b"HTTP/1.1 429 ")
        assert headers[b"retry-after"] == b"1"
        assert "try again" in json.loads(body)["error"]
        assert [e["reason"] for e in logs if e["event"] == "bad_request"] == ["over-budget"]
        over = {"reason": "over-budget"}
        assert metrics.registry.get_sample_value("mesher_injector_bad_requests_total", over) == 1

        reader, writer = await connect(server)
        writer.write(head() + BODY)  # a pod of a few KiB still fits
        await writer.drain()
        assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200 ")
        writer.close()

        holder.close()
        await closed_within(holder_reader, 3.0)
        await asyncio.sleep(0.1)
        assert (
            metrics.registry.get_sample_value("mesher_injector_request_body_bytes_in_flight") == 0
        )
    finally:
        await server.stop()


def test_large_bodies_fill_only_their_share_of_the_budget_and_small_ones_the_rest() -> None:
    budget = BodyBudget(1000, large=100, large_share=0.75)
    assert budget.take(400)
    assert budget.take(350)  # large: 750 of 750
    assert not budget.take(101)  # another large one: over the large share
    assert budget.take(100)
    assert budget.take(100)  # small ones: the rest
    assert budget.take(50)
    assert not budget.take(1)  # the whole budget is taken
    budget.give_back(400)
    assert budget.take(101)
    assert budget.in_flight == 350 + 250 + 101


async def test_a_chunked_body_is_read_within_the_limit_and_refused_past_it(
    tmp_path: Path,
) -> None:
    server, _ = await start_server(
        tmp_path, max_body_bytes=len(BODY) + 10, max_body_bytes_in_flight=4 * len(BODY)
    )
    try:
        chunked = head().replace(b"Content-Length: %d" % len(BODY), b"Transfer-Encoding: chunked")

        def chunks(body: bytes) -> bytes:
            half = len(body) // 2
            parts = (body[:half], body[half:])
            return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"

        reader, writer = await connect(server)
        writer.write(chunked + chunks(BODY))
        await writer.drain()
        assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200 ")
        writer.write(chunked + chunks(BODY + b" " * 20))  # 20 bytes of spaces past the limit
        await writer.drain()
        status, _, body = await read_answer(reader)
        writer.close()
        assert status.startswith(b"HTTP/1.1 413 ")
        assert "over the limit" in json.loads(body)["error"]
    finally:
        await server.stop()
