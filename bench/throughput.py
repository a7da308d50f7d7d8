"""Admission throughput, latency, CPU and memory: the injector against a floor and a Go
peer, with wrk.

Same machine, same run, TLS keep-alive, the recorded server-mesher AdmissionReview
(compact), in two workloads: "replicas" (every request its own uid, as the API server
sends a Deployment's pods) and "pods" (every request also a new pod name, so no two
requests are alike). Every answer is checked by the wrk script (status 200, an
AdmissionReview carrying that request's uid, a JSONPatch). The servers: the injector;
the floor (bench/floor.py, aiohttp parsing the body and answering a fixed answer); the
Go peer (bench/gopeer, net/http doing the same injection, built with `go build`); and,
with BENCH_BEFORE=<other checkouts of this repository, separated by ":">, their injectors
(each named after its folder).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from injector.web.tls import issue_certificates
from tests.support.processes import free_port, serve_argv, status_mib, stop_process

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURE = ROOT / "tests" / "fixtures" / "admission" / "server-mesher.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def ensure_tool(name: str) -> str:
    """The path of the command `name`, installed from the Debian package of that name
    when missing (apt-get, so as root)."""
    found = shutil.which(name)
    if found:
        return found
    print(f"{name} not found: installing it from the Debian archive", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", name], check=True)
    found = shutil.which(name)
    assert found, f"{name} did not install"
    return found


def ensure_wrk() -> str:
    return ensure_tool("wrk")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    return status_mib(pid, "VmRSS")


@dataclass
class Served:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    echoes: bool = True  # answers each request with its own uid (a floor's answer is fixed)

    def stop(self) -> None:
        stop_process(self.proc)


def wait_http(url: str, *, context: ssl.SSLContext | None = None, limit: float = 30.0) -> float:
    started = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as resp:
                if resp.status == 200:
                    return time.perf_counter() - started
        except (OSError, ValueError):
            pass
        if time.perf_counter() - started > limit:
            raise TimeoutError(f"{url} not ready in {limit}s")
        time.sleep(0.005)


def injector_argv(certs: Path, port: int, admin: int) -> list[str]:
    """The injector as the benchmarks run it: the embedded default template, the certs in
    `certs`, plus BENCH_INJECTOR_ARGS."""
    return serve_argv(
        port,
        admin,
        "--tls-cert",
        str(certs / "tls.crt"),
        "--tls-key",
        str(certs / "tls.key"),
        "--template-file",
        str(ROOT / "injector" / "default_template.yaml"),
        *os.environ.get("BENCH_INJECTOR_ARGS", "").split(),
    )


def floor_argv(certs: Path, answer: Path, port: int, *, fast: bool) -> list[str]:
    """A floor (bench/floor.py) answering every request with `answer`."""
    return [
        sys.executable,
        "-m",
        "bench.floor",
        "--port",
        str(port),
        "--cert",
        str(certs / "tls.crt"),
        "--key",
        str(certs / "tls.key"),
        "--answer",
        str(answer),
        *(["--fast"] if fast else []),
    ]


def start_injector(certs: Path, *, checkout: Path = ROOT) -> tuple[Served, float]:
    """The injector of `checkout` (this one, or BENCH_BEFORE's: run from its own folder,
    so `python -m injector` imports its package)."""
    port, admin = free_port(), free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        injector_argv(certs, port, admin),
        cwd=checkout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{admin}/readyz")
    name = "injector" if checkout == ROOT else f"injector ({checkout.name})"
    return Served(name, proc, port), time.perf_counter() - started


def _wait_listening(port: int, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.01)


def start_floor(certs: Path, answer: Path) -> Served:
    port = free_port()
    proc = subprocess.Popen(
        floor_argv(certs, answer, port, fast=False),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(port, "the floor")
    return Served("floor (aiohttp, json)", proc, port, echoes=False)


def build_go_peer(directory: Path) -> Path:
    """bench/gopeer built into `directory` with this machine's Go."""
    binary = directory / "gopeer"
    subprocess.run([ensure_go(), "build", "-o", str(binary), "."], cwd=HERE / "gopeer", check=True)
    return binary


def ensure_go() -> str:
    found = shutil.which("go")
    assert found, "the Go peer needs Go (https://go.dev/dl/) on PATH"
    return found


def start_go_peer(certs: Path, binary: Path) -> Served:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "-addr",
            f"127.0.0.1:{port}",
            "-cert",
            str(certs / "tls.crt"),
            "-key",
            str(certs / "tls.key"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(port, "the Go peer")
    return Served("Go peer (net/http)", proc, port)


def wrk(
    port: int, *, connections: int, seconds: float, body: Path, uid: str, echo: bool
) -> dict[str, Any]:
    threads = 1 if connections == 1 else 2
    result = subprocess.run(
        [
            ensure_wrk(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(HERE / "post.lua"),
            f"https://127.0.0.1:{port}",
        ],
        env={
            **os.environ,
            "BENCH_BODY": str(body),
            "BENCH_UID": uid,
            "BENCH_ECHO": "1" if echo else "0",
        },
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in reversed(result.stdout.splitlines()) if x.startswith("{"))
    data: dict[str, Any] = json.loads(line)
    return data


def measure(
    served: Served, *, connections: int, seconds: float, body: Path, uid: str
) -> dict[str, float]:
    """One wrk run against `served`; the injector must echo each request's uid, a floor
    answers every request with the fixed answer carrying `uid`."""
    pid = served.proc.pid
    cpu0 = cpu_seconds(pid)
    run = wrk(
        served.port,
        connections=connections,
        seconds=seconds,
        body=body,
        uid=uid,
        echo=served.echoes,
    )
    cpu = cpu_seconds(pid) - cpu0
    requests = max(1, run["requests"])
    return {
        "rps": requests / (run["duration_us"] / 1e6),
        "p50_ms": run["p50_us"] / 1000,
        "p99_ms": run["p99_us"] / 1000,
        "errors": run["errors"] + run["bad_answers"],
        "cpu_us": cpu / requests * 1e6,
        "rss_mib": rss_mib(pid),
        "requests": requests,
    }


def median_of(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def spread(rows: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in rows]
    mid = statistics.median(values)
    return f"{(max(values) - min(values)) / mid * 100:.0f}%" if mid else "-"


WORKLOADS = {
    "replicas": "same pod, a new uid and managedFields time per request",
    "pods": "a new uid, managedFields time and pod name per request",
}


def write_bodies(directory: Path, review: dict[str, Any]) -> dict[str, Path]:
    """The request body per workload, with the markers post.lua fills in per request."""
    bodies = {}
    for workload in WORKLOADS:
        marked = json.loads(json.dumps(review))
        marked["request"]["uid"] = "@UID@"
        for entry in marked["request"]["object"]["metadata"]["managedFields"]:
            entry["time"] = "@TIME@"
        if workload == "pods":
            marked["request"]["name"] = "@NAME@"
            marked["request"]["object"]["metadata"]["name"] = "@NAME@"
        bodies[workload] = directory / f"body-{workload}.json"
        bodies[workload].write_text(json.dumps(marked, separators=(",", ":")))
    return bodies


Results = dict[tuple[str, str, int], list[dict[str, float]]]  # (server, workload, conns)


def run(*, seconds: float, repeats: int, long_requests: int) -> str:
    ensure_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp)
        bundle = issue_certificates(dns_names=["localhost"], ip_addresses=["127.0.0.1"])
        (certs / "tls.crt").write_bytes(bundle.cert)
        (certs / "tls.key").write_bytes(bundle.key)
        review = json.loads(FIXTURE.read_text())
        uid = review["request"]["uid"]
        plain = certs / "body.json"
        plain.write_text(json.dumps(review, separators=(",", ":")))
        bodies = write_bodies(certs, review)

        ready = []
        for _ in range(5):
            served, took = start_injector(certs)
            ready.append(took)
            served.stop()

        # The floor answers with the injector's own answer, byte for byte.
        served, _ = start_injector(certs)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(
            f"https://127.0.0.1:{served.port}/mutate",
            data=plain.read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=context) as resp:
            (certs / "answer.json").write_bytes(resp.read())
        served.stop()

        go_peer = build_go_peer(certs)
        before = [Path(p).resolve() for p in os.environ.get("BENCH_BEFORE", "").split(":") if p]

        def start(kind: str) -> Served:
            if kind == "floor":
                return start_floor(certs, certs / "answer.json")
            if kind == "go peer":
                return start_go_peer(certs, go_peer)
            return start_injector(certs, checkout=Path(kind))[0]

        kinds = [str(ROOT), *map(str, before), "floor", "go peer"]
        results: Results = {}
        for _ in range(repeats):
            for kind in kinds:
                # The floor does the same work whatever the pod is called: one workload.
                workloads = list(WORKLOADS) if kind != "floor" else ["replicas"]
                for workload in workloads:
                    served = start(kind)
                    body = bodies[workload]
                    try:
                        measure(served, connections=32, seconds=2, body=body, uid=uid)  # warm-up
                        for connections in (1, 32):
                            row = measure(
                                served, connections=connections, seconds=seconds, body=body, uid=uid
                            )
                            results.setdefault((served.name, workload, connections), []).append(row)
                    finally:
                        served.stop()

        # Memory over a long run per workload: RSS after each quarter of `long_requests`.
        memory = {}
        for workload in WORKLOADS:
            served, _ = start_injector(certs)
            try:
                rps = median_of(results[("injector", workload, 32)], "rps")
                quarter = max(1.0, long_requests / 4 / rps * 1.1)
                body = bodies[workload]
                measure(served, connections=32, seconds=2, body=body, uid=uid)
                rss = [rss_mib(served.proc.pid)]
                total = errors = 0
                for _ in range(4):
                    row = measure(served, connections=32, seconds=quarter, body=body, uid=uid)
                    total += int(row["requests"])
                    errors += int(row["errors"])
                    rss.append(rss_mib(served.proc.pid))
            finally:
                served.stop()
            memory[workload] = (rss, total, errors)
    return report(results, ready, memory, seconds=seconds, repeats=repeats)


def report(
    results: Results,
    ready: list[float],
    memory: dict[str, tuple[list[float], int, int]],
    *,
    seconds: float,
    repeats: int,
) -> str:
    lines = [
        f"Each figure is the median of {repeats} runs of {seconds:g} s (spread = (max-min)/median "
        "of req/s). Workloads: "
        + "; ".join(f"{name}: {what}" for name, what in WORKLOADS.items())
        + ".",
        "",
        "| server | workload | conns | req/s | spread | p50 ms | p99 ms | errors "
        "| server CPU us/req | RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, workload, connections), rows in sorted(results.items()):
        lines.append(
            f"| {name} | {workload} | {connections} | {median_of(rows, 'rps'):,.0f} | "
            f"{spread(rows, 'rps')} | {median_of(rows, 'p50_ms'):.2f} | "
            f"{median_of(rows, 'p99_ms'):.2f} | {sum(int(r['errors']) for r in rows)} | "
            f"{median_of(rows, 'cpu_us'):.0f} | {median_of(rows, 'rss_mib'):.0f} |"
        )
    lines += [
        "",
        "| ratio | workload | conns | throughput | CPU per request |",
        "|---|---|---|---|---|",
    ]
    injectors = sorted({name for name, _, _ in results if name.startswith("injector")})
    peers = sorted({name for name, _, _ in results if not name.startswith("injector")})
    for injector in injectors:
        for peer in peers:
            for (name, workload, connections), rows in sorted(results.items()):
                if name != injector:
                    continue
                # The floor ran one workload: it does the same work whatever the pod.
                base = (
                    results.get((peer, workload, connections))
                    or results[(peer, "replicas", connections)]
                )
                lines.append(
                    f"| {injector} / {peer} | {workload} | {connections} | "
                    f"{median_of(rows, 'rps') / median_of(base, 'rps'):.2f}x | "
                    f"{median_of(rows, 'cpu_us') / median_of(base, 'cpu_us'):.2f}x |"
                )
    lines += [
        "",
        f"Start to ready (`/readyz` 200), 5 starts: median {statistics.median(ready) * 1000:.0f} ms, "
        f"max {max(ready) * 1000:.0f} ms.",
        "",
    ]
    for workload, (rss, total, errors) in memory.items():
        lines.append(
            f"Memory, {workload}: {total:,} admissions at 32 connections ({errors} errors): RSS "
            f"after warm-up then after each quarter: {', '.join(f'{r:.1f}' for r in rss)} MiB."
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import aiohttp

    return (
        f"{os.cpu_count()} vCPU ({cpu}), Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, {ssl.OPENSSL_VERSION}, "
        f"{subprocess.run(['wrk', '--version'], capture_output=True, text=True, check=False).stdout.split(chr(10))[0]}"
    )


def main() -> None:
    seconds = float(os.environ.get("BENCH_SECONDS", "8"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    long_requests = int(os.environ.get("BENCH_LONG", "200000"))
    print(f"Machine: {machine()}\n")
    print(run(seconds=seconds, repeats=repeats, long_requests=long_requests))


if __name__ == "__main__":
    main()
