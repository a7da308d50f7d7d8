"""The rollout watch's leader election against the real API server: one of several
replicas leads (a Lease), and when it goes, another takes over: at once when it stops
cleanly (it hands the Lease over), within the lease (15 s) when it is killed."""

from __future__ import annotations

import contextlib
import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from injector.kube.lease import LEASE_NAME, LEASE_SECONDS
from tests.e2e.controlplane import ControlPlane
from tests.e2e.injector import LocalInjector, kubectl_ok, running_injector
from tests.e2e.manifests import TEMPLATE_CONFIGMAP, template_configmap
from tests.e2e.rollout import eventually, leads
from tests.support.helpers import DEFAULT_TEMPLATE

pytestmark = pytest.mark.e2e


@pytest.fixture
def system(control_plane: ControlPlane) -> Iterator[str]:
    """A namespace of its own holding the template ConfigMap (and so the Lease)."""
    name = f"e2e-lease-{uuid.uuid4().hex[:8]}"
    kubectl_ok(control_plane, "create", "namespace", name)
    template = json.dumps(template_configmap(DEFAULT_TEMPLATE.read_text()))
    kubectl_ok(control_plane, "apply", "-n", name, "-f", "-", stdin=template)
    yield name
    kubectl_ok(control_plane, "delete", "namespace", name, "--wait=false")


@contextlib.contextmanager
def replica(plane: ControlPlane, system: str, workdir: Path) -> Iterator[LocalInjector]:
    with running_injector(
        workdir, configmap=f"{system}/{TEMPLATE_CONFIGMAP}", kubeconfig=plane.kubeconfig
    ) as injector:
        yield injector


def holder(plane: ControlPlane, system: str) -> str:
    lease = json.loads(kubectl_ok(plane, "get", "lease", "-n", system, LEASE_NAME, "-o", "json"))
    return str(lease["spec"].get("holderIdentity") or "")


def the_leader(replicas: list[LocalInjector]) -> list[LocalInjector]:
    return [r for r in replicas if leads(r.admin)]


async def test_one_replica_leads_and_another_takes_over_when_it_goes(
    control_plane: ControlPlane, system: str, tmp_path: Path
) -> None:
    with (
        replica(control_plane, system, tmp_path / "a") as a,
        replica(control_plane, system, tmp_path / "b") as b,
        replica(control_plane, system, tmp_path / "c") as c,
    ):
        replicas = [a, b, c]
        (first,) = await eventually(lambda: the_leader(replicas), lambda found: len(found) == 1)
        assert holder(control_plane, system)
        # Killed: nothing hands the Lease over; another takes it once it has expired.
        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        rest = [r for r in replicas if r is not first]
        (second,) = await eventually(
            lambda: the_leader(rest), lambda found: len(found) == 1, limit=LEASE_SECONDS + 15
        )
        # Stopped cleanly: it hands the Lease over, the last one leads within a retry.
        assert second.process is not None
        second.process.send_signal(signal.SIGTERM)
        (last,) = [r for r in rest if r is not second]
        await eventually(lambda: leads(last.admin), bool, limit=10)
        assert leads(last.admin)


async def test_a_leader_whose_api_server_hangs_stops_leading_before_its_lease_expires(
    control_plane: ControlPlane, system: str, tmp_path: Path
) -> None:
    """A half-dead API server (stopped: connections open, nothing answers) must not leave
    a leader exporting while the Lease goes to a replica that can reach it."""
    with replica(control_plane, system, tmp_path / "a") as a:
        await eventually(lambda: leads(a.admin), bool)
        (api_server,) = [
            s.process for s in control_plane.processes.started if s.name == "kube-apiserver"
        ]
        api_server.send_signal(signal.SIGSTOP)
        try:
            await eventually(lambda: not leads(a.admin), bool, limit=LEASE_SECONDS)
        finally:
            api_server.send_signal(signal.SIGCONT)
        await eventually(lambda: leads(a.admin), bool)
