"""`mesher-injector diff` (pure): one workload's pod rendered with the webhook's own code
under the live template and under a new one, and what would change in what injection
adds to it: the sidecar containers (image, command, env, ports, resources, probes, the
files a discovery type writes), the env added to app containers, volumes and pull
secrets.

A pod is rendered by `manual.decide_pod` (the request `inject -f` builds, decided by
`decide`) and the patch applied; what the patch added is read back by name, so two
renders compare item by item, whatever order the patch put them in.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jsonpatch

from injector.core import annotations as ann
from injector.core.manual import (
    POD_KINDS,
    Decider,
    ManualInjectionError,
    decide_pod,
    pod_holder,
)
from injector.core.outcomes import Outcome
from injector.core.sidecar import files_of
from injector.core.workloads import metadata_of, pod_state

Verdict = Literal["changed", "unchanged", "denied", "not-compared"]
VERDICTS: tuple[Verdict, ...] = ("changed", "unchanged", "denied", "not-compared")
CONTAINER_GROUPS = ("initContainers", "containers")
POD_LISTS = ("volumes", "imagePullSecrets")
# The fields that name an item of a list, tried in order: the first that every item has,
# each a different value, keys the list (env by name, volumeMounts by mountPath...).
_ITEM_KEYS = ("name", "mountPath", "containerPort")
_DIFF_CONTEXT_LINES = 1


@dataclass(frozen=True, slots=True)
class Change:
    """One value of what injection adds, under the live template (`old`) and under the new
    one (`new`); None where it is absent."""

    path: str  # e.g. containers[mesher].env[VERSION], volumes[certs].secret.secretName
    old: str | None
    new: str | None

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True)
class Preview:
    """What the new template would do to one workload's next pods."""

    verdict: Verdict
    template: str  # the template its pods ask for (the default's name, or a named one)
    changes: tuple[Change, ...] = ()
    reason: str = ""  # the webhook's reason, for denied (and not-compared, when it decided)
    why: str = ""  # for denied: the webhook's message; for not-compared: why not
    warnings: tuple[str, ...] = ()  # the new template's warnings the live one does not give

    def as_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "template": self.template,
            "reason": self.reason,
            "why": self.why,
            "warnings": list(self.warnings),
            "changes": [c.as_json() for c in self.changes],
        }


def preview(
    doc: Mapping[str, Any],
    *,
    live: Decider,
    new: Decider,
    sidecar_names: frozenset[str],
    label: str,
) -> Preview:
    """`doc` (a workload, or a bare Pod) rendered under `live` and under `new`. A bare pod
    is rendered as it was before injection (`uninjected`): it has no pod template."""
    holder = pod_holder(doc)
    if holder is None:
        kinds = ", ".join(sorted(POD_KINDS))
        why = f"the pods of a {doc.get('kind')} are not previewed (only those of {kinds})"
        return Preview("not-compared", "", why=why)
    asked = pod_state(holder, sidecar_names).template
    if holder is doc:
        doc = holder = uninjected(doc, sidecar_names=sidecar_names, live=live, label=label)
    try:
        before, before_added = _render(doc, holder, live, label)
        after, after_added = _render(doc, holder, new, label)
    except ManualInjectionError as exc:
        return Preview("not-compared", asked, why=str(exc))
    warnings = tuple(w for w in after.warnings if w not in before.warnings)
    if after.decision == "denied":
        return Preview("denied", asked, reason=after.reason, why=after.message, warnings=warnings)
    if "injected" not in (before.decision, after.decision):
        why = f"not injected under either template: {after.message}"
        return Preview("not-compared", asked, reason=after.reason, why=why)
    found = changes(before_added, after_added)
    if before.decision != after.decision:
        found.insert(0, Change("decision", _decision(before), _decision(after)))
    return Preview("changed" if found else "unchanged", asked, tuple(found), warnings=warnings)


def _decision(outcome: Outcome) -> str:
    return f"{outcome.decision} ({outcome.reason})"


def _render(
    doc: Mapping[str, Any], holder: Mapping[str, Any], decider: Decider, label: str
) -> tuple[Outcome, dict[str, Any]]:
    """The webhook's decision on the pod, and what its patch adds (`added`)."""
    pod, outcome = decide_pod(doc, holder, decider, label=label)
    if not outcome.patch:
        return outcome, {}
    injected = jsonpatch.apply_patch(pod, outcome.operations())  # a copy: `holder` stays
    return outcome, added(pod, injected)


def uninjected(
    pod: Mapping[str, Any], *, sidecar_names: frozenset[str], live: Decider, label: str
) -> dict[str, Any]:
    """A bare pod as it was before the webhook injected it, as near as its spec tells:
    without the containers named as a live sidecar and the injector's annotations, and
    without the volumes, pull secrets and app env the live template adds to such a pod
    (asked of the webhook on the pod without any of its own). A pod that carries no
    sidecar is returned as it is."""
    metadata = dict(metadata_of(pod))
    annotations = dict(metadata.get("annotations") or {})
    spec = dict(pod.get("spec") or {})
    kept = {
        group: [c for c in spec.get(group) or [] if c.get("name") not in sidecar_names]
        for group in CONTAINER_GROUPS
        if group in spec
    }
    carried = any(len(kept[g]) != len(spec[g] or []) for g in kept)
    if not carried and annotations.get(ann.STATUS) != ann.STATUS_INJECTED:
        return dict(pod)
    for key in (ann.STATUS, ann.TEMPLATE_REVISION):
        annotations.pop(key, None)
    metadata["annotations"] = annotations
    spec.update(kept)
    bare = {**pod, "metadata": metadata, "spec": spec}
    probe_spec = {key: value for key, value in spec.items() if key not in POD_LISTS}
    probe_spec["containers"] = [
        {key: value for key, value in c.items() if key != "env"} for c in spec["containers"]
    ]
    probe = {**bare, "spec": probe_spec}
    try:
        _, adds = _render(probe, probe, live, label)
    except ManualInjectionError:
        return bare  # the caller's own render says why
    for name in POD_LISTS:
        if name in spec:
            spec[name] = [i for i in spec[name] or [] if i.get("name") not in adds.get(name, {})]
    spec["containers"] = [
        _without_env(c, adds.get("containers", {}).get(c.get("name"), {}).get("env") or [])
        for c in spec["containers"]
    ]
    return bare


def _without_env(container: Mapping[str, Any], given: list[dict[str, Any]]) -> dict[str, Any]:
    drop = {e.get("name") for e in given}
    if not drop or not container.get("env"):
        return dict(container)
    return {**container, "env": [e for e in container["env"] if e.get("name") not in drop]}


def added(pod: Mapping[str, Any], injected: Mapping[str, Any]) -> dict[str, Any]:
    """What injection added to `pod` (`injected` is the pod it made), by name: under
    `containers`, each new container (init or not: `placement`; the files it writes apart,
    under `files`) and, for an app container, the env it was given; under `volumes` and
    `imagePullSecrets`, each new item."""
    spec, made = pod.get("spec") or {}, injected.get("spec") or {}
    own = {c.get("name"): c for group in CONTAINER_GROUPS for c in spec.get(group) or []}
    containers: dict[str, Any] = {}
    for group in CONTAINER_GROUPS:
        for container in made.get(group) or []:
            name = container.get("name")
            if name not in own:
                declared, files = files_of(container)
                placement = "init container" if group == "initContainers" else "container"
                containers[name] = {
                    "placement": placement,
                    **{k: v for k, v in declared.items() if k != "name"},
                    "files": files,
                }
                continue
            had = {e.get("name") for e in own[name].get("env") or []}
            env = [e for e in container.get("env") or [] if e.get("name") not in had]
            if env:
                containers[name] = {"env": env}
    result: dict[str, Any] = {"containers": containers}
    for name in POD_LISTS:
        had = {i.get("name") for i in spec.get(name) or []}
        result[name] = {i["name"]: i for i in made.get(name) or [] if i.get("name") not in had}
    return result


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """Every value that differs between two `added` results, in the order they appear
    (before's first, then what only after has)."""
    old, new = _leaves(before), _leaves(after)
    return [
        Change(path, old.get(path), new.get(path))
        for path in {**old, **new}
        if old.get(path) != new.get(path)
    ]


def _leaves(adds: Mapping[str, Any]) -> dict[str, str]:
    """An `added` result's values by path: `containers[mesher].image`,
    `containers[mesher].files[/tmp/chassis.yaml]`, `volumes[certs].secret.secretName`; an
    item with nothing but its name (a pull secret) is `present`."""
    leaves: dict[str, str] = {}
    for group, items in adds.items():
        for name, item in items.items():
            path = f"{group}[{name}]"
            fields = {k: v for k, v in item.items() if k not in ("name", "files")}
            leaves.update(_flatten(fields, path) if fields else {path: "present"})
            for file, text in (item.get("files") or {}).items():
                leaves[f"{path}.files[{file}]"] = text
    return leaves


def _flatten(node: object, path: str) -> dict[str, str]:
    """Leaves by path: a map's by key (`.key`), a list's by the field that names its items
    (`[name]`; an env entry's value is the entry's), any other list whole, as JSON."""
    if isinstance(node, list):
        key = _item_key(node)
        if key is None:
            return {path: json.dumps(node, sort_keys=True)}
        leaves: dict[str, str] = {}
        for item in node:
            rest = {k: v for k, v in item.items() if k != key}
            value = rest["value"] if set(rest) == {"value"} else rest or "present"
            leaves.update(_flatten(value, f"{path}[{item[key]}]"))
        return leaves
    if isinstance(node, dict) and node:
        leaves = {}
        for key, value in node.items():
            leaves.update(_flatten(value, f"{path}.{key}"))
        return leaves
    return {path: node if isinstance(node, str) else json.dumps(node)}


def _item_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in _ITEM_KEYS:
        values = [i.get(key) for i in items]
        if None not in values and len(set(map(str, values))) == len(values):
            return key
    return None


# --- output ---------------------------------------------------------------------------


def render_block(heading: str, found: Preview) -> str:
    """One workload's block: its heading, then each change `old -> new` (a text of many
    lines as a unified diff), or what else happened."""
    lines = [heading]
    if found.verdict == "denied":
        lines.append(f"  would be denied ({found.reason}): {found.why}")
    elif found.verdict == "not-compared":
        lines.append(f"  not compared: {found.why}")
    elif not found.changes:
        lines.append("  no change")
    for change in found.changes:
        lines += _change_lines(change)
    lines += [f"  warning: {w}" for w in found.warnings]
    return "\n".join(lines) + "\n"


def _change_lines(change: Change) -> list[str]:
    old, new = change.old, change.new
    if "\n" not in (old or "") + (new or ""):
        return [f"  {change.path}: {_shown(old)} -> {_shown(new)}"]
    what = "added" if old is None else "removed" if new is None else "changed"
    diff = difflib.unified_diff(
        (old or "").splitlines(),
        (new or "").splitlines(),
        lineterm="",
        n=_DIFF_CONTEXT_LINES,
    )
    return [f"  {change.path}: {what}"] + [f"      {line}" for line in list(diff)[2:]]


def _shown(value: str | None) -> str:
    return "(none)" if value is None else value or '""'


def verdicts(previews: Iterable[Preview]) -> dict[Verdict, int]:
    """How many of each verdict (every one, 0 included)."""
    counts = Counter(p.verdict for p in previews)
    return {verdict: counts[verdict] for verdict in VERDICTS}


def summary(previews: Iterable[Preview]) -> str:
    """e.g. `3 workloads: 1 would change, 1 unchanged, 1 denied`."""
    counts = verdicts(previews)
    total = sum(counts.values())
    line = (
        f"{total} workload{'s' if total != 1 else ''}: {counts['changed']} would change, "
        f"{counts['unchanged']} unchanged, {counts['denied']} denied"
    )
    if counts["not-compared"]:
        line += f", {counts['not-compared']} not compared"
    return line
