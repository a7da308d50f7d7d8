"""Manual injection: manifests in, manifests out (pure; decisions come from `decide`).

Pods, the pod templates of Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and
CronJob, and the items of a List are injected. A stream is split into documents on its
`---` lines, as kubectl splits it; every document that gets no sidecar is passed through
byte for byte (comments included), an empty one is dropped, and an injected one is
written anew (its comments are lost). JSON in, JSON out.
"""

from __future__ import annotations

import json
import re
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
# The kinds whose documents hold a pod (`pod_holder`): what `diff` reads of the cluster.
POD_KINDS = WORKLOAD_KINDS | {"CronJob", "Pod"}
# A line starting a YAML document: where kubectl's reader splits a stream.
_DOCUMENT_START = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: a 4 MB stream in a second


class _NoAliasDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
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


Decider = Callable[[Mapping[str, Any]], Outcome]


def inject_documents(
    text: str,
    template: Template,
    *,
    named: Mapping[str, Template] = MappingProxyType({}),
    excluded_namespaces: frozenset[str] = NEVER_INJECTED,
    source: str = "input",
) -> tuple[str, list[Report]]:
    """Inject every pod in a (multi-document) YAML or JSON text; raise on a denial or on
    input that does not parse (naming `source`, its line and column)."""
    reports: list[Report] = []
    decider = decider_for(template, named=named, excluded_namespaces=excluded_namespaces)
    if text.lstrip().startswith(("{", "[")):
        try:
            document = json.loads(text)
        except ValueError:
            document = None  # not JSON after all: YAML (flow style) below
        else:
            injected, changed = _inject(document, decider, reports, "document 1")
            _raise_denied(reports)
            return (json.dumps(injected, indent=2) + "\n" if changed else text), reports
    out: list[str] = []
    for number, (line, chunk) in enumerate(_documents(text), start=1):
        try:
            document = yaml.load(chunk, Loader=_LOADER)
        except yaml.YAMLError as exc:
            raise ManualInjectionError(_yaml_error(exc, source, line)) from exc
        if document is None and not _has_comments(chunk):
            continue  # an empty document: dropped, as kubectl drops it
        injected, changed = _inject(document, decider, reports, f"document {number}")
        if not changed:
            out.append(chunk)  # only the last can lack its final newline: kept so
            continue
        start = "---\n" if out or chunk.startswith("---") else ""
        out.append(start + yaml.dump(injected, Dumper=_NoAliasDumper, sort_keys=False))
    _raise_denied(reports)
    return "".join(out), reports


def _documents(text: str) -> Iterator[tuple[int, str]]:
    """(first line, text) of each document of a stream, its `---` line included."""
    starts = [m.start() for m in _DOCUMENT_START.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    line = 1
    for index, begin in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(text)
        chunk = text[begin:end]
        if chunk:
            yield line, chunk
        line += chunk.count("\n")


def _has_comments(chunk: str) -> bool:
    return any(line.lstrip().startswith("#") for line in chunk.splitlines())


def _yaml_error(exc: yaml.YAMLError, source: str, first_line: int) -> str:
    """A YAML error as `SOURCE:LINE:COLUMN: what`, lines counted in the whole stream."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    what = f"{context}: {problem}" if context else problem
    if mark is None:
        return f"{source}: not valid YAML: {what}"
    return f"{source}:{first_line + mark.line}:{mark.column + 1}: not valid YAML: {what}"


def _raise_denied(reports: list[Report]) -> None:
    denied = [r for r in reports if r.outcome.decision == "denied"]
    if denied:
        raise ManualInjectionError(
            "; ".join(
                f"{r.where}: denied ({r.outcome.reason}): {r.outcome.message}" for r in denied
            )
        )


def _inject(doc: Any, decider: Decider, reports: list[Report], where: str) -> tuple[Any, bool]:
    """The document with its pods injected (changed in place), and whether any was."""
    if not isinstance(doc, dict):
        return doc, False
    kind = doc.get("kind")
    name = (doc.get("metadata") or {}).get("name") or "?"
    label = f"{where} ({kind}/{name})"
    if kind == "List":
        changed = False
        for i, item in enumerate(doc.get("items") or []):
            changed |= _inject(item, decider, reports, f"{label} item {i + 1}")[1]
        return doc, changed
    holder = pod_holder(doc)
    if holder is None:
        return doc, False
    pod, outcome = decide_pod(doc, holder, decider, label=label)
    reports.append(Report(where=label, outcome=outcome))
    if not outcome.patch:
        return doc, False
    # The operations are fresh objects (parsed from the patch's bytes): apply them in place.
    patched = jsonpatch.apply_patch(pod, outcome.operations(), in_place=True)
    if not isinstance(holder.get("metadata"), dict):
        holder["metadata"] = {}
    holder["metadata"]["annotations"] = patched["metadata"]["annotations"]
    holder["spec"] = patched["spec"]
    return doc, True


def decider_for(
    template: Template,
    *,
    named: Mapping[str, Template] = MappingProxyType({}),
    excluded_namespaces: frozenset[str] = NEVER_INJECTED,
) -> Decider:
    """The webhook's decision on a pod's admission request, with these templates."""

    def decider(request: Mapping[str, Any]) -> Outcome:
        return decide(request, template, named=named, excluded_namespaces=excluded_namespaces)

    return decider


def pod_holder(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """What gets the sidecar in a document: the Pod itself, a workload's pod template;
    None for any other document."""
    kind, spec = doc.get("kind"), doc.get("spec")
    if kind == "Pod" and isinstance(doc, dict):
        return doc
    if not isinstance(spec, dict):
        return None
    template = spec.get("template") if kind in WORKLOAD_KINDS else None
    if kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    return template if isinstance(template, dict) else None


def decide_pod(
    doc: Mapping[str, Any], holder: Mapping[str, Any], decider: Decider, *, label: str
) -> tuple[dict[str, Any], Outcome]:
    """The pod the API server would send for `holder` (the Pod `doc`, or `doc`'s pod
    template: `pod_holder`), and the decision on it. The pod's spec is `holder`'s own
    (applying the patch in place changes it). ManualInjectionError names `label` for an
    annotation that is not text or a pod that is no Pod."""
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
    except BadReview as exc:  # worded for an AdmissionReview: say where in the document
        where = "the Pod" if holder is doc else "its pod template"
        message = str(exc).replace("request.object is not a valid Pod", f"{where} is not valid")
        raise ManualInjectionError(f"{label}: {message}") from exc
    return pod, outcome
