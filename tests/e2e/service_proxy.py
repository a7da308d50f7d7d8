"""The stand-in for kube-proxy, for the Services of pods that run here for real
(node.RUN_HERE): a TCP listener on each of the Service's ClusterIP ports (inside the
loopback service range) forwards every connection to one of the Service's ready pods, at
its loopback address and target port. (kube-proxy would read EndpointSlices; the API server
refuses loopback addresses in them, so the backends come from the pods themselves.)"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import sys
from dataclasses import dataclass
from typing import Any

from tests.e2e import node

Json = dict[str, Any]
Address = tuple[str, int]


def _selects(service: Json, pod: Json) -> bool:
    selector = service["spec"].get("selector") or {}
    labels = pod["metadata"].get("labels") or {}
    return bool(selector) and selector.items() <= labels.items()


def _ready(pod: Json) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return "deletionTimestamp" not in pod["metadata"] and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def _target(port: Json, pod: Json) -> int | None:
    target = port.get("targetPort", port["port"])
    if isinstance(target, int):
        return target
    for container in pod["spec"]["containers"]:
        for declared in container.get("ports", []):
            if declared.get("name") == target:
                return int(declared["containerPort"])
    return None


def routes(services: list[Json], pods: list[Json]) -> dict[Address, list[Address]]:
    """ClusterIP:port -> the ready backends (podIP:targetPort), for every Service that
    selects a pod which runs here (its backends may be none at the moment)."""
    table: dict[Address, list[Address]] = {}
    for service in services:
        spec = service["spec"]
        ip = spec.get("clusterIP")
        selected = [p for p in pods if _selects(service, p)]
        here = any(node.runs_here(c) for p in selected for c in p["spec"]["containers"])
        if not here or not ip or ip == "None":
            continue
        for port in spec.get("ports", []):
            backends = []
            for pod in selected:
                target = _target(port, pod)
                if _ready(pod) and target is not None:
                    backends.append((str(pod["status"]["podIP"]), target))
            table[(str(ip), int(port["port"]))] = backends
    return table


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


@dataclass
class ServiceProxy:
    """Listeners for the current routes; `update` with each new table."""

    table: dict[Address, list[Address]]
    servers: dict[Address, asyncio.Server]

    @classmethod
    def empty(cls) -> ServiceProxy:
        return cls(table={}, servers={})

    async def update(self, table: dict[Address, list[Address]]) -> None:
        self.table = table
        for address in set(table) - set(self.servers):
            try:
                self.servers[address] = await asyncio.start_server(
                    functools.partial(self._forward, address), *address
                )
                print(f"service proxy: listening on {address}", file=sys.stderr, flush=True)
            except OSError as error:
                print(f"service proxy: {address}: {error}", file=sys.stderr, flush=True)
        for address in set(self.servers) - set(table):
            self.servers.pop(address).close()

    async def _forward(
        self, address: Address, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        backends = self.table.get(address) or []
        if not backends:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                *random.choice(backends)
            )
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except asyncio.CancelledError:
            # The runner is stopping: asyncio's stream server would print the cancellation
            # of its callback as an unhandled error.
            upstream_writer.close()
            writer.close()

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
