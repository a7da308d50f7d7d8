"""The webhook's fast path: which bytes it answers itself (the strict shape, checked
against aiohttp's own parser), and over real TLS, that its answers, counts, log lines
and keep-alive are those of aiohttp's path, which takes every other request."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpRequestParser
from hypothesis import given, settings
from hypothesis import strategies as st

from injector.fastpath import DECLINED, INCOMPLETE, MAX_HEAD_BYTES, request_head
from injector.server import Server
from tests.conftest import connect, start_server
from tests.helpers import FIXTURES, admission_fixture

BODY = json.dumps(admission_fixture("server-mesher"), separators=(",", ":")).encode()
LIMIT = 4 * 1024 * 1024
HOST = b"Host: localhost"


# The request line and headers a real kube-apiserver sent (recorded).
RECORDED = json.loads((FIXTURES / "admission" / "_request-line-and-headers.json").read_text())


def request(
    body: bytes = BODY,
    *,
    line: bytes = b"POST " + RECORDED["path"].encode() + b" HTTP/1.1",
    headers: list[bytes] | None = None,
) -> bytes:
    """A request as the API server sends one: the recorded headers, in their order."""
    if headers is None:
        headers = [
            f"{name}: {len(body) if name == 'Content-Length' else value}".encode()
            for name, value in RECORDED["headers"].items()
        ]
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def simple_post(data: bytes, max_body: int) -> bytes | None:
    """The body the fast path answers when `data` is everything a connection sent: the
    body of exactly one complete request of the shape, else None."""
    start, length = request_head(data, max_body)
    return data[start:] if start >= 0 and length == len(data) else None


def test_the_api_servers_request_is_taken() -> None:
    assert simple_post(request(), LIMIT) == BODY
    minimal = request(headers=[HOST, b"Content-Length: %d" % len(BODY)])
    assert simple_post(minimal, LIMIT) == BODY
    assert simple_post(request(b"", headers=[HOST, b"Content-Length: 0"]), LIMIT) == b""
    no_query = request(line=b"POST /mutate HTTP/1.1")
    assert simple_post(no_query, LIMIT) == BODY
    spaced = request(
        headers=[b"hOST:x", b"content-length:   %d  " % len(BODY), b"Content-Type:application/json"]
    )
    assert simple_post(spaced, LIMIT) == BODY


LENGTH = b"Content-Length: %d" % len(BODY)


@pytest.mark.parametrize(
    "data",
    [
        request(line=b"POST /validate-template HTTP/1.1"),
        request(line=b"POST /mutatex HTTP/1.1"),
        request(line=b"POST /mutate/ HTTP/1.1"),
        request(line=b"GET /mutate HTTP/1.1"),
        request(line=b"post /mutate HTTP/1.1"),
        request(line=b"POST /mutate HTTP/1.0"),
        request(line=b"POST  /mutate HTTP/1.1"),
        request(line=b"POST /mutate?a b HTTP/1.1"),
        request(line=b"POST http://x/mutate HTTP/1.1"),
        request(headers=[HOST]),  # no Content-Length
        request(headers=[LENGTH]),  # no Host
        request(headers=[HOST, HOST, LENGTH]),
        request(headers=[b"Host:  ", LENGTH]),
        request(headers=[HOST, LENGTH, LENGTH]),
        request(headers=[HOST, b"Content-Length: +%d" % len(BODY)]),
        request(headers=[HOST, b"Content-Length: %d, %d" % (len(BODY), len(BODY))]),
        request(headers=[HOST, b"Content-Length: 0x10"]),
        request(headers=[HOST, b"Content-Length : %d" % len(BODY)]),
        request(headers=[HOST, LENGTH, b"Transfer-Encoding: chunked"]),
        request(headers=[HOST, LENGTH, b"Content-Encoding: gzip"]),
        request(headers=[HOST, LENGTH, b"Content-Encoding: identity"]),
        request(headers=[HOST, LENGTH, b"Expect: 100-continue"]),
        request(headers=[HOST, LENGTH, b"Connection: close"]),
        request(headers=[HOST, LENGTH, b"Connection: keep-alive"]),
        request(headers=[HOST, LENGTH, b"Upgrade: h2c"]),
        request(headers=[HOST, LENGTH, b"Content-Type: application/json; charset=utf-8"]),
        request(headers=[HOST, LENGTH, b"Content-Type: text/plain"]),
        request(headers=[HOST, LENGTH, b"X-Folded: a", b" b"]),  # obs-fold
        request(headers=[HOST, LENGTH, b"X-Bytes: \xc3\xa9"]),  # obs-text
        request(headers=[HOST, LENGTH, b"X-Nul: a\x00b"]),
        request(headers=[HOST, LENGTH, b"Bad Name: x"]),
        request(headers=[HOST, LENGTH, b": no name"]),
        request(headers=[HOST, LENGTH, b"X-Lf: a\nb"]),
        request()[:-1],  # the body not all there yet
        request()[:40],  # the head not all there yet
        request() + b"P",  # the next request's first byte
        request() + request(),  # pipelined
        request(b"x" * 11, headers=[HOST, b"Content-Length: 11"]) + b"\r\n",
    ],
)
def test_anything_else_is_aiohttps(data: bytes) -> None:
    assert simple_post(data, LIMIT) is None


def test_a_body_over_the_limit_or_a_huge_head_is_aiohttps() -> None:
    assert simple_post(request(), len(BODY)) == BODY
    assert simple_post(request(), len(BODY) - 1) is None
    padding = b"X-Pad: " + b"a" * 8000
    assert simple_post(request(headers=[HOST, LENGTH, padding]), LIMIT) == BODY
    huge = request(headers=[HOST, LENGTH, *[padding] * (MAX_HEAD_BYTES // 8000 + 1)])
    assert simple_post(huge, LIMIT) is None


def test_every_prefix_of_the_shape_waits_for_more_and_other_requests_are_declined_at_once() -> None:
    data = request()
    end = data.index(b"\r\n\r\n") + 4
    head = (end, len(data))
    scanned = 0
    for cut in range(len(data) + 1):
        prefix = data[:cut]
        found = request_head(prefix, LIMIT, scanned)
        assert found == (INCOMPLETE if cut < end else head), cut
        assert found == request_head(prefix, LIMIT)  # searching on from `scanned` finds the same
        if found == INCOMPLETE:
            scanned = cut  # as the guard calls it: nothing found in those bytes
    for other in (b"GET /mutate", b"POST /validate", b"PUT", b"P0ST", b"\r\n"):
        assert request_head(other, LIMIT) == DECLINED
    assert request_head(b"POST /mutate?x" + b"a" * MAX_HEAD_BYTES, LIMIT) == DECLINED


def aiohttp_parse(data: bytes) -> list[tuple[str, str, bytes]]:
    """What aiohttp's own parser (the one behind the webhook port) makes of `data`:
    (method, path, body) per complete request; raises on what it refuses. The body is
    read from the payload's buffer: the parser fills it synchronously."""
    loop = asyncio.new_event_loop()
    try:
        protocol = BaseProtocol(loop)
        parser = HttpRequestParser(protocol, loop, 2**16, max_line_size=8190, max_field_size=8190)
        messages, _, _ = parser.feed_data(data)
        parsed = []
        for message, payload in messages:
            assert payload.is_eof()  # the whole body read, no more awaited
            body = b"".join(bytes(chunk) for chunk in getattr(payload, "_buffer", ()))
            parsed.append((message.method, message.path, body))
        return parsed
    finally:
        loop.close()


_PIECES = [
    b"POST",
    b"GET",
    b" ",
    b"/mutate",
    b"?timeout=10s",
    b"/x",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b"\r\n",
    b"\n",
    b"\r",
    b": ",
    b":",
    b"Content-Length",
    b"content-length",
    b"Content-Type",
    b"application/json",
    b"Transfer-Encoding",
    b"chunked",
    b"Host",
    b"5",
    b"0",
    b"12",
    b"-1",
    b"{}",
    b"hello",
    b",",
    b" \t",
    b"\x00",
    b"\xff",
    b"X-A",
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), max_size=40),
    st.integers(min_value=0, max_value=5),
    st.binary(max_size=12),
)
def test_whatever_it_takes_aiohttp_reads_as_the_same_one_post(
    pieces: list[bytes], cut: int, body: bytes
) -> None:
    """Request smuggling's precondition is two parsers disagreeing: whenever the fast
    path takes bytes, aiohttp's parser reads them as exactly one POST /mutate with the
    same body."""
    length = b"Content-Length: %d" % len(body)
    candidates = [
        b"".join(pieces),
        request(body, headers=[length, *pieces[:cut]]),
        request(body, headers=[HOST, length, *pieces[:cut]]),
        request(body, headers=[HOST, b"".join(pieces[:cut]) + length]),
        request(body, headers=[b"".join(pieces[:cut]) + b"Host: x", length]),
        request(body, headers=[HOST, length, b"".join(pieces)]),
    ]
    for data in candidates:
        taken = simple_post(data, LIMIT)
        if taken is None:
            continue
        parsed = aiohttp_parse(data)
        assert len(parsed) == 1
        method, path, read = parsed[0]
        assert (method, path.split("?")[0], read) == ("POST", "/mutate", taken)


# --- over real TLS ------------------------------------------------------------------


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    server, _ = await start_server(tmp_path, keepalive_timeout=0.6)
    yield server
    await server.stop()


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    status = await reader.readline()
    headers = {}
    while (line := await reader.readline()) != b"\r\n":
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers[b"content-length"]))
    return status, headers, body


def fast_count(server: Server) -> int:
    return server.injector.metrics.decisions.fast


def decisions(server: Server) -> int:
    return sum(server.injector.metrics.decisions.counts.values())


async def test_a_request_in_several_reads_is_answered_on_the_fast_path_as_aiohttp_answers_it(
    server: Server,
) -> None:
    """One write (one TLS record, as wrk sends it) or several (as Go's net/http writes
    a body larger than its 4 KiB buffer) take the fast path; a request of another shape
    first (here a Connection header) puts the connection on aiohttp's path for good. Same
    status, headers (but the date) and body either way, one decision counted each."""
    reader, writer = await connect(server)
    writer.write(request())
    await writer.drain()
    fast = await read_answer(reader)
    assert (fast_count(server), decisions(server)) == (1, 1)
    data = request()
    for cut in (1, 12, 40, data.index(b"\r\n\r\n") + 2, data.index(b"\r\n\r\n") + 4, 5000):
        writer.write(data[:cut])  # the head cut anywhere, then the body
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(data[cut:])
        await writer.drain()
        assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200 ")
    assert (fast_count(server), decisions(server)) == (7, 7)
    writer.close()

    reader, writer = await connect(server)
    writer.write(request(headers=[HOST, LENGTH, b"Content-Type: application/json", b"X-A: 1"]))
    await writer.drain()
    assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200 ")
    assert (fast_count(server), decisions(server)) == (8, 8)
    writer.write(
        request(
            headers=[HOST, LENGTH, b"Content-Type: application/json", b"Connection: keep-alive"]
        )
    )
    await writer.drain()
    slow = await read_answer(reader)
    assert (fast_count(server), decisions(server)) == (8, 9)
    writer.write(request())  # this connection is aiohttp's from now on
    await writer.drain()
    assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200 ")
    assert (fast_count(server), decisions(server)) == (8, 10)
    writer.close()

    assert fast[0] == slow[0] == b"HTTP/1.1 200 OK\r\n"
    fast[1].pop(b"date")
    slow[1].pop(b"date")
    assert fast[1] == slow[1]
    assert list(fast[1]) == list(slow[1])  # the same order
    assert fast[2] == slow[2]
    assert json.loads(fast[2])["response"]["patchType"] == "JSONPatch"


async def test_a_request_arriving_across_the_keep_alive_timeout_is_answered(
    server: Server,
) -> None:
    """aiohttp's keep-alive timer (0.6 s here, armed at connection_made) knows nothing
    of a request the guard is reading: it must not close the connection under it."""
    reader, writer = await connect(server)
    data = request()
    await asyncio.sleep(0.4)
    writer.write(data[:300])
    await writer.drain()
    await asyncio.sleep(0.5)  # past the connection's first keep-alive deadline
    writer.write(data[300:])
    await writer.drain()
    assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200 ")
    writer.close()
    assert fast_count(server) == 1


async def test_a_slow_body_still_gets_408_from_aiohttp(tmp_path: Path) -> None:
    """Headers then part of the body, then nothing: kept until the header deadline,
    then aiohttp's handler waits its own read timeout and answers 408."""
    server, _ = await start_server(tmp_path, read_timeout=0.3)
    try:
        reader, writer = await connect(server)
        started = time.monotonic()
        writer.write(request()[:-100])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 3.0)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert 0.5 < time.monotonic() - started < 2.0  # both timeouts, one after the other
        assert (fast_count(server), decisions(server)) == (0, 0)
    finally:
        await server.stop()


async def test_a_head_that_never_ends_is_cut_at_the_header_deadline(tmp_path: Path) -> None:
    server, _ = await start_server(tmp_path, read_timeout=0.3)
    try:
        reader, writer = await connect(server)
        started = time.monotonic()
        writer.write(request()[:60])
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 3.0) == b""
        writer.close()
        assert 0.25 < time.monotonic() - started < 1.5
    finally:
        await server.stop()


async def test_a_client_gone_mid_request_leaves_nothing_behind(server: Server) -> None:
    for _ in range(5):
        _reader, writer = await connect(server)
        writer.write(request()[:-100])
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    reader, writer = await connect(server)  # the server still answers
    writer.write(request())
    await writer.drain()
    assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200 ")
    writer.close()
    assert (fast_count(server), decisions(server)) == (1, 1)


async def test_a_refused_body_of_the_fast_shape_is_answered_by_aiohttp(server: Server) -> None:
    """A body that gets no decision (here, not JSON) is left to aiohttp's path, which
    answers 400 and counts it once, as before."""
    reader, writer = await connect(server)
    writer.write(request(b"{not json"))
    await writer.drain()
    status, headers, body = await read_answer(reader)
    writer.close()
    assert status.startswith(b"HTTP/1.1 400 ")
    assert headers[b"content-type"] == b"application/json; charset=utf-8"
    assert json.loads(body)["error"].startswith("the body is not valid JSON")
    assert (fast_count(server), decisions(server)) == (0, 0)
    counted = server.injector.metrics.bad_requests.labels(reason="malformed-json")._value.get()
    assert counted == 1


async def test_pipelined_requests_are_answered_in_order_by_aiohttp(server: Server) -> None:
    reader, writer = await connect(server)
    first = admission_fixture("server-mesher")
    second = admission_fixture("server-mesher")
    second["request"]["uid"] = "second"
    writer.write(request(json.dumps(first).encode()) + request(json.dumps(second).encode()))
    await writer.drain()
    uids = [json.loads((await read_answer(reader))[2])["response"]["uid"] for _ in range(2)]
    writer.close()
    assert uids == [first["request"]["uid"], "second"]
    assert (fast_count(server), decisions(server)) == (0, 2)


async def test_an_idle_fast_path_connection_is_closed_after_the_keep_alive_timeout(
    server: Server,
) -> None:
    reader, writer = await connect(server)
    for _ in range(3):  # each answer re-arms the idle deadline
        writer.write(request())
        await writer.drain()
        assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(0.4)
    assert fast_count(server) == 3
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 3.0) == b""
    assert 0.05 < time.monotonic() - started < 1.5  # 0.6 s after the last answer
    writer.close()


async def test_the_fast_paths_counter_is_exposed(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(request())
    await writer.drain()
    await read_answer(reader)
    writer.close()
    from prometheus_client import generate_latest

    text = generate_latest(server.injector.metrics.registry).decode()
    assert "mesher_injector_fast_path_admissions_total 1.0" in text


async def test_a_client_that_does_not_read_its_answers_gets_them_all_in_order(
    server: Server,
) -> None:
    """Requests keep coming while the answers are not read: the answers pile up, the
    requests come to arrive together (pipelined: aiohttp's from then on) and aiohttp's
    writer waits for the client. Every answer arrives, in order, once the client reads,
    the fast path's included. (The write-paused branch is not isolated here: the
    requests arrive pipelined before the transport pauses.)"""
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: fills fast
    sock.connect(("127.0.0.1", server.port))
    reader, writer = await connect(server, sock=sock)
    review = admission_fixture("server-mesher")
    total = 600

    async def send() -> None:
        for n in range(total):
            review["request"]["uid"] = f"uid-{n}"
            writer.write(request(json.dumps(review).encode()))
            await writer.drain()
            await asyncio.sleep(0.002)  # one request per read: not pipelined

    writer.write(request())  # the connection is on the fast path
    await writer.drain()
    uids = [json.loads((await read_answer(reader))[2])["response"]["uid"]]
    sending = asyncio.create_task(send())
    await asyncio.sleep(1.0)  # nobody reads meanwhile
    for _ in range(total):
        uids.append(
            json.loads((await asyncio.wait_for(read_answer(reader), 10))[2])["response"]["uid"]
        )
    await sending
    writer.close()
    assert uids[1:] == [f"uid-{n}" for n in range(total)]
    assert decisions(server) == total + 1
    assert fast_count(server) >= 1  # here ~180, the rest arrived pipelined: aiohttp's
