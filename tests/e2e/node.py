"""What a stand-in node does with each pod: pure decisions and the objects it writes.

Nothing can run containers on these machines, so a node agent (node_agent.py) plays the
kubelet: it binds pods to its one node, reports them Running and Ready, completes the pods
of Jobs and deletes terminating pods. This module decides each pod's next step from the pod
alone and the time, so the agent keeps no state and survives its own restart.

- A pod whose restartPolicy is Always (Deployments, StatefulSets, DaemonSets) runs forever.
- Any other pod (a Job's) "runs" RUN_SECONDS, then its regular containers exit 0 and it
  Succeeds, unless one of them is a classic sidecar: a proxy that serves until it is killed
  (CLASSIC_SIDECAR in `containers`), which keeps it Running, as on a real node. A native
  sidecar (an init container with restartPolicy Always) never holds a pod up.
- A terminating pod goes when its apps have stopped: STOP_SECONDS after the deletion, or at
  the end of its grace period when that is sooner; at once when it had already finished;
  one whose container runs here for real, once its process has exited (or at the end of
  its grace period).
- Containers of RUN_HERE images are run for real, as local processes on the pod's address
  (tests/e2e/pod_runner.py): a pod with one that has an httpGet readiness probe is Ready
  only while the probe answers at that address. Every other container runs nothing and is
  ready at once.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]

NODE_NAME = "stand-in"
NODE_IP = "127.0.0.1"
# Pod addresses are loopback too, so a test may serve a pod's port on its podIP.
POD_NETWORK = ipaddress.ip_network("127.1.0.0/16")
RUN_SECONDS = 1.0
STOP_SECONDS = 1.0
CLASSIC_SIDECAR = "mesher"
# The images whose containers run for real (our injector, as deploy/ names its image).
RUN_HERE = frozenset({"mesher-injector"})


@dataclass(frozen=True, slots=True)
class Bind:
    """Schedule the pod on our node (pods/binding), as kube-scheduler would."""


@dataclass(frozen=True, slots=True)
class Start:
    """Report the pod Running and Ready."""


@dataclass(frozen=True, slots=True)
class Complete:
    """Report the pod Succeeded: all its regular containers exited 0."""


@dataclass(frozen=True, slots=True)
class Remove:
    """Delete the terminating pod for good (grace period 0), as a kubelet does."""


@dataclass(frozen=True, slots=True)
class RemoveOnceStopped:
    """Delete the terminating pod once nothing listens at `url` (its probe's address) any
    more: its process has exited, as a kubelet waits for its containers to stop."""

    url: str


@dataclass(frozen=True, slots=True)
class Probe:
    """GET `url` (the pod's readiness probe) and report the pod Ready when it answers 200,
    not Ready otherwise; `ready` is what the pod says now."""

    url: str
    ready: bool


Step = Bind | Start | Complete | Remove | RemoveOnceStopped | Probe


def timestamp(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


def is_native_sidecar(container: Json) -> bool:
    return container.get("restartPolicy") == "Always"


def _ends_by_itself(pod: Json) -> bool:
    if pod["spec"].get("restartPolicy", "Always") == "Always":
        return False
    return all(c["name"] != CLASSIC_SIDECAR for c in pod["spec"]["containers"])


def _stops_at(pod: Json) -> datetime.datetime:
    deadline = _parse(pod["metadata"]["deletionTimestamp"])
    grace = float(pod["metadata"].get("deletionGracePeriodSeconds", 0))
    requested = deadline - datetime.timedelta(seconds=grace)
    return requested + datetime.timedelta(seconds=min(grace, STOP_SECONDS))


def next_step(pod: Json, *, now: datetime.datetime) -> Step | None:
    """The one thing to do for `pod` now, or None when it is as it should be."""
    status = pod.get("status", {})
    phase = status.get("phase", "Pending")
    if "deletionTimestamp" in pod["metadata"]:
        if phase in ("Succeeded", "Failed"):
            return Remove()
        url = readiness_url(pod)
        if url and now < _parse(pod["metadata"]["deletionTimestamp"]):
            return RemoveOnceStopped(url)  # a process runs: wait for it, up to the grace
        return Remove() if url or now >= _stops_at(pod) else None
    if not pod["spec"].get("nodeName"):
        return Bind()
    if phase == "Pending":
        return Start()
    if phase == "Running" and _ends_by_itself(pod):
        started = _parse(status["startTime"])
        if now >= started + datetime.timedelta(seconds=RUN_SECONDS):
            return Complete()
    url = readiness_url(pod)
    if phase == "Running" and url:
        return Probe(url, ready=_is_ready(pod))
    return None


def runs_here(container: Json) -> bool:
    """Whether the container's image is one this node runs (any registry, tag or digest)."""
    image = str(container.get("image", "")).split("@")[0]
    name = image.rsplit("/", 1)[-1].split(":")[0]
    return name in RUN_HERE


def _probe(container: Json) -> Json | None:
    if not runs_here(container):
        return None
    probe = (container.get("readinessProbe") or {}).get("httpGet")
    return probe if isinstance(probe, dict) else None


def readiness_url(pod: Json) -> str | None:
    """Where the first httpGet readiness probe of the pod's containers is answered, on the
    pod's address (the port by number or by the container port's name)."""
    ip = pod.get("status", {}).get("podIP")
    for container in pod["spec"]["containers"]:
        probe = _probe(container)
        if probe is None or not ip:
            continue
        port = probe["port"]
        if isinstance(port, str):
            named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            port = named[port]
        return f"http://{ip}:{port}{probe.get('path', '/')}"
    return None


def _is_ready(pod: Json) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pod_ip(pod: Json, used: Iterable[str]) -> str:
    """The node's address for a host-network pod, else a free pod address picked by the
    pod's uid: an address a deleted pod just left is not handed out again at once (its
    process may still be draining on it), as a real node's IPAM would not."""
    if pod["spec"].get("hostNetwork"):
        return NODE_IP
    taken = set(used)
    hosts = POD_NETWORK.num_addresses - 2
    start = int(hashlib.sha256(pod["metadata"]["uid"].encode()).hexdigest(), 16) % hosts
    for offset in range(hosts):
        ip = str(POD_NETWORK.network_address + 1 + (start + offset) % hosts)
        if ip not in taken:
            return ip
    raise RuntimeError(f"no free address in {POD_NETWORK}")


def binding(pod: Json) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
    }


def _condition(kind: str, status: bool, now: str, reason: str | None = None) -> Json:
    condition: Json = {
        "type": kind,
        "status": "True" if status else "False",
        "lastTransitionTime": now,
        "lastProbeTime": None,
    }
    if reason:
        condition["reason"] = reason
    return condition


def _running(container: Json, now: str, *, ready: bool = True) -> Json:
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "containerID": f"stand-in://{container['name']}",
        "ready": ready,
        "started": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": now}},
    }


def _exited(container: Json, now: str) -> Json:
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "containerID": f"stand-in://{container['name']}",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": now,
                "finishedAt": now,
            }
        },
    }


def running_status(
    pod: Json, *, ip: str, now: datetime.datetime, ready: bool | None = None
) -> Json:
    """Every container started; plain init containers done, native sidecars up. Ready
    unless a container has a readiness probe (not answered yet); `ready` says otherwise."""
    at = timestamp(now)
    init = pod["spec"].get("initContainers", [])
    containers = pod["spec"]["containers"]
    probed = {c["name"] for c in containers if _probe(c) is not None}
    if ready is None:
        ready = not probed
    return {
        "phase": "Running",
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": at,
        "conditions": [
            _condition("PodReadyToStartContainers", True, at),
            _condition("Initialized", True, at),
            _condition("ContainersReady", ready, at),
            _condition("Ready", ready, at),
            _condition("PodScheduled", True, at),
        ],
        "initContainerStatuses": [
            _running(c, at) if is_native_sidecar(c) else _exited(c, at) for c in init
        ],
        "containerStatuses": [
            _running(c, at, ready=ready or c["name"] not in probed) for c in containers
        ],
    }


def readiness_status(pod: Json, *, ready: bool, now: datetime.datetime) -> Json:
    """The running pod's status, Ready or not as its probe answered (started as it was)."""
    status = pod["status"]
    changed = running_status(pod, ip=status["podIP"], now=now, ready=ready)
    return changed | {"startTime": status["startTime"]}


def succeeded_status(pod: Json, *, now: datetime.datetime) -> Json:
    """Every container exited 0, native sidecars stopped after the apps."""
    at = timestamp(now)
    return {
        "phase": "Succeeded",
        "conditions": [
            _condition("Ready", False, at, "PodCompleted"),
            _condition("ContainersReady", False, at, "PodCompleted"),
        ],
        "initContainerStatuses": [_exited(c, at) for c in pod["spec"].get("initContainers", [])],
        "containerStatuses": [_exited(c, at) for c in pod["spec"]["containers"]],
    }


def node_manifest(*, now: datetime.datetime) -> Json:
    """Our one node, Ready, roomy and untainted."""
    at = timestamp(now)
    room = {"cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "StandIn",
                    "message": "a stand-in node agent of the e2e tests",
                    "lastHeartbeatTime": at,
                    "lastTransitionTime": at,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP},
                {"type": "Hostname", "address": NODE_NAME},
            ],
            "capacity": room,
            "allocatable": room,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "stand-in",
                "containerRuntimeVersion": "stand-in://0",
                "osImage": "none",
                "kernelVersion": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }
