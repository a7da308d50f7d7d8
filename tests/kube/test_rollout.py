"""The rollout leader: what it holds per pod (the budget is 300 bytes per tracked pod,
measured with tracemalloc on pods' metadata as a watch delivers it), and its Lease calls
against an API server that never answers (the election itself runs against a real one:
tests/e2e/test_rollout_leader.py)."""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.leaderelection.leaderelectionrecord import LeaderElectionRecord

from injector.core import annotations as ann
from injector.core.rollout import TrackedPod
from injector.kube.lease import (
    LEASE_CALL_S,
    LEASE_NAME,
    LEASE_SECONDS,
    RENEW_DEADLINE_S,
    BoundedLeaseLock,
    LeaseDeadlinePassed,
)
from injector.kube.rollout import PodMetadata, RolloutWatch, remember
from injector.obs.metrics import Metrics
from tests.support.helpers import recorded_items
from tests.support.kube_api import api_client_of
from tests.support.processes import free_port

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
        template["name"] = f"web-5576d9f5bc-{i:05d}"
        template["namespace"] = f"team-{i % 50:02d}"
        arriving.append(json.loads(json.dumps(template)))  # its own strings, as parsed
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


@pytest.fixture
async def silent_api() -> AsyncIterator[client.ApiClient]:
    """An API server that accepts every request and never answers (a half-dead one)."""
    answered = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await answered.wait()
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", never)
    async with api_client_of(app) as api:
        try:
            yield api
        finally:
            answered.set()


async def test_a_leader_gives_up_a_lease_call_by_its_renew_deadline_then_stops_leading(
    silent_api: client.ApiClient,
) -> None:
    """The library tries a renewal whole before it looks at its deadline, then sleeps
    RETRY_S: a leader's call must end by the deadline, and a leader whose next try would
    come too late must stop, before its Lease (15 s) can go to another replica."""
    now = [1000.0]
    lock = BoundedLeaseLock(LEASE_NAME, "mesher-system", "me", silent_api, clock=lambda: now[0])
    lock.renewed_at = now[0] - RENEW_DEADLINE_S + 0.3  # a leader with 0.3 s left
    started = time.monotonic()
    with pytest.raises(LeaseDeadlinePassed):
        await lock.get(LEASE_NAME, "mesher-system")
    assert time.monotonic() - started < LEASE_CALL_S - 1  # the deadline, not a whole call

    now[0] += 1  # past it: no call at all
    with pytest.raises(LeaseDeadlinePassed):
        await lock.update(LEASE_NAME, "mesher-system", None)


async def test_a_refused_connection_is_a_failed_try_not_a_lost_round() -> None:
    closed = client.Configuration(host=f"http://127.0.0.1:{free_port()}")
    async with client.ApiClient(closed) as api:
        lock = BoundedLeaseLock(LEASE_NAME, "mesher-system", "me", api)
        found, error = await lock.get(LEASE_NAME, "mesher-system")
        assert (found, getattr(error, "status", None)) == (False, 503)
        assert json.loads(error.body) == {"code": 503}  # what the library reads
        lock.renewed_at = lock.clock()  # a leader, just renewed: it tries again
        lock.lease_reference = client.V1Lease(spec=client.V1LeaseSpec())  # as get leaves it
        when = "2026-12-05 07:00:00.000001"
        record = LeaderElectionRecord("me", str(LEASE_SECONDS), when, when)
        assert await lock.update(LEASE_NAME, "mesher-system", record) is False


def pod_metadata(name: str, **extra: Any) -> dict[str, Any]:
    annotations = {ann.INJECT: "yes", ann.STATUS: ann.STATUS_INJECTED}
    return {"name": name, "namespace": "shop", "annotations": annotations, **extra}


async def test_pods_are_listed_page_by_page_then_watched_as_metadata() -> None:
    """Against a server that answers as the API server does: two pages (a continue token),
    then a watch with an added pod, one that starts terminating, one deleted, a bookmark."""
    seen: list[tuple[str, str]] = []

    async def pods(request: web.Request) -> web.StreamResponse:
        seen.append((request.query.get("watch", "list"), request.headers["Accept"]))
        if request.query.get("watch") != "true":
            first = "continue" not in request.query
            names = ["a", "b"] if first else ["c"]
            listing = {
                "kind": "PartialObjectMetadataList",
                "metadata": {"continue": "page-2"} if first else {"resourceVersion": "100"},
                "items": [{"metadata": pod_metadata(n)} for n in names],
            }
            return web.json_response(listing)
        assert request.query["resourceVersion"] == "100"
        events = [
            {"type": "ADDED", "object": {"metadata": pod_metadata("d", resourceVersion="101")}},
            {
                "type": "MODIFIED",
                "object": {
                    "metadata": pod_metadata(
                        "a", resourceVersion="102", deletionTimestamp="2026-12-05T07:00:00Z"
                    )
                },
            },
            {"type": "DELETED", "object": {"metadata": pod_metadata("b", resourceVersion="103")}},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "105"}}},
        ]
        response = web.StreamResponse()
        await response.prepare(request)
        for event in events:
            await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/api/v1/pods", pods)
    async with api_client_of(app) as api:
        watch = PodMetadata(api, on_restart=lambda restart, delay: None)
        await watch.list_once()
        assert (sorted(watch.pods), watch.synced) == (["shop/a", "shop/b", "shop/c"], True)
        await watch.watch_once()
    assert sorted(watch.pods) == ["shop/c", "shop/d"]
    assert watch.resource_version == "105"
    assert seen == [
        ("list", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
        ("list", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
        ("true", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
    ]


async def test_a_shutdown_that_comes_while_leading_winds_down_is_not_lost() -> None:
    """Leadership ends (the leading task is cancelled and cleans up); a shutdown cancelling
    the watch meanwhile must still stop it, or the server waits for it forever."""
    closed = client.Configuration(host=f"http://127.0.0.1:{free_port()}")
    async with client.ApiClient(closed) as api:
        watch = RolloutWatch(
            api, namespace="mesher-system", live=dict, metrics=Metrics(), on_restart=print
        )

        async def leading() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                await asyncio.sleep(0.2)  # its clean-up, still running at the shutdown

        watch._leading = asyncio.create_task(leading())
        await asyncio.sleep(0)
        stopping = asyncio.create_task(watch._stop_leading())
        await asyncio.sleep(0.05)
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
