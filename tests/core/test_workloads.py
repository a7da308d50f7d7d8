"""injector.core.workloads on recorded list answers alone: grouping, states, and the
restart plan made of them (injector.core.restart)."""

from __future__ import annotations

import copy

from injector.core.restart import plan_restarts
from injector.core.workloads import Snapshot, owner_of, render_table, workloads
from tests.support.helpers import recorded_items

SIDECARS = frozenset({"mesher"})


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
