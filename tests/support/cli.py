"""The CLI as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.helpers import ROOT


def cli(
    *args: str, stdin: str | None = None, cwd: Path = ROOT, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: a real process, output captured as text, bounded; `env`
    is added to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "injector", *args],
        input=stdin,
        env={**os.environ, **env} if env else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )
