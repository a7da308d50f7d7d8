"""The rollout watch's Lease (coordination.k8s.io, in the injector's namespace): its
timings, this replica's identity in it, and kubernetes_asyncio's LeaseLock made safe to
lead with (injector.kube.rollout runs the election)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from injector.core.names import ROLLOUT_LEASE

LEASE_NAME = ROLLOUT_LEASE
# What client-go's controllers use: a dead leader's Lease is taken after 15 s.
LEASE_SECONDS, RENEW_DEADLINE_S, RETRY_S = 15, 10, 2
LEASE_CALL_S = 5.0  # at most, per Lease call


class LeaseDeadlinePassed(Exception):
    """The leader has not renewed its Lease within RENEW_DEADLINE_S: it stops leading."""


class BoundedLeaseLock(LeaseLock):
    """kubernetes_asyncio's LeaseLock, bounded and forgiving. The client has no timeout of
    its own, and the library tries a renewal (a read, then an update) whole before it looks
    at its deadline, and sleeps RETRY_S after a failed try: here, once this replica holds
    the Lease, each call ends by RENEW_DEADLINE_S after the start of its last successful
    renewal (the server may have stored it any time after), and a failed try whose next
    one would come past that raises LeaseDeadlinePassed, which ends the round. So a leader
    stops by its renewal + RENEW_DEADLINE_S, 5 s before the Lease (LEASE_SECONDS) can go to
    another replica. A timeout, a broken connection or an API error is a failed try,
    retried by the library: one blip does not cost the leadership."""

    def __init__(self, *args: Any, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(*args)
        self.clock = clock
        self.renewed_at: float | None = None  # when the last successful renewal started

    def _budget(self) -> float:
        if self.renewed_at is None:
            return LEASE_CALL_S
        left = self.renewed_at + RENEW_DEADLINE_S - self.clock()
        if left <= 0:
            raise LeaseDeadlinePassed(f"no renewal for {RENEW_DEADLINE_S} s")
        return min(LEASE_CALL_S, left)

    def _failed(self) -> None:
        """After a failed try: a leader whose next try (RETRY_S on) would come past its
        deadline stops now."""
        late = self.renewed_at is not None and (
            self.clock() + RETRY_S >= self.renewed_at + RENEW_DEADLINE_S
        )
        if late:
            raise LeaseDeadlinePassed(f"no renewal within {RENEW_DEADLINE_S} s")

    async def get(self, name: str, namespace: str) -> Any:
        try:
            async with asyncio.timeout(self._budget()):
                found, record = await super().get(name, namespace)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            found, record = False, ApiException(status=503, reason=f"{type(exc).__name__}: {exc}")
        if not found:
            self._failed()
            if isinstance(record, ApiException):  # the library reads the body's "code"
                record.body = json.dumps({"code": record.status}).encode()
        return found, record

    async def create(self, name: str, namespace: str, election_record: Any) -> bool:
        return await self._renew(super().create(name, namespace, election_record))

    async def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        return await self._renew(super().update(name, namespace, updated_record))

    async def _renew(self, call: Coroutine[Any, Any, bool]) -> bool:
        started = self.clock()
        try:
            async with asyncio.timeout(self._budget()):
                done = await call
        except (TimeoutError, aiohttp.ClientError, OSError):
            done = False
        finally:
            call.close()  # never awaited when the budget was already spent
        if done:
            self.renewed_at = started
        else:
            self._failed()
        return done


def identity() -> str:
    """This replica's name in the Lease: its pod (POD_NAME) or host, and a random suffix,
    so a restarted container is a new candidate, as client-go's controllers do."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
