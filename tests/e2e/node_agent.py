"""The stand-in node agent: registers its node, then applies node.next_step to every pod.

Run by the control plane fixture as its own process:
`python -m tests.e2e.node_agent --server URL --ca CA --cert CERT --key KEY`.
It lists all pods a few times a second (a test cluster holds a few dozen): simpler than a
watch, and it needs no state to pick up where it was.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from pathlib import Path

import aiohttp

from tests.e2e import node
from tests.e2e.kube import ApiError, Credentials, Json, Kube

PERIOD = 0.2
PROBE_TIMEOUT = 1.0


def _pod_path(pod: Json) -> str:
    meta = pod["metadata"]
    return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"


async def register(kube: Kube) -> None:
    now = datetime.datetime.now(datetime.UTC)
    manifest = node.node_manifest(now=now)
    path = f"/api/v1/nodes/{node.NODE_NAME}"
    try:
        await kube.create("/api/v1/nodes", manifest)
    except ApiError as error:
        if error.status != 409:
            raise
    await kube.patch(f"{path}/status", {"status": manifest["status"]})
    # kube-apiserver taints a new node not-ready; node-lifecycle-controller (not run here)
    # would lift the taint once the node reports Ready.
    await kube.patch(path, {"spec": {"taints": None}})


async def execute(kube: Kube, pod: Json, step: node.Step, *, used_ips: set[str]) -> None:
    now = datetime.datetime.now(datetime.UTC)
    path = _pod_path(pod)
    match step:
        case node.Bind():
            await kube.create(f"{path}/binding", node.binding(pod))
        case node.Start():
            ip = node.pod_ip(pod, used_ips)
            used_ips.add(ip)
            await kube.patch(f"{path}/status", {"status": node.running_status(pod, ip=ip, now=now)})
        case node.Complete():
            await kube.patch(f"{path}/status", {"status": node.succeeded_status(pod, now=now)})
        case node.Remove():
            options = {"gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}}
            await kube.delete(path, {"apiVersion": "v1", "kind": "DeleteOptions", **options})
        case node.RemoveOnceStopped(url=url):
            if not await listening(url):
                await execute(kube, pod, node.Remove(), used_ips=used_ips)
        case node.Probe(url=url, ready=was):
            ready = await probe(url)
            if ready != was:
                status = node.readiness_status(pod, ready=ready, now=now)
                await kube.patch(f"{path}/status", {"status": status})


async def listening(url: str) -> bool:
    """Whether a process still answers at `url`, whatever it answers."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as session,
            session.get(url, allow_redirects=False),
        ):
            return True
    except aiohttp.ClientConnectorError:
        return False
    except (TimeoutError, aiohttp.ClientError, OSError):
        return True


async def probe(url: str) -> bool:
    """A readiness probe as a kubelet runs it: 200-399 within a second is success."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as session,
            session.get(url, allow_redirects=False) as answer,
        ):
            return 200 <= answer.status < 400
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


async def tend(kube: Kube) -> None:
    """One pass over every pod."""
    pods = (await kube.get("/api/v1/pods"))["items"]
    used_ips = {p["status"]["podIP"] for p in pods if p.get("status", {}).get("podIP")}
    now = datetime.datetime.now(datetime.UTC)
    for pod in pods:
        step = node.next_step(pod, now=now)
        if step is None:
            continue
        try:
            await execute(kube, pod, step, used_ips=used_ips)
        except ApiError as error:
            # The pod moved on meanwhile (deleted, rebound, updated): next pass sees it anew.
            print(f"node agent: {type(step).__name__} {_pod_path(pod)}: {error}", file=sys.stderr)


async def run(credentials: Credentials) -> None:
    async with Kube(credentials) as kube:
        await register(kube)
        print(f"node agent: node {node.NODE_NAME} registered", file=sys.stderr, flush=True)
        while True:
            try:
                await tend(kube)
            except (TimeoutError, ApiError, OSError, aiohttp.ClientError) as error:
                print(f"node agent: {error!r}", file=sys.stderr, flush=True)
            await asyncio.sleep(PERIOD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--server", "--ca", "--cert", "--key"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    credentials = Credentials(
        server=args.server, ca=Path(args.ca), cert=Path(args.cert), key=Path(args.key)
    )
    asyncio.run(run(credentials))


if __name__ == "__main__":
    main()
