"""CPU instructions per admission, counted by valgrind: a figure that does not move with
this machine's noise (timings here swing 20 % between runs; these move well under 1 %).

Each server runs under cachegrind and answers K never-seen pods (new uid and name
each) over one TLS keep-alive connection; the same server started and stopped with no
request is subtracted. Instructions are not cycles: Python bytecode retires fewer
instructions per cycle than json.loads' tight C loop, so the injector needs fewer
instructions than the floor to use as little CPU. Use it to compare two versions of
the injector (BENCH_INJECTOR_ARGS, or two checkouts), and the wrk figures for the ratio.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench.throughput import FIXTURE, ROOT, ensure_tool, floor_argv, injector_argv
from injector.core.responses import answer
from injector.core.template import load_template
from injector.web.tls import issue_certificates
from tests.support.processes import free_port


def _argv(kind: str, certs: Path, port: int) -> list[str]:
    if kind == "injector":
        return injector_argv(certs, port, free_port())
    return floor_argv(certs, certs / "answer.json", port, fast=kind == "floor-fast")


def count(kind: str, certs: Path, requests: int) -> int:
    """Instructions the server process retired, from start to stop, answering `requests`
    never-seen pods (after two warm-up requests on the same connection)."""
    port = free_port()
    out = certs / f"cachegrind-{kind}-{requests}.out"
    proc = subprocess.Popen(
        [
            ensure_tool("valgrind"),
            "--tool=cachegrind",
            "--cache-sim=no",
            f"--cachegrind-out-file={out}",
            *_argv(kind, certs, port),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts every run
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 600
    while True:
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=300)
            conn.connect()
            break
        except OSError:
            assert time.monotonic() < deadline, f"{kind} did not start under valgrind"
            time.sleep(0.5)
    review = json.loads(FIXTURE.read_text())
    for n in range(requests + 2):
        review["request"]["uid"] = str(uuid.uuid4())
        review["request"]["object"]["metadata"]["name"] = f"server-mesher-{n}"
        conn.request(
            "POST",
            "/mutate?timeout=5s",
            body=json.dumps(review, separators=(",", ":")),
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body[:200]
    conn.close()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    refs = [line for line in err.decode().splitlines() if "I refs:" in line or "I   refs:" in line]
    assert refs, err.decode()[-2000:]
    return int(refs[-1].split()[-1].replace(",", ""))


def run(requests: int) -> str:
    ensure_tool("valgrind")
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp)
        bundle = issue_certificates(dns_names=["localhost"], ip_addresses=["127.0.0.1"])
        (certs / "tls.crt").write_bytes(bundle.cert)
        (certs / "tls.key").write_bytes(bundle.key)
        template = load_template((ROOT / "injector" / "default_template.yaml").read_text())
        (certs / "answer.json").write_bytes(answer(FIXTURE.read_bytes(), template).body)
        per_request = {}
        for kind in ("injector", "floor", "floor-fast"):
            idle = count(kind, certs, 0)
            busy = count(kind, certs, requests)
            per_request[kind] = (busy - idle) / requests
    names = {
        "injector": "injector (never-seen pods)",
        "floor": "floor (json, asyncio)",
        "floor-fast": "floor (orjson, uvloop)",
    }
    lines = [
        f"Instructions per request (cachegrind, {requests} requests on one TLS keep-alive "
        "connection, minus start and stop):",
        "",
        "| server | instructions per request | vs floor (json) |",
        "|---|---|---|",
    ]
    for kind, value in per_request.items():
        lines.append(f"| {names[kind]} | {value:,.0f} | {value / per_request['floor']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    print(run(int(os.environ.get("BENCH_INSTRUCTION_REQUESTS", "300"))))


if __name__ == "__main__":
    main()
