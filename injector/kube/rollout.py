"""The rollout watch: one replica at a time, chosen by a coordination.k8s.io Lease
(kubernetes_asyncio's leader election), keeps every meshed pod of the cluster in memory
from a metadata-only list and watch of pods, and exports the count by state.

Metadata only: the API server answers `as=PartialObjectMetadata`, so a pod costs its
metadata on the wire and a few interned strings here (injector.core.rollout.TrackedPod),
never its spec. When the leader goes, another replica takes the Lease once it has not
been renewed for LEASE_SECONDS (injector.kube.lease); a leader that stops cleanly hands
it over at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection

from injector.core import limits
from injector.core.rollout import LiveTemplate, Tally, TrackedPod, tally, tracked
from injector.core.watching import Restart
from injector.kube.configmap import api_client_for
from injector.kube.lease import (
    LEASE_NAME,
    LEASE_SECONDS,
    RENEW_DEADLINE_S,
    RETRY_S,
    BoundedLeaseLock,
    identity,
)
from injector.kube.listwatch import ListWatch, WatchProtocolError, short
from injector.kube.pages import decode_page, read_body
from injector.obs.metrics import Metrics

PODS = "/api/v1/pods"
AS_METADATA = "application/json;as=PartialObjectMetadata{};g=meta.k8s.io;v=v1"


class PodMetadata(ListWatch):
    """Every meshed pod of the cluster, by namespace/name, from metadata alone."""

    def __init__(self, api: client.ApiClient, **loop: Any) -> None:
        """`loop`: ListWatch's (on_restart, timeouts, backoff, jitter)."""
        super().__init__(**loop)
        self.api = api
        self.pods: dict[str, TrackedPod] = {}
        self.synced = False  # a whole list has been read
        self.changes = 0  # lists and events taken: the tally is redone when it moves

    def forget(self) -> None:
        self.pods, self.synced, self.resource_version = {}, False, ""

    async def _get(self, accept: str, query: list[tuple[str, str]], deadline: Any) -> Any:
        return await self.api.call_api(
            PODS,
            "GET",
            query_params=query,
            header_params={"Accept": AS_METADATA.format(accept)},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=deadline,
        )

    async def list_once(self) -> None:
        """Every pod, page by page; a failed list leaves the count out of sync (the leader
        then exports no count rather than a frozen one)."""
        try:
            await self._list_all()
        except BaseException:
            self.synced = False
            raise

    async def _list_all(self) -> None:
        pods: dict[str, TrackedPod] = {}
        token = ""
        while True:
            query = [("limit", str(limits.LIST_PAGE))] + ([("continue", token)] if token else [])
            deadline = (self.connect_timeout, self.read_timeout)
            page = decode_page(await read_body(await self._get("List", query, deadline)))
            for item in page.items:
                remember(pods, item.get("metadata") or {})
            token = page.next
            if not token:
                break
        if not page.resource_version:
            raise WatchProtocolError("a pod list without a resourceVersion")
        self.pods, self.synced = pods, True
        self.changes += 1
        self.resource_version = page.resource_version

    async def _watch_request(
        self, *, resource_version: str, timeout_seconds: int, _request_timeout: Any, **_: Any
    ) -> Any:
        """One watch of pods' metadata (Watch.stream adds watch and _preload_content)."""
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        return await self._get("", query, _request_timeout)

    def watch_request(self) -> Callable[..., Awaitable[Any]]:
        return self._watch_request

    def handle(self, event: dict[str, Any]) -> None:
        obj = event.get("raw_object")
        metadata = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(metadata, dict):
            raise WatchProtocolError(f"an event without metadata: {short(str(event))!r}")
        if event["type"] in ("ADDED", "MODIFIED"):
            remember(self.pods, metadata)
        elif event["type"] == "DELETED":
            self.pods.pop(_key(metadata), None)
        else:
            return  # a bookmark: Watch has taken its resourceVersion
        self.changes += 1


def remember(pods: dict[str, TrackedPod], metadata: Mapping[str, Any]) -> None:
    """Keep (or forget) what the tally needs of one pod, by namespace/name."""
    pod = tracked(metadata)
    if pod is None:
        pods.pop(_key(metadata), None)
    else:
        pods[_key(metadata)] = pod


def _key(metadata: Mapping[str, Any]) -> str:
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"


class RolloutWatch:
    """Run for leadership, and while leading, watch pods and export their tally every
    `refresh` seconds. `run` loops until cancelled; `close` hands the Lease over."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        live: Callable[[], Mapping[str, LiveTemplate]],
        metrics: Metrics,
        refresh: float = limits.ROLLOUT_REFRESH_S,
        clock: Callable[[], float] = time.time,
        name: str = "",
        **loop: Any,
    ) -> None:
        """`loop`: the pod watch's ListWatch arguments (on_restart, timeouts, ...)."""
        self.api = api
        self.namespace = namespace
        self.identity = name or identity()
        self.live = live
        self.metrics = metrics
        self.refresh = refresh
        self.clock = clock
        self.pods = PodMetadata(api, **loop)
        self.log = structlog.get_logger("injector").bind(
            lease=f"{namespace}/{LEASE_NAME}", identity=self.identity
        )
        self._leading: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self.metrics.track_rollout()
        while True:
            lock = BoundedLeaseLock(LEASE_NAME, self.namespace, self.identity, self.api)
            config = electionconfig.Config(
                lock,
                lease_duration=LEASE_SECONDS,
                renew_deadline=RENEW_DEADLINE_S,
                retry_period=RETRY_S,
                onstarted_leading=self._lead,
                onstopped_leading=self._stopped,
            )
            try:
                await leaderelection.LeaderElection(config).run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server is gone, forbidden, ...
                self.log.warning(
                    "rollout_election_failed", error=short(f"{type(exc).__name__}: {exc}")
                )
            finally:
                await self._stop_leading()
            await asyncio.sleep(RETRY_S)

    async def _lead(self) -> None:
        """While leading: keep the pods, export their tally every `refresh` seconds. The
        leader gauge is 1 only while a count is exported: a leader that cannot list pods
        (forbidden, say) says 0, so no leader is what an alert sees."""
        self._leading = asyncio.current_task()
        self.log.info("rollout_leading")
        pods = asyncio.create_task(self.pods.run())
        counted: tuple[int, Mapping[str, LiveTemplate]] | None = None
        last: Tally | None = None
        try:
            while True:
                live = self.live()
                exporting = self.pods.synced and bool(live)
                try:
                    if exporting and counted != (self.pods.changes, live):  # else the clock
                        counted = (self.pods.changes, live)  # alone moved
                        last = tally(self.pods.pods.values(), live)
                    self.metrics.observe_rollout(last if exporting else None, self.clock())
                except Exception:  # a bug: say so (no leader, in the gauge), go on
                    self.log.exception("rollout_count_failed")
                    counted, exporting = None, False
                    self.metrics.observe_rollout(None)
                self.metrics.rollout_leader.set(1 if exporting else 0)
                await asyncio.sleep(self.refresh)
        finally:
            pods.cancel()
            await asyncio.wait({pods})
            self.pods.forget()
            self.metrics.observe_rollout(None)
            self.metrics.rollout_leader.set(0)

    async def _stopped(self) -> None:
        self.log.info("rollout_not_leading")

    async def _stop_leading(self) -> None:
        """The library cancels the leading task when the Lease is lost, not when the
        election itself fails: stop it here in both cases (waited for without swallowing
        a cancellation of `run` itself: a shutdown must not be lost)."""
        task, self._leading = self._leading, None
        if task is None:
            return
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            self.log.error("rollout_leading_failed", error=short(repr(task.exception())))

    async def close(self) -> None:
        """Hand the Lease over if this replica holds it (so another takes it within a
        retry, not a whole lease), then close the client."""
        try:
            leases = client.CoordinationV1Api(self.api)
            async with asyncio.timeout(RETRY_S):
                lease = await leases.read_namespaced_lease(LEASE_NAME, self.namespace)
                if lease.spec is not None and lease.spec.holder_identity == self.identity:
                    lease.spec.holder_identity = ""  # released, as client-go does it
                    await leases.replace_namespaced_lease(LEASE_NAME, self.namespace, lease)
                    self.log.info("rollout_lease_released")
        except Exception as exc:  # best effort: the Lease expires by itself
            self.log.info("rollout_lease_not_released", error=short(f"{type(exc).__name__}: {exc}"))
        finally:
            await self.api.close()


async def open_rollout_watch(
    *,
    kube_api_server: str,
    namespace: str,
    live: Callable[[], Mapping[str, LiveTemplate]],
    metrics: Metrics,
    on_restart: Callable[[Restart, float], None],
    read_timeout: float,
    watch_timeout: int,
) -> RolloutWatch:
    """A rollout watch with an API client of its own (closed by `close`): what `serve`
    hands the server unless --rollout-watch=false; its pod watch times out as the
    ConfigMap's does (--watch-read-timeout)."""
    api = await api_client_for(kube_api_server)
    return RolloutWatch(
        api,
        namespace=namespace,
        live=live,
        metrics=metrics,
        on_restart=on_restart,
        read_timeout=read_timeout,
        watch_timeout=watch_timeout,
    )
