"""Manual injection: manifests in, manifests out (pure; decisions come from `decide`).

Pods, the pod templates of Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and
CronJob, and the items of a List are injected; every other document passes through.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jsonpatch
import yaml

from injector.core import annotations as ann
from injector.core.decide import decide
from injector.core.names import NEVER_INJECTED
from injector.core.outcomes import Outcome
from injector.core.reviews import BadReview
from injector.core.template import Template

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


class _NoAliasDumper(yaml.SafeDumper):
    """Plain YAML: no &anchors / *aliases where one object appears twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class ManualInjectionError(ValueError):
    """A document was denied or the input is not YAML manifests."""


@dataclass(frozen=True, slots=True)
class Report:
    """One pod (or pod template) that was looked at, and what was decided."""

    where: str
    outcome: Outcome


def inject_documents(
    text: str,
    template: Template,
    *,
    named: Mapping[str, Template] = MappingProxyType({}),
    excluded_namespaces: frozenset[str] = NEVER_INJECTED,
) -> tuple[str, list[Report]]:
    """Inject every pod in a (multi-document) YAML text; raise on a denial or bad YAML."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ManualInjectionError(
            f"input is not valid YAML: {' '.join(str(exc).split())}"
        ) from exc
    reports: list[Report] = []

    def decider(request: Mapping[str, Any]) -> Outcome:
        return decide(request, template, named=named, excluded_namespaces=excluded_namespaces)

    out = [_inject(doc, decider, reports, f"document {n + 1}") for n, doc in enumerate(documents)]
    denied = [r for r in reports if r.outcome.decision == "denied"]
    if denied:
        raise ManualInjectionError(
            "; ".join(
                f"{r.where}: denied ({r.outcome.reason}): {r.outcome.message}" for r in denied
            )
        )
    return yaml.dump_all(
        out, Dumper=_NoAliasDumper, sort_keys=False, explicit_start=len(out) > 1
    ), reports


Decider = Callable[[Mapping[str, Any]], Outcome]


def _inject(doc: Any, decider: Decider, reports: list[Report], where: str) -> Any:
    if not isinstance(doc, dict):
        return doc
    kind = doc.get("kind")
    name = (doc.get("metadata") or {}).get("name") or "?"
    label = f"{where} ({kind}/{name})"
    if kind == "List":
        doc = copy.deepcopy(doc)
        doc["items"] = [
            _inject(item, decider, reports, f"{label} item {i + 1}")
            for i, item in enumerate(doc.get("items") or [])
        ]
        return doc
    if kind == "Pod":
        return _inject_pod(doc, doc, decider, reports, label)
    holder = next(_pod_template_holders(doc), None)
    if holder is None:
        return doc
    return _inject_pod(doc, holder, decider, reports, label)


def _pod_template_holders(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return
    if doc.get("kind") in WORKLOAD_KINDS and isinstance(spec.get("template"), dict):
        yield spec["template"]
    elif doc.get("kind") == "CronJob":
        job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        if isinstance(job_spec.get("template"), dict):
            yield job_spec["template"]


def _inject_pod(
    doc: dict[str, Any],
    holder: dict[str, Any],
    decider: Decider,
    reports: list[Report],
    label: str,
) -> dict[str, Any]:
    """Decide for the pod (or pod template) `holder` inside `doc`; return a patched copy of doc."""
    doc_meta = doc.get("metadata") or {}
    namespace = doc_meta.get("namespace") or "default"
    pod_meta = dict(holder.get("metadata") or {})
    if holder is not doc and not pod_meta.get("name") and doc_meta.get("name"):
        # A workload's pods are named after it; this gives service.name the workload's name.
        pod_meta["generateName"] = f"{doc_meta['name']}-"
    if doc.get("kind") in ("Job", "CronJob") and doc_meta.get("name"):
        # Its pods will belong to a Job: the same warning as at admission (classic mode).
        pod_meta["ownerReferences"] = [
            {"kind": "Job", "name": str(doc_meta["name"]), "controller": True}
        ]
    pod = {"metadata": pod_meta, "spec": holder.get("spec") or {}}
    request = {
        "uid": "manual",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "namespace": namespace,
        "object": pod,
    }
    annotations = pod_meta.get("annotations")
    for key in ann.KEYS:
        value = annotations.get(key) if isinstance(annotations, dict) else None
        if value is not None and not isinstance(value, str):
            shown = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...")
            raise ManualInjectionError(
                f"{label}: {key} is the YAML {type(value).__name__} {shown.strip()}, not text: "
                f'quote it, e.g. {key}: "yes" (unquoted yes, no, true and on are booleans)'
            )
    try:
        outcome = decider(request)
    except BadReview as exc:
        raise ManualInjectionError(f"{label}: {exc}") from exc
    reports.append(Report(where=label, outcome=outcome))
    if not outcome.patch:
        return doc
    # The patch shares the template's cached render: copy before building documents from it.
    patched = copy.deepcopy(jsonpatch.apply_patch(pod, outcome.operations()))
    result = copy.deepcopy(doc)
    target = result if holder is doc else next(_pod_template_holders(result))
    if not isinstance(target.get("metadata"), dict):
        target["metadata"] = {}
    target["metadata"]["annotations"] = patched["metadata"]["annotations"]
    target["spec"] = patched["spec"]
    return result
