"""Executes a `restart` run (injector.core.restart.RestartRun): does each step it asks
for through the Cluster and reports what it saw back, until the run stops. The batches,
the health gate and when to stop are the run's, not this loop's."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import assert_never

from injector.core.restart import ReadInjector, ReadTemplate, RestartRun, Roll, Stop
from injector.core.workloads import Workload
from injector.kube.cluster import Cluster


async def execute(
    run: RestartRun, cluster: Cluster, *, say: Callable[[str], None], interval: float = 1.0
) -> Stop:
    """Until `run` stops; `say` tells each restart and completed rollout, `interval` is
    the seconds between two reads of a rolling workload."""
    while True:
        match run.next_step():
            case Stop() as stop:
                return stop
            case ReadInjector(namespace=namespace):
                run = run.injector_read(await cluster.injector_available(namespace))
            case ReadTemplate(ref=ref):
                run = run.template_read(await cluster.configmap_data(ref))
            case Roll() as roll:
                run = run.rolled_out(await _roll(roll, cluster, say=say, interval=interval))
            case unknown:
                assert_never(unknown)


async def _roll(
    roll: Roll, cluster: Cluster, *, say: Callable[[str], None], interval: float
) -> list[bool]:
    """Restart the batch, then wait for every rollout at once: whether each completed
    within `roll.timeout`."""
    for workload in roll.batch:
        say(f"restarting {workload.kubectl_name}")
        await cluster.restart(workload, datetime.datetime.now(datetime.UTC))

    async def rolled_out(workload: Workload) -> bool:
        try:
            async with asyncio.timeout(roll.timeout):
                await cluster.wait_rolled_out(workload, interval=interval)
        except TimeoutError:
            return False
        return True

    done = await asyncio.gather(*(rolled_out(w) for w in roll.batch))
    for workload, ok in zip(roll.batch, done, strict=True):
        if ok:
            say(f"rolled out {workload.kubectl_name}")
    return done
