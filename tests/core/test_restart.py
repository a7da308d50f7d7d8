"""injector.core.restart: the run's batches, its health gate and when it stops, played
step by step without a cluster; and what kubectl sends and judges."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import pytest

from injector.core.names import TEMPLATE_KEY
from injector.core.restart import (
    Plan,
    ReadInjector,
    ReadTemplate,
    RestartRun,
    Roll,
    Step,
    Stop,
    restart_patch,
    rollout_done,
)
from injector.core.workloads import Workload
from tests.support.helpers import (
    DEFAULT_TEMPLATE,
    KUBE_API,
    TEMPLATE_REF,
    deployment_workload,
    recorded_items,
)

LIVE = {TEMPLATE_KEY: DEFAULT_TEMPLATE.read_text()}
BROKEN = {TEMPLATE_KEY: "version: [broken\n"}


A, B, C = map(deployment_workload, "abc")


def run_of(*restart: Workload, parallel: int = 1) -> RestartRun:
    plan = Plan(restart=restart, manual=(), skipped=())
    return RestartRun.start(plan, ref=TEMPLATE_REF, parallel=parallel, rollout_timeout=90.0)


def play(
    run: RestartRun,
    *,
    available: Iterator[int] | None = None,
    data: Iterator[object] | None = None,
    late: frozenset[str] = frozenset(),
) -> list[Step]:
    """Every step the run asks for, answered as a cluster would: the injector's available
    replicas and the ConfigMap's data in turn (1 and LIVE unless given), and a rollout that
    completes unless its workload is named in `late`."""
    steps: list[Step] = []
    while True:
        step = run.next_step()
        steps.append(step)
        match step:
            case Stop():
                return steps
            case ReadInjector():
                run = run.injector_read(next(available) if available else 1)
            case ReadTemplate():
                run = run.template_read(next(data) if data else LIVE)
            case Roll(batch=batch):
                run = run.rolled_out([w.name not in late for w in batch])


def test_the_plan_is_rolled_in_batches_of_parallel_workloads_in_order() -> None:
    plan = Plan(restart=(A, B, C), manual=(), skipped=())
    assert plan.batches(1) == ((A,), (B,), (C,))
    assert plan.batches(2) == ((A, B), (C,))
    assert plan.batches(5) == ((A, B, C),)
    with pytest.raises(ValueError, match="at least 1"):
        plan.batches(0)


def test_the_gate_reads_the_injector_then_the_template_before_every_batch() -> None:
    gate = [ReadInjector(namespace="mesher-system"), ReadTemplate(ref=TEMPLATE_REF)]
    assert play(run_of(A, B, C, parallel=2)) == [
        *gate,
        Roll(batch=(A, B), timeout=90.0),
        *gate,
        Roll(batch=(C,), timeout=90.0),
        Stop(),
    ]


def test_no_available_injector_replica_stops_the_run_before_the_template_is_read() -> None:
    assert play(run_of(A), available=iter([0])) == [
        ReadInjector(namespace="mesher-system"),
        Stop(
            unhealthy="the injector Deployment mesher-system/mesher-injector has no available "
            "replica: restarted pods would be refused"
        ),
    ]


@pytest.mark.parametrize("data", [BROKEN, {}, None], ids=["invalid", "no key", "no data"])
def test_an_invalid_live_template_stops_the_run_before_any_restart(data: object) -> None:
    steps = play(run_of(A), data=iter([data]))
    assert not any(isinstance(step, Roll) for step in steps)
    stop = steps[-1]
    assert isinstance(stop, Stop)
    assert stop.late == ()
    assert stop.unhealthy.startswith(
        "the live template in mesher-system/mesher-sidecar-template is invalid (the injectors "
        "keep their last good one): "
    )


def test_a_broken_named_template_does_not_close_the_gate() -> None:
    data = {**LIVE, "canary.yaml": "version: [broken\n"}
    assert play(run_of(A), data=iter([data]))[-1] == Stop()


def test_the_gate_closing_between_batches_leaves_the_next_batches_untouched() -> None:
    steps = play(run_of(A, B), available=iter([1, 0]))
    assert [s.batch for s in steps if isinstance(s, Roll)] == [(A,)]
    last = steps[-1]
    assert isinstance(last, Stop)
    assert "has no available replica" in last.unhealthy


def test_the_first_batch_with_a_late_rollout_stops_the_run_naming_only_the_late() -> None:
    steps = play(run_of(A, B, C, parallel=2), late=frozenset({"b"}))
    assert [s.batch for s in steps if isinstance(s, Roll)] == [(A, B)]
    assert steps[-1] == Stop(late=(B,))


def test_a_run_with_nothing_to_restart_stops_at_once() -> None:
    assert play(run_of()) == [Stop()]


def test_the_restart_patch_is_what_kubectl_rollout_restart_sends() -> None:
    recorded = json.loads((KUBE_API / "rollout-restart-patch.json").read_text())
    at = datetime.datetime(2026, 11, 26, 9, 7, 9, tzinfo=datetime.UTC)
    assert restart_patch(at) == recorded["body"]


@pytest.mark.parametrize("kind", ["deployments", "statefulsets", "daemonsets"])
def test_recorded_workloads_are_rolled_out_and_a_new_generation_is_not(kind: str) -> None:
    obj: dict[str, Any] = recorded_items(kind)[0]
    name = {"deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet"}[
        kind
    ]
    assert rollout_done(name, obj)
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    assert not rollout_done(name, obj)


def test_a_deployment_with_old_replicas_left_is_not_rolled_out() -> None:
    obj = recorded_items("deployments")[0]
    obj["status"]["replicas"] = 3  # one old pod still there
    assert not rollout_done("Deployment", obj)
