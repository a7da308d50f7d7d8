"""`mesher-injector status` and `restart` through kubernetes-asyncio against a local API
server built from recorded list answers (tests/kube_cluster.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from injector.cli import main
from injector.template import load_template
from tests.helpers import DEFAULT_TEMPLATE, KUBE_API, SHIPPED_VERSION
from tests.kube_cluster import KubeCluster

LIVE = load_template(DEFAULT_TEMPLATE.read_text()).revision
RESTART_BODY = json.loads((KUBE_API / "rollout-restart-patch.json").read_text())


@pytest.fixture
def cluster() -> KubeCluster:
    fake = KubeCluster.recorded()
    fake.revision = LIVE
    return fake


@pytest.fixture
def api(cluster: KubeCluster) -> Iterator[str]:
    """The fake API server on loopback, in a thread of its own (the CLI runs its own loop)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    url: list[str] = []
    runner = web.AppRunner(cluster.app())

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()))
    thread.start()
    assert started.wait(10)
    yield url[0]
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def cli(api: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--kube-api-server", api])
    out, err = capsys.readouterr()
    return code, out, err


def status_json(
    api: str, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any]]:
    code, out, _ = cli(api, capsys, "status", "-o", "json", *args)
    return code, json.loads(out)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{w['kind']}/{w['name']}": w for w in report["workloads"]}


def inject_all(cluster: KubeCluster, revision: str, *, only: str = "") -> None:
    for pod in cluster.objects["pods"]:
        if only and not pod["metadata"]["name"].startswith(only):
            continue
        pod["metadata"].setdefault("annotations", {})["sidecar.mesher.io/inject"] = "yes"
        saved, cluster.revision = cluster.revision, revision
        cluster.inject(pod)
        cluster.revision = saved


def test_recorded_pods_that_asked_and_never_got_it_are_missing_with_why(
    api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = status_json(api, capsys, "-n", "chassis")
    assert code == 1
    assert report["template"] == {
        "configmap": "mesher-system/mesher-sidecar-template",
        "revision": LIVE,
        "version": SHIPPED_VERSION,
    }
    workloads = by_name(report)
    assert set(workloads) == {"DaemonSet/agent", "StatefulSet/db", "Pod/native", "Job/nightly"}
    for workload in workloads.values():
        assert set(workload) >= {"namespace", "kind", "name", "pods", "revisions", "state", "why"}
        assert workload["state"] == "missing"
        assert workload["pods"] == 1
        assert workload["revisions"] == {}
        assert "created while the injector was unreachable" in workload["why"]
    assert workloads["DaemonSet/agent"]["restartable"] is True
    assert workloads["Pod/native"]["restartable"] is False


def test_a_deployment_with_an_old_revision_is_stale_and_current_ones_exit_0(
    api: str, cluster: KubeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    inject_all(cluster, LIVE)
    inject_all(cluster, "0123456789ab", only="web-")
    code, report = status_json(api, capsys, "-n", "chassis")
    assert code == 1
    web_ = by_name(report)["Deployment/web"]  # the ReplicaSet's pods, under their Deployment
    assert web_["state"] == "stale"
    assert web_["pods"] == 2
    assert web_["revisions"] == {"0123456789ab": 2}
    assert report["workloads"][0]["name"] == "web"  # not current: first
    assert {w["state"] for w in report["workloads"][1:]} == {"current"}
    inject_all(cluster, LIVE, only="web-")
    code, report = status_json(api, capsys, "-n", "chassis")
    assert code == 0
    assert {w["state"] for w in report["workloads"]} == {"current"}


def test_why_names_an_unlabelled_namespace_and_a_wrong_annotation_value(
    api: str, cluster: KubeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    pods = cluster.objects["pods"]
    native = next(p for p in pods if p["metadata"]["name"] == "native")
    native["metadata"]["namespace"] = "plain"
    db = next(p for p in pods if p["metadata"]["name"] == "db-0")
    db["metadata"]["annotations"]["sidecar.mesher.io/inject"] = "true"
    code, report = status_json(api, capsys, "-A")
    assert code == 1
    workloads = by_name(report)
    assert workloads["Pod/native"]["namespace"] == "plain"
    assert workloads["Pod/native"]["why"].startswith(
        "namespace plain is not labelled sidecar-injector=enabled"
    )
    assert workloads["StatefulSet/db"]["why"] == (
        'sidecar.mesher.io/inject is "true": only "yes" or "y" inject (fix the annotation)'
    )
    assert workloads["StatefulSet/db"]["restartable"] is False


def test_the_table_lists_stale_and_missing_first_and_a_selector_narrows_it(
    api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(api, capsys, "status", "-n", "chassis", "-l", "app=db")
    assert code == 1
    lines = out.splitlines()
    assert (
        lines[0]
        == f"template mesher-system/mesher-sidecar-template: revision {LIVE}, version {SHIPPED_VERSION}"
    )
    assert lines[1].split() == ["NAMESPACE", "KIND", "NAME", "PODS", "REVISIONS", "STATE", "WHY"]
    assert lines[2].split()[:6] == ["chassis", "StatefulSet", "db", "1", "-", "missing"]
    assert len(lines) == 3


def test_restart_dry_run_prints_the_plan_and_changes_nothing(
    api: str, cluster: KubeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(api, capsys, "restart", "-n", "chassis", "--dry-run")
    assert code == 0
    assert "to restart: daemonset/agent -n chassis (missing)" in out
    assert "to restart: statefulset/db -n chassis (missing)" in out
    assert "manual: pod/native -n chassis: delete and re-create the pod" in out
    assert "manual: job/nightly -n chassis: re-run the Job" in out
    assert "dry run: nothing changed" in out
    assert cluster.patches == []


def test_restart_rolls_each_workload_like_kubectl_then_status_shows_them_current(
    api: str, cluster: KubeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    inject_all(cluster, "0123456789ab", only="web-")
    code, out, _ = cli(api, capsys, "restart", "-n", "chassis", "--poll-interval", "0.01")
    assert code == 0, out
    assert [p.path for p in cluster.patches] == [
        "/apis/apps/v1/namespaces/chassis/daemonsets/agent",  # missing first, then stale
        "/apis/apps/v1/namespaces/chassis/statefulsets/db",
        "/apis/apps/v1/namespaces/chassis/deployments/web",
    ]
    for patch in cluster.patches:
        assert patch.content_type == RESTART_BODY["contentType"]
        stamp = patch.body["spec"]["template"]["metadata"]["annotations"]
        assert set(stamp) == {"kubectl.kubernetes.io/restartedAt"}
        assert patch.body.keys() == RESTART_BODY["body"].keys()
        assert patch.field_manager == "mesher-injector-restart"
    assert "done: every restartable workload rolled out" in out
    code, report = status_json(api, capsys, "-n", "chassis")
    states = {name: w["state"] for name, w in by_name(report).items()}
    assert states == {
        "Deployment/web": "current",
        "DaemonSet/agent": "current",
        "StatefulSet/db": "current",
        "Pod/native": "missing",  # never deleted for you
        "Job/nightly": "missing",
    }
    assert code == 1


def test_a_rollout_that_never_completes_stops_the_run_naming_it(
    api: str, cluster: KubeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.rollouts_complete = False
    code, out, _ = cli(
        api, capsys, "restart", "-n", "chassis", "--timeout", "300ms", "--poll-interval", "0.01"
    )
    assert code == 1
    assert "stopped: the rollout of daemonset/agent -n chassis did not complete within 300ms" in out
    assert len(cluster.patches) == 1  # nothing after it


def test_an_unavailable_injector_stops_restart_before_touching_anything(
    api: str, cluster: KubeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.set_injector_available(0)
    code, out, _ = cli(api, capsys, "restart", "-n", "chassis")
    assert code == 1
    assert "the injector Deployment mesher-system/mesher-injector has no available replica" in out
    assert cluster.patches == []


def test_an_invalid_live_template_stops_restart_and_is_an_error_for_status(
    api: str, cluster: KubeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.objects["configmaps"][0]["data"]["template.yaml"] = "version: [broken\n"
    code, out, _ = cli(api, capsys, "restart", "-n", "chassis")
    assert code == 1
    assert (
        "not restarting anything: the live template in mesher-system/mesher-sidecar-template is invalid"
        in out
    )
    assert cluster.patches == []
    code, _, err = cli(api, capsys, "status", "-n", "chassis")
    assert code == 2
    assert "is invalid" in err


def test_forbidden_and_no_cluster_are_one_line_errors_with_exit_2(
    api: str, cluster: KubeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.forbidden = True
    code, out, err = cli(api, capsys, "status", "-A")
    assert code == 2
    assert out == ""
    assert err.startswith("mesher-injector status: error: forbidden (HTTP 403): ")
    assert len(err.splitlines()) == 1
    code, _, err = cli("http://127.0.0.1:9", capsys, "status", "-A")
    assert code == 2
    assert "cannot reach the API server" in err
    assert "Traceback" not in err
