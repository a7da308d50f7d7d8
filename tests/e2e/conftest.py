"""Fixtures of the e2e tests: one control plane for the whole run, a client and a fresh
namespace per test."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.e2e.controlplane import ControlPlane, find_binaries, running_control_plane
from tests.e2e.kube import ApiError, Kube
from tests.e2e.manifests import INJECTION_LABEL, INJECTOR_NAMESPACE

STARTED = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[ControlPlane]:
    bin_dir = find_binaries()
    started = time.monotonic()
    with running_control_plane(tmp_path_factory.mktemp("controlplane"), bin_dir) as plane:
        pytestconfig.stash[STARTED] = (
            f"control plane: kube-apiserver {plane.version}, ready in "
            f"{time.monotonic() - started:.1f} s (binaries {bin_dir}; logs {plane.logs})"
        )
        yield plane


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Say which Kubernetes the e2e tests ran against (fixture output is captured)."""
    if STARTED in config.stash:
        terminalreporter.write_line(config.stash[STARTED])


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[Kube]:
    async with Kube(control_plane.credentials) as client:
        yield client


@contextlib.asynccontextmanager
async def fresh_namespace(kube: Kube, labels: dict[str, str]) -> AsyncIterator[str]:
    """A new namespace, ready for pods (its default service account exists), deleted after
    (its pods go with it, in the background)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    metadata = {"name": name, "labels": labels}
    await kube.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
    )
    await kube.wait_for(f"/api/v1/namespaces/{name}/serviceaccounts/default", lambda sa: True)
    yield name
    try:
        await kube.delete(f"/api/v1/namespaces/{name}")
    except ApiError as error:
        if error.status != 404:
            raise


@pytest.fixture
async def namespace(kube: Kube) -> AsyncIterator[str]:
    async with fresh_namespace(kube, {}) as name:
        yield name


@pytest.fixture
async def labelled_namespace(kube: Kube) -> AsyncIterator[str]:
    """A namespace that opted in to injection (`sidecar-injector=enabled`)."""
    async with fresh_namespace(kube, {INJECTION_LABEL: "enabled"}) as name:
        yield name


@pytest.fixture(scope="session")
def injector_namespace(control_plane: ControlPlane) -> str:
    """deploy/'s namespace, which its webhook configurations name: made once per run and
    never deleted (a module re-creating it would race its termination)."""
    found = control_plane.kubectl("get", "namespace", INJECTOR_NAMESPACE)
    if found.returncode != 0:
        made = control_plane.kubectl("create", "namespace", INJECTOR_NAMESPACE)
        assert made.returncode == 0, made.stderr
    return INJECTOR_NAMESPACE
