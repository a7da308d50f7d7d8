"""Local processes of the e2e tests (the control plane's, the injector's): started with a
log file each, awaited over HTTP, stopped politely and then not."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

START_LIMIT = 90.0
STOP_LIMIT = 10.0


class ProcessError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """Started processes, each logging to NAME.log in `logs`; stopped last-started first
    (SIGTERM, then SIGKILL after STOP_LIMIT seconds)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], **popen: Any) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen
            )
        self.started.append((name, process))
        return process

    def check(self) -> None:
        """Fail, with the end of its log, when a process has exited."""
        for name, process in self.started:
            if process.poll() is not None:
                raise ProcessError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for _, process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(STOP_LIMIT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_ok(
    url: str,
    processes: Processes,
    *,
    context: ssl.SSLContext | None = None,
    accept: Callable[[bytes], bool] = lambda body: True,
) -> bytes:
    """GET `url` until it answers 200 with a body `accept` takes; fail early when one of
    the processes died, and after START_LIMIT seconds."""
    deadline = time.monotonic() + START_LIMIT
    last: object = None
    while time.monotonic() < deadline:
        processes.check()
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as answer:
                body: bytes = answer.read()
                if accept(body):
                    return body
                last = body[:500]
        except (urllib.error.URLError, OSError) as error:
            last = error
        time.sleep(0.2)
    raise ProcessError(f"{url} not ready in {START_LIMIT} s; last: {last!r}")
