"""What the rollout leader holds per pod: the issue's budget is 300 bytes per tracked pod,
measured (tracemalloc) on pods' metadata as a watch delivers it."""

from __future__ import annotations

import copy
import gc
import tracemalloc
from typing import Any

from injector.core import annotations as ann
from injector.core.rollout import TrackedPod
from injector.kube.rollout import remember
from tests.support.helpers import recorded_items

BUDGET_BYTES = 300
PODS = 20_000


def metadata_of_a_meshed_pod() -> dict[str, Any]:
    """A recorded pod's metadata (with managedFields, labels, owner) as a watch sends it,
    injected by the webhook."""
    pod = next(p for p in recorded_items("pods") if p["metadata"]["name"] == "agent-t6ffz")
    metadata: dict[str, Any] = copy.deepcopy(pod["metadata"])
    metadata["annotations"][ann.STATUS] = ann.STATUS_INJECTED
    metadata["annotations"][ann.TEMPLATE_REVISION] = "069a3416a90c"
    return metadata


def test_a_tracked_pod_costs_less_than_300_bytes() -> None:
    template = metadata_of_a_meshed_pod()
    arriving = []
    for i in range(PODS):  # what the list pages or events bring: freed once read
        metadata = dict(template)
        metadata["name"] = f"web-5576d9f5bc-{i:05d}"
        metadata["namespace"] = f"team-{i % 50:02d}"
        arriving.append(metadata)
    pods: dict[str, TrackedPod] = {}
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for metadata in arriving:
            remember(pods, metadata)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(pods) == PODS
    assert held / PODS < BUDGET_BYTES, f"{held / PODS:.0f} bytes per pod"


def test_a_pod_that_stops_asking_or_starts_terminating_is_forgotten() -> None:
    pods: dict[str, TrackedPod] = {}
    metadata = metadata_of_a_meshed_pod()
    remember(pods, metadata)
    assert list(pods) == ["chassis/agent-t6ffz"]
    remember(pods, {**metadata, "deletionTimestamp": "2026-12-05T07:00:00Z"})
    assert pods == {}
