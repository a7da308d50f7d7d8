"""Our injector as a local process the e2e control plane calls by URL, registered with the
MutatingWebhookConfiguration that deploy/ installs (its clientConfig pointed at the URL)."""

from __future__ import annotations

import base64
import contextlib
import copy
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.processes import Processes, free_port, wait_until_ok
from tests.helpers import DEFAULT_TEMPLATE, ROOT

WEBHOOKS = ROOT / "deploy" / "base" / "webhook.yaml"


@dataclass(frozen=True, slots=True)
class LocalInjector:
    url: str
    admin: str
    ca_file: Path


@contextlib.contextmanager
def running_injector(
    workdir: Path, *, template_file: Path = DEFAULT_TEMPLATE
) -> Iterator[LocalInjector]:
    """`mesher-injector serve` on loopback with a self-signed certificate (for 127.0.0.1),
    ready once its template is loaded; stopped (SIGTERM) after."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, admin_port = free_port(), free_port()
    processes = Processes(workdir)
    try:
        processes.start(
            "injector",
            [
                sys.executable,
                "-m",
                "injector",
                "serve",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--admin-port={admin_port}",
                "--self-signed",
                f"--self-signed-dir={workdir / 'certs'}",
                f"--template-file={template_file}",
                "--log-format=json",
            ],
            cwd=ROOT,
        )
        admin = f"http://127.0.0.1:{admin_port}"
        wait_until_ok(f"{admin}/readyz", processes)
        yield LocalInjector(
            url=f"https://127.0.0.1:{port}", admin=admin, ca_file=workdir / "certs" / "ca.crt"
        )
    finally:
        processes.stop()


def mutating_webhook_by_url(injector: LocalInjector) -> dict[str, Any]:
    """deploy/'s MutatingWebhookConfiguration as installed (rules, namespaceSelector,
    matchConditions, failurePolicy), calling `injector` by URL instead of its Service."""
    documents = yaml.safe_load_all(WEBHOOKS.read_text())
    found = next(d for d in documents if d["kind"] == "MutatingWebhookConfiguration")
    configuration: dict[str, Any] = copy.deepcopy(found)
    ca_bundle = base64.b64encode(injector.ca_file.read_bytes()).decode()
    for webhook in configuration["webhooks"]:
        path = webhook["clientConfig"]["service"]["path"]
        webhook["clientConfig"] = {"url": f"{injector.url}{path}", "caBundle": ca_bundle}
    return configuration
