"""`mesher-injector status` and `restart` (as processes, through the kubeconfig) against
workloads the controller-manager really rolls, injected by a local injector that watches
the template ConfigMap.

The injector's own Deployment, which `restart` checks for an available replica before and
between rollouts, is a stand-in here: a Deployment of that name whose pod the stand-in node
reports Ready; the injector that answers the webhook is the local process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import manifests
from tests.e2e.commands import (
    CONFIGMAP,
    SYSTEM,
    Live,
    generation,
    kubeconfig_of_a_service_account_without_rights,
    ready_deployment,
    revision_of,
    wait_rolled_out,
    watching_injector,
    workloads_made_before_opting_in,
)
from tests.e2e.controlplane import ControlPlane
from tests.e2e.injector import kubectl_ok
from tests.e2e.kube import Json, Kube
from tests.e2e.manifests import ASK
from tests.e2e.rollout import eventually, leads, pods_by_state, stale_oldest
from tests.support.helpers import DEFAULT_TEMPLATE, SHIPPED_VERSION, bump

pytestmark = pytest.mark.e2e

GOOD = DEFAULT_TEMPLATE.read_text()
EDIT = bump(GOOD, "1.6.4")
REVISION = "sidecar.mesher.io/template-revision"
WORKLOADS = ("daemonsets/agent", "statefulsets/db")
# Holds a pod in Terminating until the test lets go, as a real node holds it for its grace
# period while the app and mesher drain (the stand-in node removes it within a second).
HOLD = "e2e.mesher.io/hold"


@pytest.fixture(scope="module")
def live_module(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("watching-injector")
    with watching_injector(control_plane, workdir, GOOD) as live:
        injector_deployment = manifests.deployment("mesher-injector")
        kubectl_ok(
            control_plane, "apply", "-n", SYSTEM, "-f", "-", stdin=json.dumps(injector_deployment)
        )
        yield live


@pytest.fixture
async def live(live_module: Live, kube: Kube) -> Live:
    """The shipped template live and served, the injector's Deployment available."""
    live_module.put_template(GOOD)
    path = f"/apis/apps/v1/namespaces/{SYSTEM}/deployments/mesher-injector"
    await kube.patch(path, {"spec": {"replicas": 1}})
    await kube.wait_for(path, lambda d: d["status"].get("availableReplicas") == 1)
    return live_module


async def test_status_shows_an_injected_deployment_current_and_exits_0(
    kube: Kube, labelled_namespace: str, live: Live
) -> None:
    await ready_deployment(kube, labelled_namespace, "web")

    code, workloads = live.status(labelled_namespace)

    assert code == 0
    assert workloads["Deployment/web"]["state"] == "current"
    assert workloads["Deployment/web"]["pods"] == 2
    assert workloads["Deployment/web"]["revisions"] == {revision_of(GOOD): 2}


async def test_after_a_template_edit_status_lists_the_deployment_stale_before_current_ones(
    kube: Kube, labelled_namespace: str, live: Live
) -> None:
    await ready_deployment(kube, labelled_namespace, "web")

    live.put_template(EDIT)
    await ready_deployment(kube, labelled_namespace, "api")  # injected with the edit
    code, report = live.report("-n", labelled_namespace)

    assert code == 1
    [web, api] = report["workloads"]  # not current first, though "api" sorts before "web"
    assert (web["name"], web["state"], web["revisions"]) == ("web", "stale", {revision_of(GOOD): 2})
    assert (api["name"], api["state"], api["revisions"]) == (
        "api",
        "current",
        {revision_of(EDIT): 2},
    )
    assert web["why"] == (
        f"pods carry revision {revision_of(GOOD)}; the live template is {revision_of(EDIT)}"
    )


async def test_restart_rolls_a_stale_deployment_onto_the_live_revision(
    kube: Kube, labelled_namespace: str, live: Live
) -> None:
    """...and the rollout gauges of the injector (the only replica: it leads) follow:
    current, stale after the edit, current again after the restart."""
    ns, injector = labelled_namespace, live.injector
    await ready_deployment(kube, ns, "web")
    await eventually(lambda: leads(injector.admin), bool)
    await eventually(lambda: pods_by_state(injector.admin, ns), lambda seen: seen == {"current": 2})
    live.put_template(EDIT)
    await eventually(lambda: pods_by_state(injector.admin, ns), lambda seen: seen == {"stale": 2})
    stale_for = await eventually(lambda: stale_oldest(injector.admin), lambda s: (s or 0) > 0)
    assert stale_for is not None
    assert stale_for < 60  # counted from the edit, not from the pods' creation

    result = live.restart(labelled_namespace)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"to restart: deployment/web -n {labelled_namespace} (stale)" in result.stdout
    assert "done: every restartable workload rolled out" in result.stdout
    pods = await wait_rolled_out(kube, labelled_namespace, "web", replicas=2)
    assert [p["metadata"]["annotations"][REVISION] for p in pods["items"]] == [
        revision_of(EDIT)
    ] * 2
    code, workloads = live.status(labelled_namespace)
    assert code == 0
    assert workloads["Deployment/web"]["revisions"] == {revision_of(EDIT): 2}
    await eventually(lambda: pods_by_state(injector.admin, ns), lambda seen: seen == {"current": 2})
    deployment = await kube.get(f"/apis/apps/v1/namespaces/{labelled_namespace}/deployments/web")
    stamp = deployment["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in stamp
    managers = {m["manager"] for m in deployment["metadata"]["managedFields"]}
    assert "mesher-injector-restart" in managers


async def test_a_rollout_that_does_not_complete_in_time_stops_the_run_naming_it(
    kube: Kube, labelled_namespace: str, live: Live
) -> None:
    await ready_deployment(kube, labelled_namespace, "api")
    await ready_deployment(kube, labelled_namespace, "web")
    live.put_template(EDIT)
    before = {name: await generation(kube, labelled_namespace, name) for name in ("api", "web")}

    result = live.restart(labelled_namespace, "--timeout", "50ms")

    assert result.returncode == 1
    assert (
        f"stopped: the rollout of deployment/api -n {labelled_namespace} did not complete "
        "within 50ms" in result.stdout
    )
    assert await generation(kube, labelled_namespace, "api") == before["api"] + 1
    assert await generation(kube, labelled_namespace, "web") == before["web"]  # not touched


async def test_restart_touches_nothing_while_the_injectors_deployment_has_no_available_replica(
    kube: Kube, labelled_namespace: str, live: Live
) -> None:
    await ready_deployment(kube, labelled_namespace, "web")
    live.put_template(EDIT)
    before = await generation(kube, labelled_namespace, "web")
    injector_deployment = f"/apis/apps/v1/namespaces/{SYSTEM}/deployments/mesher-injector"
    await kube.patch(injector_deployment, {"spec": {"replicas": 0}})
    await kube.wait_for(injector_deployment, lambda d: not d["status"].get("availableReplicas"))

    result = live.restart(labelled_namespace)

    assert result.returncode == 1
    assert (
        f"the injector Deployment {SYSTEM}/mesher-injector has no available replica"
        in result.stdout
    )
    assert await generation(kube, labelled_namespace, "web") == before


async def test_a_broken_live_template_stops_restart_and_is_an_error_for_status(
    kube: Kube, labelled_namespace: str, live: Live
) -> None:
    await ready_deployment(kube, labelled_namespace, "web", replicas=1)
    live.put_template("version: [broken\n")
    before = await generation(kube, labelled_namespace, "web")

    restarted = live.restart(labelled_namespace)
    status = live.cli("status", "-n", labelled_namespace)

    assert restarted.returncode == 1
    assert f"not restarting anything: the live template in {CONFIGMAP} is invalid" in (
        restarted.stdout
    )
    assert await generation(kube, labelled_namespace, "web") == before
    assert status.returncode == 2
    assert "is invalid" in status.stderr


async def test_status_across_namespaces_says_a_deployment_whose_namespace_did_not_opt_in_is_missing(
    kube: Kube, namespace: str, live: Live
) -> None:
    await ready_deployment(kube, namespace, "outsider", replicas=1)

    code, report = live.report("-A", "-l", "app=outsider")

    assert code == 1
    [outsider] = report["workloads"]
    assert (outsider["namespace"], outsider["state"]) == (namespace, "missing")
    assert outsider["why"].startswith(
        f"namespace {namespace} is not labelled sidecar-injector=enabled"
    )
    assert outsider["restartable"] is False


async def test_status_says_a_wrong_inject_value_is_why_a_deployment_has_no_sidecar(
    kube: Kube, labelled_namespace: str, live: Live
) -> None:
    await kube.create(
        f"/apis/apps/v1/namespaces/{labelled_namespace}/deployments",
        manifests.deployment("web", annotations={"sidecar.mesher.io/inject": "true"}),
    )
    await wait_rolled_out(kube, labelled_namespace, "web", replicas=1)

    code, workloads = live.status(labelled_namespace)

    assert code == 1
    assert workloads["Deployment/web"]["why"] == (
        'sidecar.mesher.io/inject is "true": only "yes" or "y" inject (fix the annotation)'
    )
    assert workloads["Deployment/web"]["restartable"] is False


async def test_workloads_made_before_their_namespace_opted_in_are_missing_and_say_why(
    kube: Kube, namespace: str, live: Live
) -> None:
    await workloads_made_before_opting_in(kube, namespace)

    code, workloads = live.status(namespace)

    assert code == 1
    assert set(workloads) == {"DaemonSet/agent", "StatefulSet/db", "Pod/native", "Job/nightly"}
    for workload in workloads.values():
        assert set(workload) >= {"namespace", "kind", "name", "pods", "revisions", "state", "why"}
        assert workload["state"] == "missing"
        assert workload["pods"] == 1
        assert workload["revisions"] == {}
        assert "created while the injector was unreachable" in workload["why"]
    assert workloads["DaemonSet/agent"]["restartable"] is True
    assert workloads["Pod/native"]["restartable"] is False


async def test_the_status_table_lists_what_needs_attention_and_a_selector_narrows_it(
    kube: Kube, namespace: str, live: Live
) -> None:
    await workloads_made_before_opting_in(kube, namespace)

    result = live.cli("status", "-n", namespace, "-l", "app=db")

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"template {CONFIGMAP}: revision {revision_of(GOOD)}, version {SHIPPED_VERSION}"
    )
    assert lines[1].split() == ["NAMESPACE", "KIND", "NAME", "PODS", "REVISIONS", "STATE", "WHY"]
    assert lines[2].split()[:6] == [namespace, "StatefulSet", "db", "1", "-", "missing"]
    assert len(lines) == 3


async def test_restart_dry_run_prints_the_plan_and_changes_nothing(
    kube: Kube, namespace: str, live: Live
) -> None:
    await workloads_made_before_opting_in(kube, namespace)
    apps = f"/apis/apps/v1/namespaces/{namespace}"
    before = [(await kube.get(f"{apps}/{w}"))["metadata"]["generation"] for w in WORKLOADS]

    result = live.restart(namespace, "--dry-run")

    assert result.returncode == 0, result.stderr
    assert f"to restart: daemonset/agent -n {namespace} (missing)" in result.stdout
    assert f"to restart: statefulset/db -n {namespace} (missing)" in result.stdout
    assert f"manual: pod/native -n {namespace}: delete and re-create the pod" in result.stdout
    assert f"manual: job/nightly -n {namespace}: re-run the Job" in result.stdout
    assert "dry run: nothing changed" in result.stdout
    after = [(await kube.get(f"{apps}/{w}"))["metadata"]["generation"] for w in WORKLOADS]
    assert after == before


async def test_restart_rolls_missing_then_stale_workloads_and_leaves_a_pod_and_a_job_alone(
    kube: Kube, namespace: str, live: Live
) -> None:
    await workloads_made_before_opting_in(kube, namespace)
    await ready_deployment(kube, namespace, "web", replicas=1)
    live.put_template(EDIT)

    result = live.restart(namespace)

    assert result.returncode == 0, result.stdout + result.stderr
    planned = [line for line in result.stdout.splitlines() if line.startswith("to restart:")]
    assert planned == [
        f"to restart: daemonset/agent -n {namespace} (missing)",
        f"to restart: statefulset/db -n {namespace} (missing)",
        f"to restart: deployment/web -n {namespace} (stale)",
    ]
    assert "done: every restartable workload rolled out" in result.stdout

    def all_settled(pods: Json) -> bool:
        return not any("deletionTimestamp" in p["metadata"] for p in pods["items"])

    pods = await kube.wait_for(f"/api/v1/namespaces/{namespace}/pods", all_settled)
    by_app = {p["metadata"]["labels"]["app"]: p for p in pods["items"]}
    assert set(by_app) == {"agent", "db", "web", "native", "nightly"}
    for app in ("agent", "db", "web"):
        assert by_app[app]["metadata"]["annotations"][REVISION] == revision_of(EDIT)
    code, workloads = live.status(namespace)
    states = {name: w["state"] for name, w in workloads.items()}
    assert states == {
        "DaemonSet/agent": "current",
        "StatefulSet/db": "current",
        "Deployment/web": "current",
        "Pod/native": "missing",  # never deleted for you
        "Job/nightly": "missing",
    }
    assert code == 1


async def test_status_right_after_restart_does_not_count_old_pods_still_terminating(
    kube: Kube, labelled_namespace: str, live: Live
) -> None:
    held = manifests.deployment("web", replicas=2, annotations=ASK)
    held["spec"]["template"]["metadata"]["finalizers"] = [HOLD]
    await kube.create(f"/apis/apps/v1/namespaces/{labelled_namespace}/deployments", held)
    await wait_rolled_out(kube, labelled_namespace, "web", replicas=2)
    live.put_template(EDIT)
    try:
        result = live.restart(labelled_namespace)
        assert result.returncode == 0, result.stdout + result.stderr

        code, workloads = live.status(labelled_namespace)

        assert workloads["Deployment/web"]["revisions"] == {revision_of(EDIT): 2}
        assert code == 0
    finally:
        pods = await kube.get(f"/api/v1/namespaces/{labelled_namespace}/pods")
        for pod in pods["items"]:
            await kube.patch(
                f"/api/v1/namespaces/{labelled_namespace}/pods/{pod['metadata']['name']}",
                {"metadata": {"finalizers": None}},
            )


def test_forbidden_and_no_api_server_are_one_line_errors_with_exit_2(
    live: Live, tmp_path: Path
) -> None:
    nobody = kubeconfig_of_a_service_account_without_rights(live, tmp_path)

    forbidden = live.cli("status", "-A", kubeconfig=nobody)
    unreachable = live.cli("status", "-A", "--kube-api-server", "http://127.0.0.1:9")

    assert forbidden.returncode == 2
    assert forbidden.stdout == ""
    assert forbidden.stderr.startswith("mesher-injector status: error: forbidden (HTTP 403): ")
    assert "system:serviceaccount:" in forbidden.stderr
    assert len(forbidden.stderr.splitlines()) == 1
    assert unreachable.returncode == 2
    assert "cannot reach the API server" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def _compared(pod: Json) -> list[tuple[str, str, list[object], list[object], list[object]]]:
    """What inject and the webhook must agree on, beyond what the API server defaults:
    each container's name, image, command, env (name and value) and ports."""
    return [
        (
            c["name"],
            c["image"],
            c.get("command", []),
            [(e["name"], e.get("value") or "") for e in c.get("env", [])],  # "" is omitted
            [(p.get("name"), p["containerPort"]) for p in c.get("ports", [])],
        )
        for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]
    ]


async def test_inject_uses_the_live_template_and_gives_the_pod_the_webhook_gives(
    kube: Kube, labelled_namespace: str, live: Live, tmp_path: Path
) -> None:
    live.put_template(EDIT)
    asking = manifests.pod("by-hand", annotations=ASK)
    asking["metadata"]["namespace"] = labelled_namespace
    (tmp_path / "pod.json").write_text(json.dumps(asking))

    result = live.cli("inject", "-f", str(tmp_path / "pod.json"))
    admitted = await kube.create(f"/api/v1/namespaces/{labelled_namespace}/pods", asking)

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"template: configmap {CONFIGMAP} (the cluster's), revision {revision_of(EDIT)}"
    )
    injected = json.loads(result.stdout)  # JSON in, JSON out
    assert injected["metadata"]["annotations"][REVISION] == revision_of(EDIT)
    assert admitted["metadata"]["annotations"][REVISION] == revision_of(EDIT)
    assert _compared(injected) == _compared(admitted)
    assert "mesher" in [name for name, *_ in _compared(injected)]
