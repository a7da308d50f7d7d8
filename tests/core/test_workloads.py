"""injector.core.workloads on recorded list answers alone: grouping, states, and the
restart plan made of them (injector.core.restart)."""

from __future__ import annotations

import copy

from injector.core.restart import plan_restarts
from injector.core.workloads import Snapshot, owner_of, render_table, report_json, workloads
from tests.support.helpers import recorded_items

SIDECARS = frozenset({"mesher"})
FAILS_OPEN = {"sidecar.mesher.io/inject": "yes", "sidecar.mesher.io/failurePolicy": "Ignore"}


def snapshot() -> Snapshot:
    return Snapshot(
        pods=recorded_items("pods"),
        replicasets=recorded_items("replicasets"),
        jobs=recorded_items("jobs"),
        namespaces=recorded_items("namespaces"),
    )


def test_a_replicasets_pods_belong_to_its_deployment_and_a_jobs_to_its_cronjob() -> None:
    snap = snapshot()
    rs = {("chassis", "web-5576d9f5bc"): snap.replicasets[0]}
    web = next(p for p in snap.pods if p["metadata"]["name"].startswith("web-"))
    assert owner_of(web, rs, {}) == ("Deployment", "web")
    assert owner_of(web, {}, {}) == ("ReplicaSet", "web-5576d9f5bc")  # owner not listed
    job = copy.deepcopy(snap.jobs[0])
    job["metadata"]["ownerReferences"] = [
        {"kind": "CronJob", "name": "nightly-cron", "controller": True}
    ]
    nightly = next(p for p in snap.pods if p["metadata"]["name"].startswith("nightly-"))
    assert owner_of(nightly, {}, {("chassis", "nightly"): job}) == ("CronJob", "nightly-cron")
    native = next(p for p in snap.pods if p["metadata"]["name"] == "native")
    assert owner_of(native, {}, {}) == ("Pod", "native")


def test_pods_that_never_asked_are_not_reported() -> None:
    found = workloads(snapshot(), revision="r", sidecar_names=SIDECARS)
    assert "web" not in {w.name for w in found}


def test_a_terminating_pod_is_not_counted() -> None:
    snap = snapshot()
    db = next(p for p in snap.pods if p["metadata"]["name"] == "db-0")
    db["spec"]["containers"].append({"name": "mesher", "image": "m"})  # stale...
    assert "db" in {w.name for w in workloads(snap, revision="r", sidecar_names=SIDECARS)}
    db["metadata"]["deletionTimestamp"] = "2026-12-04T17:00:00Z"  # ...and leaving
    assert "db" not in {w.name for w in workloads(snap, revision="r", sidecar_names=SIDECARS)}


def test_a_pod_with_its_sidecar_but_no_revision_counts_as_unknown_and_stale() -> None:
    snap = snapshot()
    db = next(p for p in snap.pods if p["metadata"]["name"] == "db-0")
    db["spec"]["containers"].append({"name": "mesher", "image": "m"})  # injected by hand
    found = {w.name: w for w in workloads(snap, revision="r", sidecar_names=SIDECARS)}
    assert found["db"].state == "stale"
    assert found["db"].revisions == {"unknown": 1}


def test_the_plan_restarts_workloads_lists_pods_and_jobs_and_skips_the_unfixable() -> None:
    snap = snapshot()
    next(p for p in snap.pods if p["metadata"]["name"] == "db-0")["metadata"]["annotations"][
        "sidecar.mesher.io/inject"
    ] = "true"
    plan = plan_restarts(workloads(snap, revision="r", sidecar_names=SIDECARS))
    assert [w.name for w in plan.restart] == ["agent"]
    assert sorted(w.name for w in plan.manual) == ["native", "nightly"]
    assert [w.name for w in plan.skipped] == ["db"]


def test_the_table_has_a_row_per_workload() -> None:
    text = render_table(workloads(snapshot(), revision="r", sidecar_names=SIDECARS))
    lines = text.splitlines()
    assert len(lines) == 5
    assert lines[0].split() == ["NAMESPACE", "KIND", "NAME", "PODS", "REVISIONS", "STATE", "WHY"]


def with_web_pods(snap: Snapshot, count: int, annotations: dict[str, str]) -> list[str]:
    """`count` pods of Deployment web (copies of its recorded ones) carrying `annotations`,
    in place of the recorded ones; their names."""
    web = [p for p in snap.pods if p["metadata"]["name"].startswith("web-")]
    for pod in web:
        snap.pods.remove(pod)
    names = [f"web-5576d9f5bc-{i:05d}" for i in range(count)]
    for name in names:
        pod = copy.deepcopy(web[0])
        pod["metadata"]["name"] = name
        pod["metadata"]["annotations"] = dict(annotations)
        snap.pods.append(pod)
    return names


def test_a_workload_whose_pods_failed_open_is_missing_and_names_them() -> None:
    snap = snapshot()
    names = with_web_pods(snap, 2, FAILS_OPEN)

    found = {w.name: w for w in workloads(snap, revision="r", sidecar_names=SIDECARS)}

    web = found["web"]
    assert (web.kind, web.state, web.restartable) == ("Deployment", "missing", True)
    assert web.why == (
        "2 fail-open pod(s) created while the injector was unreachable "
        "(sidecar.mesher.io/failurePolicy: Ignore), or before the namespace was labelled: "
        f"{names[0]}, {names[1]}"
    )
    report = report_json(list(found.values()), configmap="ns/cm", revision="r", version="")
    (reported,) = [w for w in report["workloads"] if w["name"] == "web"]
    assert reported["fail_open_pods"] == names
    assert all(w["fail_open_pods"] == [] for w in report["workloads"] if w["name"] != "web")


def test_the_why_names_the_first_few_fail_open_pods_and_the_report_all_of_them() -> None:
    snap = snapshot()
    names = with_web_pods(snap, 5, FAILS_OPEN)
    strict = copy.deepcopy(snap.pods[-1])  # one pod of the workload fails closed
    strict["metadata"]["name"] = "web-5576d9f5bc-strict"
    del strict["metadata"]["annotations"]["sidecar.mesher.io/failurePolicy"]
    snap.pods.append(strict)

    (web,) = [w for w in workloads(snap, revision="r", sidecar_names=SIDECARS) if w.name == "web"]

    assert web.why.endswith(
        f": {names[0]}, {names[1]}, {names[2]} and 2 more; 1 pod(s) created while the "
        "injector was unreachable, or before the namespace was labelled"
    )
    assert web.fail_open_pods == tuple(names)


def test_fail_open_pods_that_have_their_sidecar_are_not_named() -> None:
    snap = snapshot()
    with_web_pods(snap, 2, {**FAILS_OPEN, "sidecar.mesher.io/template-revision": "r"})
    for pod in snap.pods:
        if pod["metadata"]["name"].startswith("web-"):
            pod["spec"]["containers"].append({"name": "mesher", "image": "m"})

    (web,) = [w for w in workloads(snap, revision="r", sidecar_names=SIDECARS) if w.name == "web"]

    assert (web.state, web.why, web.fail_open_pods) == ("current", "", ())
