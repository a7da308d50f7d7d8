"""Local processes of the e2e tests (the control plane's, the injector's): started with a
log file each, awaited over HTTP, stopped politely and then not."""

from __future__ import annotations

import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import STOP_LIMIT, stop_process

START_LIMIT = 90.0


class ProcessError(Exception):
    pass


@dataclass(slots=True)
class Started:
    name: str
    argv: list[str]
    popen: dict[str, Any]
    process: subprocess.Popen[bytes]


class Processes:
    """Started processes, each logging to NAME.log in `logs`; stopped last-started first
    (SIGTERM, then SIGKILL after STOP_LIMIT seconds)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Started] = []

    def start(self, name: str, argv: list[str], **popen: Any) -> subprocess.Popen[bytes]:
        process = self._spawn(name, argv, popen, mode="wb")
        self.started.append(Started(name, argv, popen, process))
        return process

    def restart(self, name: str, *, patience: float = STOP_LIMIT) -> None:
        """Stop `name` (SIGKILL `patience` seconds after SIGTERM), then start it again as
        it was started; its log goes on."""
        entry = next(s for s in self.started if s.name == name)
        stop_process(entry.process, patience)
        entry.process = self._spawn(name, entry.argv, entry.popen, mode="ab")

    def _spawn(
        self, name: str, argv: list[str], popen: dict[str, Any], *, mode: str
    ) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open(mode) as log:
            return subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen
            )

    def check(self) -> None:
        """Fail, with the end of its log, when a process has exited."""
        for entry in self.started:
            if entry.process.poll() is not None:
                raise ProcessError(
                    f"{entry.name} exited with {entry.process.returncode}:\n{self.tail(entry.name)}"
                )

    def tail(self, name: str, lines: int = 30) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for entry in reversed(self.started):
            stop_process(entry.process)


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
