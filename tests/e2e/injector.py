"""Our injector as a local process the e2e control plane calls by URL, registered with the
webhook configurations that deploy/ installs (their clientConfig pointed at the URL)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import manifests
from tests.e2e.controlplane import ControlPlane
from tests.e2e.manifests import ASK, INJECTION_LABEL, container_names, template_configmap
from tests.e2e.processes import Processes, wait_until_ok
from tests.support.helpers import DEFAULT_TEMPLATE, ROOT
from tests.support.processes import free_port

WEBHOOKS = ROOT / "deploy" / "base" / "webhook.yaml"
REGISTRATION_LIMIT = 20.0
# A template edit the validating webhook refuses, and what kubectl then says.
UNKNOWN_VARIABLE = DEFAULT_TEMPLATE.read_text().replace("{{ values.appId }}", "{{ values.nope }}")
DENIED_TEMPLATE = 'admission webhook "template.sidecar.mesher.io" denied the request'
# What the API server says when the strict (failurePolicy Fail) entry gets no answer.
UNREACHABLE = 'failed calling webhook "sidecar.mesher.io"'


@dataclass(frozen=True, slots=True)
class LocalInjector:
    url: str
    admin: str
    ca_file: Path
    process: subprocess.Popen[bytes] | None = None  # to kill it the hard way


@contextlib.contextmanager
def running_injector(
    workdir: Path,
    *,
    template_file: Path = DEFAULT_TEMPLATE,
    configmap: str = "",
    kubeconfig: Path | None = None,
    port: int = 0,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[LocalInjector]:
    """`mesher-injector serve` on loopback with a self-signed certificate (for 127.0.0.1),
    ready once its template is loaded; stopped (SIGTERM) after. With `configmap`
    (NAMESPACE/NAME) the template comes from that ConfigMap, watched through the API
    server `kubeconfig` names; else from `template_file`. Started again with the same
    `workdir` and `port`, it serves the same URL under the same CA (--self-signed-dir
    keeps the pair): what a registration made for the first one calls. `args`: more
    `serve` flags; `env`: more environment variables."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, admin_port = port or free_port(), free_port()
    source = (
        ["--template-source=configmap", f"--configmap={configmap}"]
        if configmap
        else [f"--template-file={template_file}"]
    )
    environment = {**os.environ, **(env or {})}
    if kubeconfig:
        environment["KUBECONFIG"] = str(kubeconfig)
    processes = Processes(workdir)
    try:
        process = processes.start(
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
                *source,
                "--log-format=json",
                *args,
            ],
            cwd=ROOT,
            env=environment,
        )
        admin = f"http://127.0.0.1:{admin_port}"
        wait_until_ok(f"{admin}/readyz", processes)
        yield LocalInjector(
            url=f"https://127.0.0.1:{port}",
            admin=admin,
            ca_file=workdir / "certs" / "ca.crt",
            process=process,
        )
    finally:
        processes.stop()


async def admin_get(injector: LocalInjector, path: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{injector.admin}{path}") as answer:
        answer.raise_for_status()
        return await answer.text()


def samples(admin: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of the metric `name` (labels, value) on the admin port at `admin`, as
    Prometheus would scrape it; URLError (an OSError) when the injector does not answer."""
    with urllib.request.urlopen(f"{admin}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


async def decisions_made(injector: LocalInjector) -> Counter[tuple[str, str]]:
    """How many admission requests the injector has decided, by decision and reason."""
    decided = await asyncio.to_thread(samples, injector.admin, "mesher_injector_decisions_total")
    return Counter(
        {(labels["decision"], labels["reason"]): int(value) for labels, value in decided if value}
    )


def webhook_by_url(injector: LocalInjector, kind: str) -> dict[str, Any]:
    """deploy/'s webhook configuration of `kind` as installed (rules, namespaceSelector,
    matchConditions, failurePolicy), calling `injector` by URL instead of its Service."""
    documents = yaml.safe_load_all(WEBHOOKS.read_text())
    found = next(d for d in documents if d["kind"] == kind)
    configuration: dict[str, Any] = copy.deepcopy(found)
    ca_bundle = base64.b64encode(injector.ca_file.read_bytes()).decode()
    for webhook in configuration["webhooks"]:
        path = webhook["clientConfig"]["service"]["path"]
        webhook["clientConfig"] = {"url": f"{injector.url}{path}", "caBundle": ca_bundle}
    return configuration


def mutating_webhook_by_url(injector: LocalInjector) -> dict[str, Any]:
    return webhook_by_url(injector, "MutatingWebhookConfiguration")


def validating_webhook_by_url(injector: LocalInjector) -> dict[str, Any]:
    return webhook_by_url(injector, "ValidatingWebhookConfiguration")


def kubectl_ok(control_plane: ControlPlane, *args: str, stdin: str | None = None) -> str:
    result = control_plane.kubectl(*args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


@contextlib.contextmanager
def registered(control_plane: ControlPlane, configuration: dict[str, Any]) -> Iterator[None]:
    """A webhook configuration applied for the block, deleted after. The API server's
    webhook cache catches up a moment later, both ways: probe before relying on it."""
    kubectl_ok(control_plane, "apply", "-f", "-", stdin=json.dumps(configuration))
    try:
        yield
    finally:
        kind, name = configuration["kind"].lower(), configuration["metadata"]["name"]
        kubectl_ok(control_plane, "delete", kind, name)


def dry_run_until(
    control_plane: ControlPlane,
    namespace: str,
    probe: dict[str, Any],
    answered: Callable[[subprocess.CompletedProcess[str]], bool],
    *,
    never: str,
) -> None:
    """A webhook configuration (or the injector behind it) reaches the API server's cache
    a moment after it changes: `kubectl create --dry-run=server -o json` of `probe` in
    `namespace` until `answered` says the answer is the awaited one; AssertionError
    (`never`, after REGISTRATION_LIMIT) if it never is."""
    text = json.dumps(probe)
    deadline = time.monotonic() + REGISTRATION_LIMIT
    while time.monotonic() < deadline:
        created = control_plane.kubectl(
            "create", "--dry-run=server", "-o", "json", "-n", namespace, "-f", "-", stdin=text
        )
        if answered(created):
            return
        time.sleep(0.2)
    raise AssertionError(f"{never} within {REGISTRATION_LIMIT} s")


def wait_until_the_api_server_calls(control_plane: ControlPlane, namespace: str) -> None:
    """Dry-run a pod that asks until it comes back injected."""
    dry_run_until(
        control_plane,
        namespace,
        manifests.pod("probe", annotations=ASK),
        lambda created: (
            created.returncode == 0 and "mesher" in container_names(json.loads(created.stdout))
        ),
        never="the webhook was not called",
    )


@contextlib.contextmanager
def injecting(control_plane: ControlPlane, injector: LocalInjector) -> Iterator[None]:
    """`injector` registered as deploy/ registers the real one, and called by the API
    server (probed in a labelled namespace of its own) for the block."""
    with (
        registered(control_plane, mutating_webhook_by_url(injector)),
        probe_namespace(control_plane) as probing,
    ):
        wait_until_the_api_server_calls(control_plane, probing)
        yield


@contextlib.contextmanager
def probe_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A namespace of its own, opted in, for dry-run probes; deleted after."""
    name = f"e2e-probe-{uuid.uuid4().hex[:8]}"
    kubectl_ok(control_plane, "create", "namespace", name)
    try:
        kubectl_ok(control_plane, "label", "namespace", name, f"{INJECTION_LABEL}=enabled")
        yield name
    finally:
        kubectl_ok(control_plane, "delete", "namespace", name, "--wait=false")


def wait_until_a_pod_that_asks_is_refused(control_plane: ControlPlane) -> None:
    """After the injector stopped, its registration still there: until the API server
    refuses a pod that asks (probed in a labelled namespace of its own) for want of an
    answer."""
    with probe_namespace(control_plane) as probing:
        dry_run_until(
            control_plane,
            probing,
            manifests.pod("probe", annotations=ASK),
            lambda created: UNREACHABLE in created.stderr,
            never="pods that ask were still admitted",
        )


def wait_until_a_broken_template_is_refused(control_plane: ControlPlane, namespace: str) -> None:
    """The template's validating webhook reaches the API server's cache after a moment:
    dry-run a broken template in `namespace` until the webhook refuses it."""
    dry_run_until(
        control_plane,
        namespace,
        template_configmap(UNKNOWN_VARIABLE),
        lambda created: DENIED_TEMPLATE in created.stderr,
        never="the template webhook was not called",
    )
