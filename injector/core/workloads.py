"""Pods and their owners -> workloads and their sidecar state (pure).

`status` and `restart` read the cluster through `injector.kube.cluster`; what they make
of it is here (and, for `restart`'s plan and run, in `injector.core.restart`), computed
from the API server's own list answers (dicts), so it is tested on recorded lists alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from injector.core import annotations as ann
from injector.core.limits import MAX_NAMED_PODS
from injector.core.names import (
    DEFAULT_TEMPLATE_NAME,
    NAMESPACE_LABEL,
    NAMESPACE_LABEL_VALUE,
    NEVER_INJECTED,
)
from injector.core.pods import controller_of

State = Literal["current", "stale", "missing"]
RESTARTABLE = ("Deployment", "StatefulSet", "DaemonSet")
STATE_ORDER: dict[str, int] = {"missing": 0, "stale": 1, "current": 2}
_NO_NAMED: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the cluster holds: the items of the API server's list answers."""

    pods: list[dict[str, Any]]
    replicasets: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    namespaces: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Workload:
    namespace: str
    kind: str
    name: str
    pods: int
    revisions: dict[str, int]
    state: State
    why: str = ""
    fixable_by_restart: bool = True  # False: restarting cannot help (see why)
    # Pods without their sidecar that fail open (failurePolicy: Ignore), by name.
    fail_open_pods: tuple[str, ...] = ()

    @property
    def restartable(self) -> bool:
        return self.kind in RESTARTABLE and self.fixable_by_restart

    @property
    def kubectl_name(self) -> str:
        """As kubectl takes it: `deployment/web -n chassis`."""
        return f"{self.kind.lower()}/{self.name} -n {self.namespace}"

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "kind": self.kind,
            "name": self.name,
            "pods": self.pods,
            "revisions": self.revisions,
            "state": self.state,
            "why": self.why,
            "restartable": self.restartable,
            "fail_open_pods": list(self.fail_open_pods),
        }


def metadata_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """An object's metadata, or an empty mapping when it has none (or not a map)."""
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return str(metadata_of(obj).get("namespace", "")), str(metadata_of(obj).get("name", ""))


def _controller(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    return controller_of(metadata_of(obj))


def owner_of(
    pod: Mapping[str, Any],
    replicasets: Mapping[tuple[str, str], Mapping[str, Any]],
    jobs: Mapping[tuple[str, str], Mapping[str, Any]],
) -> tuple[str, str]:
    """The workload a pod belongs to, as (kind, name): a ReplicaSet's pods under their
    Deployment, a Job's under its CronJob, a bare pod as itself."""
    namespace, pod_name = _key(pod)
    owner = _controller(pod)
    if owner is None:
        return "Pod", pod_name
    kind, name = owner
    parents = {"ReplicaSet": replicasets, "Job": jobs}.get(kind)
    if parents is not None:
        parent = parents.get((namespace, name))
        grand = _controller(parent) if parent is not None else None
        if grand is not None and grand[0] in ("Deployment", "CronJob"):
            return grand
    return kind, name


@dataclass(frozen=True, slots=True)
class PodState:
    asked: bool  # the inject annotation has a value other than no/n
    injected: bool
    revision: str
    bad_value: str  # the inject annotation's value when it is not yes/y/no/n
    template: str = DEFAULT_TEMPLATE_NAME  # the template the pod asked for
    name: str = ""
    fails_open: bool = False  # failurePolicy: Ignore: admitted without mesher in an outage


def pod_state(pod: Mapping[str, Any], sidecar_names: frozenset[str]) -> PodState:
    annotations = metadata_of(pod).get("annotations") or {}
    raw = annotations.get(ann.INJECT) if isinstance(annotations, dict) else None
    choice = ann.parse_inject({ann.INJECT: raw} if isinstance(raw, str) else {})
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    names = {
        c.get("name")
        for group in ("containers", "initContainers")
        for c in (spec.get(group) or [])  # type: ignore[union-attr]
        if isinstance(c, dict)
    }
    status = annotations.get(ann.STATUS) if isinstance(annotations, dict) else None
    injected = status == ann.STATUS_INJECTED or bool(names & sidecar_names)
    revision = annotations.get(ann.TEMPLATE_REVISION, "") if isinstance(annotations, dict) else ""
    chosen = annotations.get(ann.TEMPLATE) if isinstance(annotations, dict) else None
    return PodState(
        asked=choice.requested or choice.warning is not None,
        injected=injected,
        revision=str(revision or ("unknown" if injected else "")),
        bad_value=str(raw) if choice.warning is not None else "",
        template=str(chosen).strip()
        if isinstance(chosen, str) and chosen.strip()
        else DEFAULT_TEMPLATE_NAME,
        name=str(metadata_of(pod).get("name") or ""),
        fails_open=isinstance(annotations, dict) and ann.fails_open(annotations),
    )


def verdict(injected: bool, revision: str, template: str, live: Mapping[str, str]) -> State:
    """One pod's state: `missing` without its sidecar, `stale` when it carries another
    revision than the live one of the template it asked for (`live`: name -> revision;
    a template the ConfigMap no longer has is stale too), else `current`. What `status`
    says of each pod and what the rollout watch counts."""
    if not injected:
        return "missing"
    return "current" if revision == live.get(template) else "stale"


def workloads(
    snapshot: Snapshot,
    *,
    revision: str,
    sidecar_names: frozenset[str],
    named_revisions: Mapping[str, str] = _NO_NAMED,
    excluded_namespaces: frozenset[str] = NEVER_INJECTED,
) -> list[Workload]:
    """Every workload with a pod that asked for mesher or carries it; missing first,
    then stale, then current. Each pod is compared with the template it asked for: the
    default (`revision`) or a named one (`named_revisions`). A terminating pod (one with
    a deletionTimestamp) is leaving: it is not counted, so a workload just rolled is
    current at once, not stale until its old pods are gone."""
    live = {**named_revisions, DEFAULT_TEMPLATE_NAME: revision}
    replicasets = {_key(r): r for r in snapshot.replicasets}
    jobs = {_key(j): j for j in snapshot.jobs}
    labelled = {
        str(metadata_of(n).get("name")): (metadata_of(n).get("labels") or {}).get(NAMESPACE_LABEL)
        == NAMESPACE_LABEL_VALUE
        for n in snapshot.namespaces
    }
    groups: dict[tuple[str, str, str], list[PodState]] = {}
    for pod in snapshot.pods:
        if metadata_of(pod).get("deletionTimestamp"):
            continue
        state = pod_state(pod, sidecar_names)
        if not (state.asked or state.injected):
            continue
        namespace = str(metadata_of(pod).get("namespace", ""))
        kind, name = owner_of(pod, replicasets, jobs)
        groups.setdefault((namespace, kind, name), []).append(state)
    found = [
        _workload(key, states, live, labelled.get(key[0]), excluded_namespaces)
        for key, states in groups.items()
    ]
    return sorted(found, key=lambda w: (STATE_ORDER[w.state], w.namespace, w.kind, w.name))


def _workload(
    key: tuple[str, str, str],
    states: list[PodState],
    live: Mapping[str, str],
    labelled: bool | None,
    excluded: frozenset[str],
) -> Workload:
    namespace, kind, name = key
    revisions = dict(Counter(s.revision for s in states if s.injected))
    verdicts = [(s, verdict(s.injected, s.revision, s.template, live)) for s in states]
    missing = [s for s, v in verdicts if v == "missing"]
    stale = [s for s, v in verdicts if v == "stale"]
    if missing:
        why, fixable = _why_missing(namespace, missing, labelled, excluded)
        state: State = "missing"
    elif stale:
        state, fixable = "stale", True
        gone = sorted({s.template for s in stale if s.template not in live})
        if gone:
            why = f"pods ask for template {', '.join(gone)}, which the ConfigMap does not have"
        else:
            old = sorted({s.revision for s in stale})
            wanted = sorted(
                {
                    live[s.template]
                    if s.template == DEFAULT_TEMPLATE_NAME
                    else f"{live[s.template]} ({s.template})"
                    for s in stale
                }
            )
            why = f"pods carry revision {', '.join(old)}; the live template is {', '.join(wanted)}"
    else:
        why, fixable, state = "", True, "current"
    return Workload(
        namespace=namespace,
        kind=kind,
        name=name,
        pods=len(states),
        revisions=revisions,
        state=state,
        why=why,
        fixable_by_restart=fixable,
        fail_open_pods=_failed_open(states),
    )


def _why_missing(
    namespace: str, missing: list[PodState], labelled: bool | None, excluded: frozenset[str]
) -> tuple[str, bool]:
    bad = next((s.bad_value for s in missing if s.bad_value), "")
    if bad:
        return (
            f'{ann.INJECT} is "{bad[:40]}": only "yes" or "y" inject (fix the annotation)',
            False,
        )
    if namespace in excluded:
        return f"namespace {namespace} is never injected", False
    if labelled is False:
        return (
            f"namespace {namespace} is not labelled {NAMESPACE_LABEL}={NAMESPACE_LABEL_VALUE} "
            f"(kubectl label namespace {namespace} {NAMESPACE_LABEL}={NAMESPACE_LABEL_VALUE})",
            False,
        )
    failed_open = _failed_open(missing)
    others = len(missing) - len(failed_open)
    why: list[str] = []
    if failed_open:
        why.append(
            f"{len(failed_open)} fail-open pod(s) created while the injector was unreachable "
            f"({ann.FAILURE_POLICY}: {ann.FAILS_OPEN}), or before the namespace was labelled: "
            f"{_first_names(failed_open)}"
        )
    if others:
        why.append(
            f"{others} pod(s) created while the injector was unreachable, or before the "
            "namespace was labelled"
        )
    return "; ".join(why), True


def _failed_open(states: list[PodState]) -> tuple[str, ...]:
    """The pods that failed open: admitted without their sidecar, by name."""
    return tuple(sorted(s.name for s in states if s.fails_open and not s.injected))


def _first_names(names: tuple[str, ...]) -> str:
    """`a, b, c and 2 more`: a WHY stays one readable line however many pods there are."""
    shown = ", ".join(names[:MAX_NAMED_PODS])
    more = len(names) - MAX_NAMED_PODS
    return f"{shown} and {more} more" if more > 0 else shown


# --- output ---------------------------------------------------------------------------


def report_json(
    found: list[Workload], *, configmap: str, revision: str, version: str
) -> dict[str, Any]:
    return {
        "template": {"configmap": configmap, "revision": revision, "version": version},
        "workloads": [w.as_json() for w in found],
    }


def render_table(found: list[Workload]) -> str:
    rows = [["NAMESPACE", "KIND", "NAME", "PODS", "REVISIONS", "STATE", "WHY"]]
    for w in found:
        revisions = ",".join(f"{r}:{n}" for r, n in sorted(w.revisions.items())) or "-"
        rows.append([w.namespace, w.kind, w.name, str(w.pods), revisions, w.state, w.why])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"
