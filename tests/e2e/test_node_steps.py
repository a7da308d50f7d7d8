"""The stand-in node's decisions, on pods recorded from a real API server (no control plane
needed: these are not marked e2e)."""

from __future__ import annotations

import copy
import datetime
import ipaddress
from typing import Any

from tests.e2e import node
from tests.support.helpers import admission_fixture

NOW = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.UTC)
SECOND = datetime.timedelta(seconds=1)


def recorded_pod() -> dict[str, Any]:
    """A pod as the API server stored it at creation: no node, no status yet."""
    pod: dict[str, Any] = copy.deepcopy(admission_fixture("server-mesher")["request"]["object"])
    pod["metadata"].setdefault("uid", "0c2a6f1e-0000-4000-8000-000000000001")
    return pod


def started(pod: dict[str, Any], *, at: datetime.datetime = NOW) -> dict[str, Any]:
    pod["spec"]["nodeName"] = node.NODE_NAME
    pod["status"] = node.running_status(pod, ip="127.1.0.1", now=at)
    return pod


def a_job_pod(*containers: str) -> dict[str, Any]:
    pod = recorded_pod()
    pod["spec"]["restartPolicy"] = "Never"
    app = pod["spec"]["containers"][0]
    pod["spec"]["containers"] = [{**app, "name": name} for name in containers]
    return pod


def terminating(
    pod: dict[str, Any], *, grace: int, asked: datetime.datetime = NOW
) -> dict[str, Any]:
    pod["metadata"]["deletionTimestamp"] = node.timestamp(asked + grace * SECOND)
    pod["metadata"]["deletionGracePeriodSeconds"] = grace
    return pod


def test_a_new_pod_is_bound_to_the_node() -> None:
    pod = recorded_pod()

    assert node.next_step(pod, now=NOW) == node.Bind()
    assert node.binding(pod)["target"]["name"] == node.NODE_NAME


def test_a_bound_pending_pod_is_started() -> None:
    pod = recorded_pod()
    pod["spec"]["nodeName"] = node.NODE_NAME

    assert node.next_step(pod, now=NOW) == node.Start()


def test_a_pod_that_restarts_always_runs_on_forever() -> None:
    pod = started(recorded_pod())

    assert node.next_step(pod, now=NOW + 3600 * SECOND) is None


def test_a_job_pod_succeeds_once_its_app_has_run() -> None:
    pod = started(a_job_pod("app"))

    assert node.next_step(pod, now=NOW) is None
    assert node.next_step(pod, now=NOW + node.RUN_SECONDS * SECOND) == node.Complete()


def test_a_job_pod_with_a_classic_mesher_sidecar_never_completes() -> None:
    pod = started(a_job_pod("app", node.CLASSIC_SIDECAR))

    assert node.next_step(pod, now=NOW + 3600 * SECOND) is None


def test_a_job_pod_with_a_native_mesher_sidecar_completes() -> None:
    pod = a_job_pod("app")
    pod["spec"]["initContainers"] = [
        {"name": node.CLASSIC_SIDECAR, "image": "mesher:1", "restartPolicy": "Always"}
    ]
    pod = started(pod)

    assert node.next_step(pod, now=NOW + node.RUN_SECONDS * SECOND) == node.Complete()


def test_a_running_pod_reports_native_sidecars_up_and_plain_init_containers_done() -> None:
    pod = recorded_pod()
    pod["spec"]["initContainers"] = [
        {"name": "setup", "image": "busybox"},
        {"name": "mesher", "image": "mesher:1", "restartPolicy": "Always"},
    ]

    status = node.running_status(pod, ip="127.1.0.7", now=NOW)

    states = {s["name"]: next(iter(s["state"])) for s in status["initContainerStatuses"]}
    assert states == {"setup": "terminated", "mesher": "running"}
    assert {c["type"] for c in status["conditions"] if c["status"] == "True"} >= {
        "Ready",
        "ContainersReady",
    }
    assert status["podIP"] == "127.1.0.7"


def test_a_terminating_pod_goes_when_its_apps_have_stopped() -> None:
    pod = terminating(started(recorded_pod()), grace=30)

    assert node.next_step(pod, now=NOW) is None
    assert node.next_step(pod, now=NOW + node.STOP_SECONDS * SECOND) == node.Remove()


def test_a_terminating_pod_with_a_short_grace_period_goes_at_its_end() -> None:
    pod = terminating(started(recorded_pod()), grace=0)

    assert node.next_step(pod, now=NOW) == node.Remove()


def test_a_finished_pod_goes_at_once_when_deleted() -> None:
    pod = started(a_job_pod("app"))
    pod["status"] = node.succeeded_status(pod, now=NOW)
    pod = terminating(pod, grace=30)

    assert node.next_step(pod, now=NOW) == node.Remove()


def test_a_pod_gets_a_free_loopback_address_of_its_own_and_a_host_network_pod_the_nodes() -> None:
    pod = recorded_pod()
    own = node.pod_ip(pod, set())
    other = recorded_pod()
    other["metadata"]["uid"] = "0c2a6f1e-0000-4000-8000-000000000002"

    assert ipaddress.ip_address(own) in node.POD_NETWORK
    assert node.pod_ip(pod, set()) == own  # the same pod, the same address
    assert node.pod_ip(other, set()) != own  # another pod, not the address just freed
    assert node.pod_ip(pod, {own}) not in (own, node.NODE_IP)
    pod["spec"]["hostNetwork"] = True
    assert node.pod_ip(pod, set()) == node.NODE_IP


def a_probed_pod() -> dict[str, Any]:
    """The recorded pod, its app the injector, probed for readiness on a named port, as
    deploy/ runs it."""
    pod = recorded_pod()
    app = pod["spec"]["containers"][0]
    app["image"] = "registry.example/mesher-injector:0.1.0"
    app["ports"] = [{"name": "admin", "containerPort": 8080}]
    app["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": "admin"}}
    return pod


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])


def test_a_pod_with_a_readiness_probe_starts_unready_and_is_probed_at_its_address() -> None:
    pod = started(a_probed_pod())

    assert not is_ready(pod)
    assert node.next_step(pod, now=NOW) == node.Probe("http://127.1.0.1:8080/readyz", ready=False)


def test_a_probed_pod_turns_ready_and_back_as_its_probe_answers() -> None:
    pod = started(a_probed_pod())

    pod["status"] = node.readiness_status(pod, ready=True, now=NOW + 5 * SECOND)

    assert is_ready(pod)
    assert pod["status"]["startTime"] == node.timestamp(NOW)
    assert node.next_step(pod, now=NOW) == node.Probe("http://127.1.0.1:8080/readyz", ready=True)
    pod["status"] = node.readiness_status(pod, ready=False, now=NOW + 9 * SECOND)
    assert not is_ready(pod)
    assert [s["ready"] for s in pod["status"]["containerStatuses"]] == [False]


def test_a_probe_of_a_container_that_runs_nothing_here_is_not_run() -> None:
    pod = started(recorded_pod())  # its app has an httpGet readiness probe

    assert any("readinessProbe" in c for c in pod["spec"]["containers"])
    assert is_ready(pod)
    assert node.next_step(pod, now=NOW) is None


def test_a_terminating_pod_whose_container_runs_here_goes_once_its_process_has_stopped() -> None:
    pod = terminating(started(a_probed_pod()), grace=30)

    assert node.next_step(pod, now=NOW) == node.RemoveOnceStopped("http://127.1.0.1:8080/readyz")
    assert node.next_step(pod, now=NOW + 30 * SECOND) == node.Remove()  # its grace is over
