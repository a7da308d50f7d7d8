"""What an injector's rollout watch exports, read from its /metrics (at `admin`, its admin
port's URL) as Prometheus would scrape it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from injector.core.names import DEFAULT_TEMPLATE_NAME
from tests.e2e.injector import samples

T = TypeVar("T")
GAUGE_LIMIT = 30.0  # a refresh every 2 s, a watch event within a second: ample


def leads(admin: str) -> bool:
    """The injector at `admin` leads the rollout watch (False when it does not answer)."""
    try:
        leader = samples(admin, "mesher_injector_rollout_leader")
    except OSError:
        return False
    return any(value == 1 for _, value in leader)


def pods_by_state(
    admin: str, namespace: str, template: str = DEFAULT_TEMPLATE_NAME
) -> dict[str, int]:
    """mesher_injector_pods of `namespace` and `template`, by state (zero states left out)."""
    return {
        labels["state"]: int(value)
        for labels, value in samples(admin, "mesher_injector_pods")
        if labels["namespace"] == namespace and labels["template"] == template and value
    }


def stale_oldest(admin: str, template: str = DEFAULT_TEMPLATE_NAME) -> float | None:
    found = [
        value
        for labels, value in samples(admin, "mesher_injector_stale_pod_oldest_seconds")
        if labels["template"] == template
    ]
    return found[0] if found else None


async def eventually(
    read: Callable[[], T], wanted: Callable[[T], bool], limit: float = GAUGE_LIMIT
) -> T:
    """Read until `wanted` holds; fail with the last reading after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        value = await asyncio.to_thread(read)
        if wanted(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r} after {limit} s"
        await asyncio.sleep(0.25)
