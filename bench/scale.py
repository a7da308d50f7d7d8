"""`python -m bench.scale [--pods 50000]`: `mesher-injector status` and the injector's
memory on a cluster of 50,000 meshed pods.

The real control plane of the e2e tests (tests/e2e/controlplane.py) runs on loopback with
no controller but the service-account one and no node agent: nothing acts on the pods. A
stand-in Node object is created and every pod is bound to it (spec.nodeName), so creating
a pod costs only the API server's write. No webhook is registered: each pod is created as
the injector would have left it (`decide` on its template, then the patch), in namespaces
labelled for injection, mostly under Deployments (their ReplicaSets) and some bare. A share
carries an older template revision (stale) and a few asked but got no sidecar (missing).

Then: `mesher-injector status -A -o json` as a process, timed (each run, and the best),
its counts checked against what was created; and, as the floor it cannot go below, the
time to read every page of pods it asks for without parsing them. With the rollout watch
(injector/kube/rollout.py), `serve` with the ConfigMap source: the time until its /metrics
count every pod, then after a template edit until every injected pod counts as stale, and
its peak RSS (VmHWM), with the watch and without. Prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import msgspec

from injector.core import annotations as ann
from injector.core.decide import decide
from injector.core.limits import LIST_PAGE
from injector.core.names import DEFAULT_CONFIGMAP, INJECTOR_NAMESPACE
from injector.core.template import Template, load_template
from tests.e2e import node
from tests.e2e.commands import Live
from tests.e2e.controlplane import ControlPlane, find_binaries, running_control_plane
from tests.e2e.injector import running_injector, samples
from tests.e2e.kube import Json, Kube
from tests.e2e.manifests import INJECTION_LABEL, template_configmap
from tests.e2e.rollout import leads
from tests.support.helpers import DEFAULT_TEMPLATE, ROOT, bump
from tests.support.processes import status_mib

PODS = 50_000
NAMESPACES = 50
DEPLOYMENTS_PER_NAMESPACE = 10
BARE_SHARE = 20  # one pod in 20 is bare
STALE_EVERY = 10  # every 10th workload carries the old revision
MISSING_EVERY = 100  # every 100th workload has one pod that asked and got no sidecar
CONCURRENCY = 32
STATUS_RUNS = 3
STATUS_GOAL_S = 10.0
RSS_GOAL_MIB = 150.0
COUNT_LIMIT_S = 600.0
SETTLE_S = 15.0  # without the watch: time for anything else to load before reading RSS
# Only what pods need before they can be created: their namespace's default ServiceAccount.
CONTROLLERS = ("serviceaccount-controller",)

GOOD = DEFAULT_TEMPLATE.read_text()
OLD = bump(GOOD, "1.6.2")
EDIT = bump(GOOD, "1.6.4")
SUFFIX_LETTERS = "bcdfghjklmnpqrstvwxz2456789"  # what generateName's suffixes are made of


@dataclass(frozen=True, slots=True)
class Planned:
    """A workload to create: `pods` pods, injected (with the older template when `stale`)
    but the first `missing` of them."""

    namespace: str
    kind: str  # Deployment or Pod
    name: str
    pods: int
    stale: bool
    missing: int

    def expected(self, *, current: str, old: str) -> tuple[str, str, str, int, str, str]:
        """What `status -o json` should say of it: (namespace, kind, name, pods,
        revisions, state)."""
        injected = self.pods - self.missing
        revisions = {old if self.stale else current: injected} if injected else {}
        state = "missing" if self.missing else "stale" if self.stale else "current"
        return (
            self.namespace,
            self.kind,
            self.name,
            self.pods,
            json.dumps(revisions, sort_keys=True),
            state,
        )


def plan(pods: int, namespaces: int = NAMESPACES) -> list[Planned]:
    """`pods` pods over `namespaces` namespaces: per namespace, one pod in BARE_SHARE bare
    and the rest under DEPLOYMENTS_PER_NAMESPACE Deployments."""
    planned: list[Planned] = []
    for n in range(namespaces):
        share = pods // namespaces + (1 if n < pods % namespaces else 0)
        bare = share // BARE_SHARE
        owned = share - bare
        namespace = f"scale-{n:03d}"
        for d in range(DEPLOYMENTS_PER_NAMESPACE):
            count = owned // DEPLOYMENTS_PER_NAMESPACE + (
                1 if d < owned % DEPLOYMENTS_PER_NAMESPACE else 0
            )
            if count:
                planned.append(_planned(namespace, "Deployment", f"svc-{d:02d}", count, planned))
        for b in range(bare):
            planned.append(_planned(namespace, "Pod", f"tool-{b:04d}", 1, planned))
    return planned


def _planned(namespace: str, kind: str, name: str, pods: int, so_far: list[Planned]) -> Planned:
    index = len(so_far)
    missing = 1 if index % MISSING_EVERY == MISSING_EVERY // 2 else 0
    return Planned(namespace, kind, name, pods, stale=index % STALE_EVERY == 3, missing=missing)


def suffix(number: int, length: int = 5) -> str:
    letters = []
    for _ in range(length):
        number, digit = divmod(number, len(SUFFIX_LETTERS))
        letters.append(SUFFIX_LETTERS[digit])
    return "".join(letters)


def app_pod(name: str, labels: dict[str, str]) -> Json:
    """The pod a team's manifest asks for: an app container of a realistic size."""
    return {
        "metadata": {"labels": labels, "annotations": {ann.INJECT: "yes"}},
        "spec": {
            "nodeName": node.NODE_NAME,
            "terminationGracePeriodSeconds": 30,
            "containers": [
                {
                    "name": "app",
                    "image": f"registry.example/shop/{name}:2.14.1",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [
                        {"name": "JAVA_OPTS", "value": "-Xms256m -Xmx512m"},
                        {"name": "SPRING_PROFILES_ACTIVE", "value": "production"},
                        {"name": "LOG_LEVEL", "value": "info"},
                    ],
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "512Mi"},
                        "limits": {"memory": "768Mi"},
                    },
                    "readinessProbe": {
                        "httpGet": {"path": "/actuator/health/readiness", "port": "http"},
                        "periodSeconds": 10,
                    },
                    "livenessProbe": {
                        "httpGet": {"path": "/actuator/health/liveness", "port": "http"},
                        "periodSeconds": 20,
                    },
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
                }
            ],
            "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}}],
        },
    }


def injected(pod: Json, template: Template, *, namespace: str, generate_name: str) -> Json:
    """`pod` as the injector leaves it when `template` is live."""
    pod = copy.deepcopy(pod)
    pod["metadata"]["generateName"] = generate_name
    request = {
        "uid": "bench",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "namespace": namespace,
        "object": pod,
    }
    outcome = decide(request, template)
    assert outcome.decision == "injected", outcome
    patched: Json = jsonpatch.apply_patch(pod, outcome.operations())
    return patched


def owner(kind: str, obj: Json) -> list[Json]:
    return [
        {
            "apiVersion": obj["apiVersion"],
            "kind": kind,
            "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


@dataclass(frozen=True, slots=True)
class Shape:
    """The pods of one workload: `names`, the first `missing` of them as `asked` (not
    injected), the others as `sidecar`."""

    path: str
    names: list[str]
    sidecar: Json
    asked: Json
    missing: int

    def bodies(self) -> Iterator[tuple[str, Json]]:
        for i, name in enumerate(self.names):
            shape = self.asked if i < self.missing else self.sidecar
            yield self.path, {**shape, "metadata": {**shape["metadata"], "name": name}}


async def prepare(kube: Kube, names: list[str]) -> None:
    """The labelled namespaces (with their default ServiceAccount), the template
    ConfigMap (the shipped template) in its namespace, and the stand-in Node."""
    for name in [*names, INJECTOR_NAMESPACE]:
        labels = {} if name == INJECTOR_NAMESPACE else {INJECTION_LABEL: "enabled"}
        await kube.create(
            "/api/v1/namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": labels},
            },
        )
    for name in names:
        await kube.wait_for(f"/api/v1/namespaces/{name}/serviceaccounts/default", lambda sa: True)
    namespace, name = DEFAULT_CONFIGMAP.split("/")
    await kube.create(
        f"/api/v1/namespaces/{namespace}/configmaps", template_configmap(GOOD, name=name)
    )
    stand_in = node.node_manifest(now=datetime.datetime.now(datetime.UTC))
    await kube.create("/api/v1/nodes", stand_in)


class Creator:
    """Creates the planned objects through `kube`, pods CONCURRENCY at a time."""

    def __init__(self, kube: Kube, *, current: Template, old: Template) -> None:
        self.kube = kube
        self.current = current
        self.old = old

    async def owners(self, workload: Planned) -> tuple[Json, str]:
        """The Deployment and its ReplicaSet; the pod template (uninjected) and the
        ReplicaSet's name."""
        template_hash = suffix(zlib.crc32(workload.name.encode()), 9)
        labels = {"app": workload.name, "version": "2.14.1"}
        pod = app_pod(workload.name, labels)
        deployment = await self.kube.create(
            f"/apis/apps/v1/namespaces/{workload.namespace}/deployments",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": workload.name, "labels": labels},
                "spec": {
                    "replicas": workload.pods,
                    "selector": {"matchLabels": {"app": workload.name}},
                    "template": pod,
                },
            },
        )
        rs_labels = labels | {"pod-template-hash": template_hash}
        rs_pod = app_pod(workload.name, rs_labels)
        replicaset = await self.kube.create(
            f"/apis/apps/v1/namespaces/{workload.namespace}/replicasets",
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{workload.name}-{template_hash}",
                    "labels": rs_labels,
                    "ownerReferences": owner("Deployment", deployment),
                },
                "spec": {
                    "replicas": workload.pods,
                    "selector": {"matchLabels": rs_labels},
                    "template": rs_pod,
                },
            },
        )
        rs_pod["metadata"]["ownerReferences"] = owner("ReplicaSet", replicaset)
        return rs_pod, replicaset["metadata"]["name"]

    async def shapes(self, planned: list[Planned]) -> list[Shape]:
        """Every workload's pods to create, its owners created meanwhile."""
        shapes = []
        for workload in planned:
            if workload.kind == "Deployment":
                pod, base = await self.owners(workload)
                names = [f"{base}-{suffix(i * 7919 + 13)}" for i in range(workload.pods)]
                generate_name = f"{base}-"
            else:
                pod = app_pod(workload.name, {"app": "tools", "version": "2.14.1"})
                names, generate_name = [workload.name], ""
            template = self.old if workload.stale else self.current
            sidecar = injected(
                pod, template, namespace=workload.namespace, generate_name=generate_name
            )
            if not generate_name:
                del sidecar["metadata"]["generateName"]
            shapes.append(
                Shape(
                    f"/api/v1/namespaces/{workload.namespace}/pods",
                    names,
                    sidecar,
                    pod,
                    workload.missing,
                )
            )
        return shapes

    async def pods(self, shapes: list[Shape]) -> int:
        """Create them, CONCURRENCY requests at a time; how many were created."""
        created = 0
        bodies = (body for shape in shapes for body in shape.bodies())

        async def worker() -> None:
            nonlocal created
            for path, body in bodies:  # one shared iterator: each body is taken once
                await self.kube.create(path, body)
                created += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return created


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False, cwd=ROOT)
    return time.perf_counter() - started, done


def check_status(output: bytes, planned: list[Planned], *, current: str, old: str) -> list[str]:
    """Where `status -o json` differs from what was created (empty: it matches)."""
    report = json.loads(output)
    said = Counter(
        (
            w["namespace"],
            w["kind"],
            w["name"],
            w["pods"],
            json.dumps(w["revisions"], sort_keys=True),
            w["state"],
        )
        for w in report["workloads"]
    )
    wanted = Counter(p.expected(current=current, old=old) for p in planned)
    problems = [f"not reported: {w}" for w in wanted - said]
    problems += [f"reported, not created: {w}" for w in said - wanted]
    if report["template"]["revision"] != current:
        problems.append(f"live revision {report['template']['revision']}, expected {current}")
    return problems


async def create_namespaces(plane: ControlPlane, planned: list[Planned]) -> None:
    async with Kube(plane.credentials) as kube:
        await prepare(kube, sorted({p.namespace for p in planned}))


async def create_all(plane: ControlPlane, planned: list[Planned]) -> tuple[float, int, int]:
    """Create the owners and the pods; (seconds spent creating pods, pods created, one pod's size as the
    API server returns it, in bytes)."""
    current, old = load_template(GOOD), load_template(OLD)
    async with Kube(plane.credentials, timeout=120) as kube:
        creator = Creator(kube, current=current, old=old)
        shapes = await creator.shapes(planned)
        started = time.perf_counter()
        created = await creator.pods(shapes)
        seconds = time.perf_counter() - started
        listed = await kube.get("/api/v1/pods", limit="1")
        total = 1 + int(listed["metadata"].get("remainingItemCount", 0))
        assert total == created, (total, created)
        one = listed["items"][0]
        size = len(json.dumps(one, separators=(",", ":")))
    return seconds, created, size


class _Continue(msgspec.Struct):
    metadata: dict[str, Any]


async def download_pods(plane: ControlPlane) -> tuple[float, int]:
    """Seconds to read every page of pods as status asks for them, and the bytes read:
    what the API server and the connection cost, without parsing (msgspec only finds
    each page's continue token)."""
    total, token = 0, ""
    started = time.perf_counter()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=plane.credentials.ssl_context())
    ) as session:
        while True:
            params = {"limit": str(LIST_PAGE)} | ({"continue": token} if token else {})
            async with session.get(f"{plane.credentials.server}/api/v1/pods", params=params) as r:
                body = await r.read()
            total += len(body)
            token = msgspec.json.decode(body, type=_Continue).metadata.get("continue") or ""
            if not token:
                return time.perf_counter() - started, total


def etcd_db_mib(workdir: Path) -> float:
    return (workdir / "plane" / "etcd" / "member" / "snap" / "db").stat().st_size / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--pods", type=int, default=PODS, help=f"pods to create ({PODS:,})")
    args = parser.parse_args()
    planned = plan(args.pods)
    current, old = load_template(GOOD).revision, load_template(OLD).revision
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
        running_control_plane(
            Path(tmp) / "plane", find_binaries(), controllers=CONTROLLERS, stand_in_node=False
        ) as plane,
    ):
        started = time.perf_counter()
        asyncio.run(create_namespaces(plane, planned))
        # the watch's own cost: leading, listing and watching no pod
        idle = measure_injector(plane, Path(tmp) / "injector-idle", watch=True, pods=0, injected=0)
        seconds, created, size = asyncio.run(create_all(plane, planned))
        setup = time.perf_counter() - started
        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
        status = [sys.executable, "-m", "injector", "status", "-A", "-o", "json"]
        status += [f"--configmap={DEFAULT_CONFIGMAP}"]
        status_runs, download_runs, problems = [], [], []
        for _ in range(STATUS_RUNS):  # interleaved, so a noisy moment hits both
            wall, done = timed(status, env)
            if done.returncode not in (0, 1):
                raise SystemExit(f"status failed ({done.returncode}): {done.stderr.decode()}")
            status_runs.append(wall)
            problems = check_status(done.stdout, planned, current=current, old=old)
            output = len(done.stdout)
            download, listed = asyncio.run(download_pods(plane))
            download_runs.append(download)
        workloads = Counter(p.expected(current=current, old=old)[-1] for p in planned)
        stale_pods = sum(p.pods for p in planned if p.stale and not p.missing)
        missing_pods = sum(p.missing for p in planned)
        print(f"Control plane: kube-apiserver {plane.version}, etcd --unsafe-no-fsync, loopback.")
        print(
            f"Created {created:,} pods in {len(planned):,} workloads "
            f"({', '.join(f'{n:,} {s}' for s, n in sorted(workloads.items()))}; "
            f"{stale_pods:,} stale pods, {missing_pods} missing) over "
            f"{len({p.namespace for p in planned})} namespaces in {seconds:.1f} s "
            f"({created / seconds:,.0f} pods/s at {CONCURRENCY} concurrent POSTs; "
            f"setup in all {setup:.1f} s). One pod as the API server returns it: {size:,} B of "
            f"JSON. etcd's db: {etcd_db_mib(Path(tmp)):.0f} MiB.\n"
        )
        print("| command | runs (s) | best (s) | output |")
        print("|---|---|---|---|")
        runs = ", ".join(f"{s:.2f}" for s in status_runs)
        print(
            f"| `mesher-injector status -A -o json` | {runs} | {min(status_runs):.2f} | "
            f"{output / 1e6:.1f} MB |"
        )
        runs = ", ".join(f"{s:.2f}" for s in download_runs)
        print(
            f"| floor: every page of pods read (limit {LIST_PAGE}), in-process, not parsed | "
            f"{runs} | {min(download_runs):.2f} | {listed / 1e6:.0f} MB read |"
        )
        verdict = "met" if min(status_runs) <= STATUS_GOAL_S else "NOT met"
        print(f"\nstatus within {STATUS_GOAL_S:.0f} s: {verdict}.")
        if problems:
            print(f"status counts differ from what was created ({len(problems)}):")
            for problem in problems[:20]:
                print(f"  {problem}")
        else:
            print("status counts match what was created, workload by workload.")
        injected_pods = created - missing_pods
        print(
            "\n| `serve` (ConfigMap source) | start -> every pod counted | template edit -> "
            "every injected pod stale | peak RSS (VmHWM) | RSS after |"
        )
        print("|---|---|---|---|---|")
        peaks = {}
        for watch in (True, False):
            run = measure_injector(
                plane,
                Path(tmp) / f"injector-{watch}",
                watch=watch,
                pods=created,
                injected=injected_pods,
            )
            peaks[watch] = run.peak_mib
            print(
                f"| --rollout-watch={str(watch).lower()} | {run.counted} | {run.stale} | "
                f"{run.peak_mib:.1f} MiB | {run.rss_mib:.1f} MiB |"
            )
        print(
            f"| --rollout-watch=true, before any pod was created | - | - | "
            f"{idle.peak_mib:.1f} MiB | {idle.rss_mib:.1f} MiB |"
        )
        verdict = "met" if peaks[True] < RSS_GOAL_MIB else "NOT met"
        per_pod = (peaks[True] - peaks[False]) * 2**20 / created
        per_tracked = (peaks[True] - idle.peak_mib) * 2**20 / created
        print(
            f"\nThe injector with the watch under {RSS_GOAL_MIB:.0f} MiB: {verdict}. Per pod: "
            f"(peak on - peak off) / pods = {per_pod:,.0f} B; (peak on - peak on with no pod) "
            f"/ pods = {per_tracked:,.0f} B."
        )


@dataclass(frozen=True, slots=True)
class InjectorRun:
    counted: str  # seconds from start until every pod is counted, or "-"
    stale: str  # seconds from the edit until every injected pod counts as stale, or "-"
    peak_mib: float
    rss_mib: float


def measure_injector(
    plane: ControlPlane, workdir: Path, *, watch: bool, pods: int, injected: int
) -> InjectorRun:
    """`serve` with the ConfigMap source (the watch on or off) from start to an edit of
    the template taken (and, with the watch, counted); the template is put back after."""
    started = time.perf_counter()
    with running_injector(
        workdir,
        configmap=DEFAULT_CONFIGMAP,
        kubeconfig=plane.kubeconfig,
        args=[f"--rollout-watch={str(watch).lower()}"],
        env={"POD_NAME": "bench-injector-0"},
    ) as local:
        assert local.process is not None
        live = Live(plane, local, system=INJECTOR_NAMESPACE)
        counted = stale = "-"
        if watch:
            wait_for(lambda: leads(local.admin) and counts(local.admin)[""] == pods)
            counted = f"{time.perf_counter() - started:.1f} s"
        else:
            time.sleep(SETTLE_S)  # what the watch would have listed meanwhile, it does not
        edited = time.perf_counter()
        live.put_template(EDIT)
        if watch:
            wait_for(lambda: counts(local.admin)["stale"] == injected)
            stale = f"{time.perf_counter() - edited:.1f} s"
        peak = status_mib(local.process.pid, "VmHWM")
        rss = status_mib(local.process.pid, "VmRSS")
        live.put_template(GOOD)
    return InjectorRun(counted=counted, stale=stale, peak_mib=peak, rss_mib=rss)


def counts(admin: str) -> Counter[str]:
    """mesher_injector_pods summed by state, and in all (key "")."""
    found: Counter[str] = Counter()
    for labels, value in samples(admin, "mesher_injector_pods"):
        found[labels["state"]] += int(value)
        found[""] += int(value)
    return found


def wait_for(done: Callable[[], bool], limit: float = COUNT_LIMIT_S) -> None:
    deadline = time.monotonic() + limit
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"not done within {limit:.0f} s")
        time.sleep(0.2)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
