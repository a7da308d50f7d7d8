"""Hostile requests against a real `mesher-injector serve` process: peak memory (VmHWM
of the server process), the largest answer, and a normal request's latency meanwhile.

tests/web/test_memory.py runs them all against one server and asserts the bounds;
`python -m bench.attacks` runs each against a fresh server and prints Markdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.helpers import DEFAULT_TEMPLATE, FIXTURES, ROOT
from tests.support.processes import serve_argv, status_mib, stop_process

FIXTURE = FIXTURES / "admission" / "server-mesher.json"
MiB = 1024 * 1024
HEADERS = {"Content-Type": "application/json"}


def base_review() -> dict[str, Any]:
    review: dict[str, Any] = json.loads(FIXTURE.read_text())
    return review


def with_annotation(key: str, value: str, uid: str = "attack") -> bytes:
    review = base_review()
    review["request"]["uid"] = uid
    review["request"]["object"]["metadata"]["annotations"][key] = value
    return json.dumps(review).encode()


def commas_in_service_ports(size: int) -> bytes:
    return with_annotation("sidecar.mesher.io/servicePorts", "," * size)


def typo_ports() -> bytes:
    ports = ",".join(f"grps:{n}" for n in range(1, 131_073))  # 131k grps items (~1.3 MiB)
    return with_annotation("sidecar.mesher.io/servicePorts", ports)


def many_containers(count: int) -> bytes:
    review = base_review()
    review["request"]["object"]["spec"]["containers"] = [
        {"name": f"c{n}", "image": "x"} for n in range(count)
    ]
    return json.dumps(review).encode()


def big_label(size: int, n: int) -> bytes:
    review = base_review()
    review["request"]["uid"] = f"label-{n}"
    review["request"]["object"]["metadata"]["labels"]["app"] = f"{n}-" + "a" * size
    return json.dumps(review).encode()


def big_pod(size: int, n: int) -> bytes:
    """An injectable pod carrying `size` bytes of an unrelated annotation."""
    return with_annotation("padding", "x" * size, uid=f"big-{n}")


def gzip_bomb(inflated: int) -> bytes:
    return gzip.compress(b" " * inflated, compresslevel=9)


@dataclass(frozen=True)
class Attack:
    name: str
    what: str
    requests: Callable[[], Iterator[tuple[bytes, dict[str, str]]]]
    concurrency: int = 1


def _repeat(
    body: Callable[[], bytes], times: int, headers: dict[str, str] = HEADERS
) -> Callable[[], Iterator[tuple[bytes, dict[str, str]]]]:
    def requests() -> Iterator[tuple[bytes, dict[str, str]]]:
        one = body()
        for _ in range(times):
            yield one, headers

    return requests


ATTACKS = [
    Attack(
        "commas-3mib",
        "servicePorts of 3 MiB of commas, 5 times",
        _repeat(lambda: commas_in_service_ports(3 * MiB), 5),
    ),
    Attack(
        "commas-1.4mib",
        "servicePorts of 1.4 MiB of commas, 5 times",
        _repeat(lambda: commas_in_service_ports(1_468_006), 5),
    ),
    Attack("grps-typos", "servicePorts of 131k `grps:N` items, 5 times", _repeat(typo_ports, 5)),
    Attack(
        "containers-30k",
        "a pod with 30,000 containers, 5 times",
        _repeat(lambda: many_containers(30_000), 5),
    ),
    Attack(
        "containers-100k",
        "a pod with 100,000 containers (about 3 MiB), 3 times",
        _repeat(lambda: many_containers(100_000), 3),
    ),
    Attack(
        "labels-1mib",
        "100 pods with distinct 1 MiB `app` labels",
        lambda: ((big_label(MiB, n), HEADERS) for n in range(100)),
    ),
    Attack(
        "gzip-bombs",
        "30 gzip bodies of 9 KiB inflating to 9 MiB",
        _repeat(lambda: gzip_bomb(9 * MiB), 30, {**HEADERS, "Content-Encoding": "gzip"}),
    ),
    Attack(
        "big-pods-flood",
        "4 clients sending 2 MiB injectable pods, 200 in all",
        lambda: ((big_pod(2 * MiB, n), HEADERS) for n in range(200)),
        concurrency=4,
    ),
]


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    ca_file: Path
    log: Path

    def peak_rss_mib(self) -> float:
        return status_mib(self.proc.pid, "VmHWM")

    def stop(self) -> str:
        stop_process(self.proc)
        return self.log.read_text()


def start(workdir: Path, *extra: str) -> ServerProcess:
    """`mesher-injector serve` on loopback, ephemeral ports, the default template."""
    log = workdir / "server.log"
    certs = workdir / "certs"
    proc = subprocess.Popen(
        serve_argv(
            0,
            0,
            "--self-signed",
            "--self-signed-dir",
            str(certs),
            "--template-file",
            str(DEFAULT_TEMPLATE),
            *extra,
        ),
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if '"event":"serving"' in line:
                event = json.loads(line)
                return ServerProcess(
                    proc, event["port"], event["admin_port"], certs / "ca.crt", log
                )
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"serve did not start: {log.read_text()}")


@dataclass
class Result:
    statuses: dict[int, int] = field(default_factory=dict)
    largest_answer: int = 0
    seconds: float = 0.0
    probe_ms: list[float] = field(default_factory=list)


async def run(server: ServerProcess, attack: Attack, *, probe: bool = False) -> Result:
    """Send the attack; with `probe`, time a normal admission every 50 ms meanwhile."""
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    url = f"https://localhost:{server.port}/mutate"
    result = Result()
    normal = FIXTURE.read_bytes()
    requests = iter(attack.requests())
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx, limit=attack.concurrency + 2),
        timeout=timeout,
        auto_decompress=False,
    ) as session:

        async def client() -> None:
            for body, headers in requests:
                async with session.post(url, data=body, headers=headers) as resp:
                    answer = await resp.read()
                result.statuses[resp.status] = result.statuses.get(resp.status, 0) + 1
                result.largest_answer = max(result.largest_answer, len(answer))

        async def prober(done: asyncio.Event) -> None:
            while not done.is_set():
                t = time.perf_counter()
                async with session.post(url, data=normal, headers=HEADERS) as resp:
                    assert resp.status == 200
                    await resp.read()
                result.probe_ms.append((time.perf_counter() - t) * 1000)
                await asyncio.sleep(0.05)

        if probe:  # one request first, so the probes time admissions, not a TLS handshake
            async with session.post(url, data=normal, headers=HEADERS) as resp:
                await resp.read()
        done = asyncio.Event()
        probing = asyncio.create_task(prober(done)) if probe else None
        await asyncio.gather(*(client() for _ in range(attack.concurrency)))
        done.set()
        if probing is not None:
            await probing
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class StallResult:
    statuses: dict[int, int] = field(default_factory=dict)  # what each stalled client got
    probe_status: int = 0  # a normal admission's, on a new connection during the stall
    probe_ms: float = 0.0
    peak_rss_mib: float = 0.0  # the server's, while the bodies were held


async def stalled_bodies(
    server: ServerProcess, *, connections: int = 64, body: int = 4 * MiB
) -> StallResult:
    """`connections` clients each send a request head announcing `body` bytes and all
    but the last byte of it, then stall; meanwhile a normal admission is sent on a new
    connection. Each client's answer: 429 at once (over the server's body budget), or
    408 once the server's read timeout is up."""
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    head = (
        "POST /mutate?timeout=5s HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {body}\r\n\r\n"
    ).encode()
    almost = b"x" * (body - 1)
    result = StallResult()

    async def stall() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=ctx, server_hostname="localhost"
        )
        try:
            writer.write(head + almost)
            # Refused at once, the server closes without reading the body.
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            status_line = await reader.readline()
        except ConnectionError:
            status_line = b""
        finally:
            writer.close()
        status = int(status_line.split(b" ")[1]) if status_line.count(b" ") >= 2 else 0
        result.statuses[status] = result.statuses.get(status, 0) + 1

    stalls = [asyncio.create_task(stall()) for _ in range(connections)]
    await asyncio.sleep(1.0)  # every client has sent what it will send
    url = f"https://localhost:{server.port}/mutate"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        started = time.perf_counter()
        async with session.post(url, data=FIXTURE.read_bytes(), headers=HEADERS) as resp:
            await resp.read()
            result.probe_status = resp.status
        result.probe_ms = (time.perf_counter() - started) * 1000
    result.peak_rss_mib = server.peak_rss_mib()
    await asyncio.gather(*stalls)
    return result


async def pipelined_unread(
    server: ServerProcess, *, connections: int = 16, body: int = 400_000
) -> float:
    """`connections` clients each pipeline injectable pods padded to `body` bytes and never
    read an answer, sending until the server stops reading (3 s without progress). The
    server's peak RSS (MiB) meanwhile."""
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    review = FIXTURE.read_bytes()
    padded = review + b" " * max(0, body - len(review))
    head = (
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(padded)}\r\n\r\n"
    ).encode()

    async def client() -> asyncio.StreamWriter:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing anyway
        sock.connect(("127.0.0.1", server.port))
        _, writer = await asyncio.open_connection(
            sock=sock, ssl=ctx, server_hostname="localhost", limit=4096
        )
        with contextlib.suppress(TimeoutError, ConnectionError):
            while True:
                writer.write(head + padded)
                await asyncio.wait_for(writer.drain(), 3)
        return writer

    writers = await asyncio.gather(*(client() for _ in range(connections)))
    peak = server.peak_rss_mib()
    for writer in writers:
        writer.close()
    return peak
