"""`mesher-injector status` and `restart` (and what `diff` shares with them): the CLI
wiring of injector.core.workloads and injector.core.restart (what to think) and
injector.kube (what to ask the API server)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp

from injector.cli.flags import duration, positive_int
from injector.core.names import DEFAULT_CONFIGMAP, INJECTOR_NAMESPACE, NEVER_INJECTED
from injector.core.restart import (
    MANUAL_ACTION,
    RestartRun,
    Unhealthy,
    live_templates,
    plan_restarts,
    template_problem,
)
from injector.core.settings import ConfigMapRef
from injector.core.template import Template
from injector.core.workloads import Workload, render_table, report_json, workloads
from injector.kube.kubeconfig import missing_kubeconfig

# kubernetes_asyncio (a third of the injector's start-up) is imported when a cluster
# command runs (run, survey and restart's loop), never by `serve` or `inject`, which
# build this module's parsers.
if TYPE_CHECKING:
    from kubernetes_asyncio.client.exceptions import ApiException

    from injector.kube.cluster import Cluster

EXIT_OK, EXIT_ATTENTION, EXIT_ERROR = 0, 1, 2


class ClusterError(Exception):
    """No cluster, forbidden, not found: one line, exit 2."""


def scope_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="one namespace (default: the kubeconfig's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    parser.add_argument("-l", "--selector", default="", help="pod label selector")
    parser.add_argument(
        "--configmap",
        default=DEFAULT_CONFIGMAP,
        help=f"NAMESPACE/NAME of the template ConfigMap (default {DEFAULT_CONFIGMAP}); the "
        "injector Deployment is looked for in the same namespace",
    )
    parser.add_argument(
        "--kube-api-server", default="", help="API server URL (default: the kubeconfig)"
    )


def add_parsers(sub: Any) -> None:
    status = sub.add_parser(
        "status",
        help="which workloads carry an old template revision or miss their sidecar, and why",
        description="Compare every meshed workload's pods with the live template's revision. "
        "Exit 0: all current; 1: something stale or missing; 2: error.",
    )
    scope_arguments(status)
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    restart = sub.add_parser(
        "restart",
        help="rollout-restart the stale or missing workloads, one at a time, while injection "
        "is healthy",
        description="Restart (like kubectl rollout restart) the Deployments, StatefulSets and "
        "DaemonSets that status reports stale or missing, waiting for each rollout. Stops "
        "before touching anything while the injector has no available replica or the live "
        "template is invalid. Bare pods and Jobs are listed, never deleted.",
    )
    scope_arguments(restart)
    restart.add_argument(
        "--parallel", type=positive_int, default=1, help="workloads rolled at once"
    )
    restart.add_argument(
        "--timeout",
        type=duration,
        default="90s",
        help="per workload rollout, e.g. 90s, 5m (default 90s)",
    )
    restart.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    restart.add_argument("--poll-interval", type=float, default=1.0, help=argparse.SUPPRESS)


class Survey(NamedTuple):
    template: Template  # the live default template
    named: Mapping[str, Template]  # the live named templates that validate
    sidecar_names: frozenset[str]  # of every live template's containers
    excluded_namespaces: frozenset[str]  # never injected: kube-system, the injector's own...
    found: list[Workload]


async def survey(cluster: Cluster, args: argparse.Namespace, ref: ConfigMapRef) -> Survey:
    """The live templates and every meshed workload compared with the template its pods
    asked for; Unhealthy when the live default template is invalid."""
    from injector.kube.cluster import kubeconfig_namespace

    live = live_templates(await cluster.configmap_data(ref), key=ref.key)
    template = live.template
    if template is None:
        raise Unhealthy(template_problem(live, ref))
    namespace = None if args.all_namespaces else (args.namespace or kubeconfig_namespace())
    snapshot = await cluster.snapshot(namespace=namespace, selector=args.selector)
    sidecar_names = template.sidecar_names.union(*(t.sidecar_names for t in live.named.values()))
    excluded = NEVER_INJECTED | {ref.namespace}
    found = workloads(
        snapshot,
        revision=template.revision,
        named_revisions={name: t.revision for name, t in live.named.items()},
        sidecar_names=sidecar_names,
        excluded_namespaces=excluded,
    )
    return Survey(template, live.named, sidecar_names, excluded, found)


def run(
    args: argparse.Namespace, body: Callable[[Cluster, ConfigMapRef], Coroutine[Any, Any, int]]
) -> int:
    from kubernetes_asyncio.client.exceptions import ApiException

    from injector.kube.cluster import Cluster
    from injector.kube.configmap import api_client_for

    async def main() -> int:
        ref = ConfigMapRef.parse(args.configmap, default_namespace=INJECTOR_NAMESPACE)
        api = await api_client_for(args.kube_api_server)
        try:
            return await body(Cluster(api), ref)
        finally:
            await api.close()

    try:
        return asyncio.run(main())
    except ApiException as exc:
        raise ClusterError(_api_error(exc)) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise ClusterError(f"cannot reach the API server: {exc}") from exc
    except ValueError as exc:
        raise ClusterError(str(exc)) from exc


class NoLiveTemplate(Exception):
    """Why the cluster's template ConfigMap cannot be read: no kubeconfig, unreachable,
    forbidden, not found."""


LIVE_READ_TIMEOUT_S = 10.0  # inject asks once; a cluster that does not answer is none


def live_configmap_data(configmap: str, kube_api_server: str) -> tuple[object, ConfigMapRef]:
    """The template ConfigMap's data as the current context's API server has it, as
    `istioctl kube-inject` reads the live injector config; NoLiveTemplate saying why not."""
    from kubernetes_asyncio.client.exceptions import ApiException

    from injector.kube.cluster import Cluster
    from injector.kube.configmap import api_client_for

    ref = ConfigMapRef.parse(configmap, default_namespace=INJECTOR_NAMESPACE)
    if not (kube_api_server or os.environ.get("KUBERNETES_SERVICE_HOST")):
        missing = missing_kubeconfig()
        if missing:
            raise NoLiveTemplate(missing)

    async def read() -> object:
        api = await api_client_for(kube_api_server)
        try:
            return await asyncio.wait_for(Cluster(api).configmap_data(ref), LIVE_READ_TIMEOUT_S)
        finally:
            await api.close()

    try:
        return asyncio.run(read()), ref
    except ApiException as exc:
        raise NoLiveTemplate(f"configmap {ref.namespace}/{ref.name}: {_api_error(exc)}") from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise NoLiveTemplate(f"cannot reach the API server: {exc or 'no answer'}") from exc
    except ValueError as exc:
        raise NoLiveTemplate(str(exc)) from exc


def _api_error(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message") or exc.reason
    except ValueError:
        message = exc.reason
    what = {401: "unauthorized", 403: "forbidden", 404: "not found"}.get(exc.status, "error")
    return f"{what} (HTTP {exc.status}): {message}"


def run_status(args: argparse.Namespace) -> int:
    async def body(cluster: Cluster, ref: ConfigMapRef) -> int:
        try:
            surveyed = await survey(cluster, args, ref)
        except Unhealthy as exc:
            raise ClusterError(str(exc)) from exc
        template, found = surveyed.template, surveyed.found
        if args.output == "json":
            report = report_json(
                found,
                configmap=f"{ref.namespace}/{ref.name}",
                revision=template.revision,
                version=template.version,
            )
            print(json.dumps(report, indent=2))
        else:
            print(
                f"template {ref.namespace}/{ref.name}: revision {template.revision}, "
                f"version {template.version or '(none)'}"
            )
            if found:
                sys.stdout.write(render_table(found))
            else:
                print("no pod asks for mesher here")
        return EXIT_OK if all(w.state == "current" for w in found) else EXIT_ATTENTION

    return run(args, body)


def run_restart(args: argparse.Namespace) -> int:
    timeout: float = args.timeout.seconds

    async def body(cluster: Cluster, ref: ConfigMapRef) -> int:
        from injector.kube.restart import execute

        try:
            surveyed = await survey(cluster, args, ref)
        except Unhealthy as exc:
            print(f"not restarting anything: {exc}")
            return EXIT_ATTENTION
        template, found = surveyed.template, surveyed.found
        plan = plan_restarts(found)
        print(f"template {ref.namespace}/{ref.name}: revision {template.revision}")
        for w in plan.restart:
            print(f"to restart: {w.kubectl_name} ({w.state})")
        for w in plan.manual:
            print(f"manual: {w.kubectl_name}: {MANUAL_ACTION[w.kind]}")
        for w in plan.skipped:
            print(f"not restarted (a restart cannot help): {w.kubectl_name}: {w.why}")
        if not plan.restart:
            print("nothing to restart")
            return EXIT_OK
        if args.dry_run:
            print("dry run: nothing changed")
            return EXIT_OK
        run = RestartRun.start(plan, ref=ref, parallel=args.parallel, rollout_timeout=timeout)
        stop = await execute(run, cluster, say=print, interval=args.poll_interval)
        if stop.unhealthy:
            print(f"stopped, nothing more restarted: {stop.unhealthy}")
            return EXIT_ATTENTION
        if stop.late:
            names = ", ".join(w.kubectl_name for w in stop.late)
            print(f"stopped: the rollout of {names} did not complete within {args.timeout.text}")
            return EXIT_ATTENTION
        print("done: every restartable workload rolled out")
        return EXIT_OK

    return run(args, body)
