"""injector.kube.restart: the loop does what the run asks through the Cluster's calls,
and says each restart and completed rollout (a stand-in Cluster records the calls)."""

from __future__ import annotations

import asyncio
import datetime
from typing import cast

from injector.core.names import TEMPLATE_KEY
from injector.core.restart import Plan, RestartRun, Stop
from injector.core.settings import ConfigMapRef
from injector.core.workloads import Workload
from injector.kube.cluster import Cluster
from injector.kube.restart import execute
from tests.support.helpers import DEFAULT_TEMPLATE, TEMPLATE_REF, deployment_workload


class StandIn:
    """The Cluster calls execute makes; a workload named in `stuck` never rolls out."""

    def __init__(self, *, available: int = 1, stuck: frozenset[str] = frozenset()) -> None:
        self.available, self.stuck = available, stuck
        self.calls: list[str] = []

    async def injector_available(self, namespace: str) -> int:
        self.calls.append(f"injector {namespace}")
        return self.available

    async def configmap_data(self, ref: ConfigMapRef) -> object:
        self.calls.append(f"configmap {ref.namespace}/{ref.name}")
        return {TEMPLATE_KEY: DEFAULT_TEMPLATE.read_text()}

    async def restart(self, workload: Workload, now: datetime.datetime) -> None:
        assert now.tzinfo is datetime.UTC
        self.calls.append(f"restart {workload.name}")

    async def wait_rolled_out(self, workload: Workload, *, interval: float = 1.0) -> None:
        if workload.name in self.stuck:
            await asyncio.Event().wait()


def run_of(*names: str, parallel: int) -> RestartRun:
    plan = Plan(
        restart=tuple(deployment_workload(n, state="missing") for n in names), manual=(), skipped=()
    )
    return RestartRun.start(plan, ref=TEMPLATE_REF, parallel=parallel, rollout_timeout=0.05)


async def test_each_batch_is_gated_restarted_and_waited_for_until_the_first_late_one() -> None:
    cluster, said = StandIn(stuck=frozenset({"b"})), list[str]()

    stop = await execute(
        run_of("a", "b", "c", parallel=2), cast(Cluster, cluster), say=said.append, interval=0
    )

    assert stop == Stop(late=(deployment_workload("b", state="missing"),))
    assert cluster.calls == [
        "injector mesher-system",
        "configmap mesher-system/mesher-sidecar-template",
        "restart a",
        "restart b",
    ]
    assert said == [
        "restarting deployment/a -n shop",
        "restarting deployment/b -n shop",
        "rolled out deployment/a -n shop",
    ]


async def test_an_unhealthy_injector_stops_the_loop_before_any_restart() -> None:
    cluster = StandIn(available=0)

    stop = await execute(run_of("a", parallel=1), cast(Cluster, cluster), say=print, interval=0)

    assert "has no available replica" in stop.unhealthy
    assert cluster.calls == ["injector mesher-system"]


async def test_every_batch_rolled_out_ends_the_loop_with_nothing_late() -> None:
    cluster, said = StandIn(), list[str]()

    stop = await execute(
        run_of("a", "b", parallel=1), cast(Cluster, cluster), say=said.append, interval=0
    )

    assert stop == Stop()
    assert [c for c in cluster.calls if c.startswith("restart")] == ["restart a", "restart b"]
    assert said[-1] == "rolled out deployment/b -n shop"
