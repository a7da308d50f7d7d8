"""Rollout progress (pure): pods' metadata -> how many pods run the live revision of the
template they asked for, an older one, or no sidecar at all, and for how long the
longest-stale pod has been stale. What the leader's pod watch (injector.kube.rollout)
keeps and exports; each pod is judged by the same `verdict` as `mesher-injector status`.

A tracked pod is kept small (the watch holds one per meshed pod in the cluster): its
namespace, template and revision strings are interned, so thousands of pods share them,
and a template name or revision that could not be ours is kept as a constant: any tenant
can annotate a pod, and the leader must hold a few hundred bytes per pod whatever it says.
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from injector.core.store import TemplateSet
from injector.core.template import valid_template_name
from injector.core.workloads import State, pod_state, verdict

# The label of a template name the ConfigMap does not have: not a possible key name.
UNKNOWN_TEMPLATE = "(unknown)"
UNKNOWN_REVISION = "unknown"  # as `status` shows a sidecar without a revision
REVISION = re.compile(r"[0-9a-f]{12}")  # what template.revision_of gives
NAMESPACE_MAX = 63  # a namespace's name is a DNS label
NO_SIDECAR: frozenset[str] = frozenset()  # metadata only: no containers to look at


@dataclass(frozen=True, slots=True)
class TrackedPod:
    namespace: str
    template: str
    revision: str  # "" when the pod has no sidecar
    created: float  # Unix time


@dataclass(frozen=True, slots=True)
class LiveTemplate:
    revision: str
    since: float  # when this revision became live here (Unix time)


@dataclass(frozen=True, slots=True)
class Tally:
    pods: dict[tuple[str, str, State], int]  # (namespace, template, state) -> pods
    # template -> since when its longest-stale pod has been stale (None: none is)
    stale_since: dict[str, float | None]

    def stale_oldest(self, now: float) -> dict[str, float]:
        """Per template, the seconds its longest-stale pod has been stale at `now`."""
        return {
            name: 0.0 if since is None else max(0.0, now - since)
            for name, since in self.stale_since.items()
        }


def live_templates(templates: TemplateSet) -> dict[str, LiveTemplate]:
    """Each active template's revision and when it took effect, by name."""
    return {
        name: LiveTemplate(revision=active.template.revision, since=active.loaded_at)
        for name, store in templates.stores().items()
        if (active := store.active) is not None
    }


def _created(metadata: Mapping[str, Any]) -> float:
    raw = metadata.get("creationTimestamp")
    try:
        when = datetime.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def tracked(metadata: Mapping[str, Any]) -> TrackedPod | None:
    """What the watch keeps of a pod (from its metadata alone), or None when the pod
    neither asked for mesher nor carries it, or is terminating (as `status` skips it)."""
    if metadata.get("deletionTimestamp"):
        return None
    state = pod_state({"metadata": metadata}, NO_SIDECAR)
    if not (state.asked or state.injected):
        return None
    revision = ""
    if state.injected:
        ours = REVISION.fullmatch(state.revision)
        revision = sys.intern(state.revision) if ours else UNKNOWN_REVISION
    return TrackedPod(
        namespace=sys.intern(str(metadata.get("namespace", ""))[:NAMESPACE_MAX]),
        template=sys.intern(state.template)
        if valid_template_name(state.template)
        else UNKNOWN_TEMPLATE,
        revision=revision,
        created=_created(metadata),
    )


def tally(pods: Iterable[TrackedPod], live: Mapping[str, LiveTemplate]) -> Tally:
    """Pods by (namespace, template, state), and per template since when its
    longest-stale pod has been stale: the later of its creation and the moment the live
    revision took effect. A template name the ConfigMap does not have is labelled
    `unknown` (pods choose the name: it must not mint series)."""
    revisions = {name: t.revision for name, t in live.items()}
    counts: dict[tuple[str, str, State], int] = {}
    stale_since: dict[str, float | None] = dict.fromkeys(live)
    for pod in pods:
        state = verdict(bool(pod.revision), pod.revision, pod.template, revisions)
        template = pod.template if pod.template in live else UNKNOWN_TEMPLATE
        key = (pod.namespace, template, state)
        counts[key] = counts.get(key, 0) + 1
        if state == "stale":
            took_effect = live[template].since if template in live else 0.0
            since = max(pod.created, took_effect)
            earliest = stale_since.get(template)
            stale_since[template] = since if earliest is None else min(earliest, since)
    return Tally(pods=counts, stale_since=stale_since)
