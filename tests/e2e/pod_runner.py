"""The stand-in node's container runtime for the images it runs for real (node.RUN_HERE: our
injector), and kube-proxy for their Services (service_proxy.py): a running pod's container becomes a local `mesher-injector` process bound to the
pod's loopback address, with the container's args and env, its Secret and emptyDir volumes
as local folders, and a token of the pod's service account in a kubeconfig (what in-cluster
config would give it; the Service `kubernetes` has no endpoint here). A pod being deleted
gets its process SIGTERMed, as a kubelet would.

Run by the control plane fixture as its own process:
`python -m tests.e2e.pod_runner --server URL --ca CA --cert CERT --key KEY --workdir DIR`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.e2e import node
from tests.e2e.controlplane import write_kubeconfig
from tests.e2e.kube import ApiError, Credentials, Json, Kube
from tests.e2e.processes import Processes
from tests.e2e.service_proxy import ServiceProxy, routes
from tests.support.helpers import ROOT
from tests.support.processes import STOP_LIMIT

PERIOD = 0.2
TOKEN_SECONDS = 3600
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def runnable(pod: Json) -> Json | None:
    """The pod's container to run here, once the pod runs (bound, started, has its address)."""
    status = pod.get("status", {})
    if status.get("phase") != "Running" or not status.get("podIP"):
        return None
    return next((c for c in pod["spec"]["containers"] if node.runs_here(c)), None)


def env_of(container: Json, pod: Json) -> dict[str, str]:
    """The container's env: plain values and the downward API's pod fields."""
    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "status.podIP": pod["status"]["podIP"],
    }
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif path := (item.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath"):
            env[item["name"]] = fields[path]
    return env


def local_path(value: str, mounts: dict[str, Path]) -> str:
    """`value` (a path, or a --flag=path) with a mount path in front made its local folder."""
    flag, equals, path = value.rpartition("=") if value.startswith("-") else ("", "", value)
    for mount_path in sorted(mounts, key=len, reverse=True):
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            path = str(mounts[mount_path]) + path[len(mount_path.rstrip("/")) :]
            break
    return f"{flag}{equals}{path}"


def argv_of(container: Json, pod: Json, mounts: dict[str, Path]) -> list[str]:
    """`mesher-injector ARGS --host POD_IP`, mount paths in ARGS made local folders."""
    args = [local_path(str(a), mounts) for a in container.get("args", [])]
    return [sys.executable, "-m", "injector", *args, f"--host={pod['status']['podIP']}"]


def _die_with_parent() -> None:
    """In the child: SIGTERM when the runner dies, even killed (no pod outlives its node)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Runner:
    def __init__(self, kube: Kube, workdir: Path) -> None:
        self.kube = kube
        self.workdir = workdir
        self.processes = Processes(workdir)
        self.proxy = ServiceProxy.empty()
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping: set[str] = set()

    async def volumes(self, container: Json, pod: Json, folder: Path) -> dict[str, Path]:
        """Each mounted Secret written out, each emptyDir made: mount path -> folder."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            local = folder / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                ns = pod["metadata"]["namespace"]
                secret = await self.kube.get(f"/api/v1/namespaces/{ns}/secrets/{name}")
                for key, value in (secret.get("data") or {}).items():
                    (local / key).write_bytes(base64.b64decode(value))
            mounts[mount["mountPath"]] = local
        return mounts

    async def kubeconfig(self, pod: Json, folder: Path) -> Path:
        """A kubeconfig with a token of the pod's service account, bound to the pod."""
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName", "default")
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": TOKEN_SECONDS,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        answer = await self.kube.create(
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token", request
        )
        path = folder / "kubeconfig"
        write_kubeconfig(
            path,
            self.kube.credentials,
            user=account,
            auth={"token": answer["status"]["token"]},
            namespace=meta["namespace"],
        )
        return path

    async def start(self, container: Json, pod: Json) -> None:
        meta = pod["metadata"]
        folder = self.workdir / meta["name"]
        mounts = await self.volumes(container, pod, folder)
        env = {
            k: v
            for k, v in os.environ.items()
            if k != "KUBECONFIG" and not k.startswith("MESHER_INJECTOR_")
        }
        env |= env_of(container, pod)
        env["KUBECONFIG"] = str(await self.kubeconfig(pod, folder))
        argv = argv_of(container, pod, mounts)
        self.running[meta["uid"]] = self.processes.start(
            meta["name"], argv, cwd=ROOT, env=env, preexec_fn=_die_with_parent
        )
        print(f"pod runner: started {meta['namespace']}/{meta['name']}", file=sys.stderr)

    async def tend(self) -> None:
        pods = (await self.kube.get("/api/v1/pods"))["items"]
        live = set()
        for pod in pods:
            uid = pod["metadata"]["uid"]
            container = runnable(pod)
            if container is None and uid not in self.running:
                continue
            live.add(uid)
            if "deletionTimestamp" in pod["metadata"]:
                self.stop(uid)
            elif uid not in self.running and container is not None:
                await self.start(container, pod)
        for uid in set(self.running) - live:
            self.stop(uid)  # gone without our seeing it terminate
        services = (await self.kube.get("/api/v1/services"))["items"]
        await self.proxy.update(routes(services, pods))

    def stop(self, uid: str) -> None:
        if uid in self.running and uid not in self.stopping:
            self.stopping.add(uid)
            self.running[uid].terminate()

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.terminate()
        for process in self.running.values():
            try:
                process.wait(STOP_LIMIT - 2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def run(credentials: Credentials, workdir: Path) -> None:
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    async with Kube(credentials) as kube:
        runner = Runner(kube, workdir)
        try:
            while not stopped.is_set():
                try:
                    await runner.tend()
                except (TimeoutError, ApiError, OSError, aiohttp.ClientError) as error:
                    print(f"pod runner: {error!r}", file=sys.stderr, flush=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopped.wait(), PERIOD)
        finally:
            runner.proxy.close()
            runner.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--server", "--ca", "--cert", "--key", "--workdir"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    credentials = Credentials(
        server=args.server, ca=Path(args.ca), cert=Path(args.cert), key=Path(args.key)
    )
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(credentials, workdir))


if __name__ == "__main__":
    main()
