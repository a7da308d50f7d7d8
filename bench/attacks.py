"""`python -m bench.attacks`: each hostile request of tests/support/attacks.py against a
fresh `mesher-injector serve` process, printed as a Markdown table: peak memory, the
largest answer, and a normal request's latency meanwhile."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from tests.support.attacks import ATTACKS, pipelined_unread, run, stalled_bodies, start


def main() -> None:
    print(
        "| attack | answers | largest answer | peak RSS (VmHWM) | time | normal request p50 / max meanwhile |"
    )
    print("|---|---|---|---|---|---|")
    for attack in ATTACKS:
        with tempfile.TemporaryDirectory() as tmp:
            server = start(Path(tmp))
            try:
                idle = server.peak_rss_mib()
                result = asyncio.run(run(server, attack, probe=True))
                peak = server.peak_rss_mib()
            finally:
                log = server.stop()
            statuses = ", ".join(f"{n}x {s}" for s, n in sorted(result.statuses.items()))
            probe = result.probe_ms or [0.0]
            tracebacks = log.count("Traceback")
            print(
                f"| {attack.what} | {statuses} | {result.largest_answer:,} B | "
                f"{peak:.0f} MiB (idle {idle:.0f}) | {result.seconds:.1f} s | "
                f"{statistics.median(probe):.1f} / {max(probe):.1f} ms |"
                + (f" {tracebacks} tracebacks!" if tracebacks else "")
            )
    with tempfile.TemporaryDirectory() as tmp:
        server = start(Path(tmp))
        try:
            idle = server.peak_rss_mib()
            started = time.perf_counter()
            stalled = asyncio.run(stalled_bodies(server))
            seconds = time.perf_counter() - started
            peak = server.peak_rss_mib()
        finally:
            server.stop()
        statuses = ", ".join(f"{n}x {s}" for s, n in sorted(stalled.statuses.items()))
        print(
            f"| 64 clients each stalling a 4 MiB body (less one byte) | {statuses} | - | "
            f"{peak:.0f} MiB (idle {idle:.0f}) | {seconds:.1f} s | "
            f"one normal admission: {stalled.probe_status} in {stalled.probe_ms:.1f} ms |"
        )
    for connections in (16, 64):
        with tempfile.TemporaryDirectory() as tmp:
            server = start(Path(tmp))
            try:
                idle = server.peak_rss_mib()
                started = time.perf_counter()
                peak = asyncio.run(pipelined_unread(server, connections=connections))
                seconds = time.perf_counter() - started
            finally:
                server.stop()
            print(
                f"| {connections} clients pipelining 400 KB pods, never reading an answer | "
                f"- | - | {peak:.0f} MiB (idle {idle:.0f}) | {seconds:.1f} s | - |"
            )


if __name__ == "__main__":
    main()
