"""Local processes of the tests and the benchmarks: a free loopback port, `serve`'s
command line, a process's memory from /proc, and stopping politely and then not."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

STOP_LIMIT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_argv(port: int, admin_port: int, *extra: str) -> list[str]:
    """`mesher-injector serve` on loopback, as the benchmarks and the memory tests start it."""
    return [
        sys.executable,
        "-m",
        "injector",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--admin-port",
        str(admin_port),
        *extra,
    ]


def status_mib(pid: int, key: str) -> float:
    """A memory figure of /proc/PID/status (VmRSS, VmHWM...), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop_process(process: subprocess.Popen[bytes], patience: float = STOP_LIMIT) -> None:
    """SIGTERM, then SIGKILL after `patience` seconds."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(patience)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
