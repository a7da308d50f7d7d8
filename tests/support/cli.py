"""The CLI as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.helpers import ROOT

# Commands that look for a cluster (inject's live template) find none unless a test
# names one: tests never reach past loopback, whatever the machine's ~/.kube/config says.
NO_CLUSTER = {"KUBECONFIG": str(ROOT / ".no-kubeconfig"), "KUBERNETES_SERVICE_HOST": ""}


def cli(
    *args: str, stdin: str | None = None, cwd: Path = ROOT, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: a real process, output captured as text, bounded; `env`
    is added to this process's environment, with no cluster unless it names one."""
    return subprocess.run(
        [sys.executable, "-m", "injector", *args],
        input=stdin,
        env={**os.environ, **NO_CLUSTER, **(env or {})},
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )
