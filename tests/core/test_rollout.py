"""injector.core.rollout: what the rollout leader keeps of each pod and the tally it
exports, on recorded pods; each pod judged as `mesher-injector status` judges it."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from injector.core import annotations as ann
from injector.core.rollout import (
    UNKNOWN_TEMPLATE,
    LiveTemplate,
    TrackedPod,
    live_templates,
    tally,
    tracked,
)
from injector.core.store import TemplateSet
from injector.core.workloads import Snapshot, workloads
from tests.support.helpers import DEFAULT_TEMPLATE, recorded_items

EDITED_AT = 1_800_000_000.0  # when the live revision took effect
NEW, OLD = "0123456789ab", "ba9876543210"
LIVE = {"template": LiveTemplate(revision=NEW, since=EDITED_AT)}


def meshed_pods() -> list[dict[str, Any]]:
    """The recorded pods that asked for mesher, as a watch would see them in a cluster
    mid-rollout: one current, one stale, one with a revision-less sidecar, one missing."""
    pods = [p for p in recorded_items("pods") if ann.INJECT in p["metadata"].get("annotations", {})]
    for pod, revision in zip(pods, [NEW, OLD, None], strict=False):
        pod["metadata"]["annotations"][ann.STATUS] = ann.STATUS_INJECTED
        if revision:
            pod["metadata"]["annotations"][ann.TEMPLATE_REVISION] = revision
    return pods


def test_what_is_kept_of_a_pod_is_its_namespace_template_revision_and_age() -> None:
    kept = [tracked(p["metadata"]) for p in meshed_pods()]
    created = datetime.datetime(2026, 11, 26, 9, 6, 58, tzinfo=datetime.UTC)  # as recorded
    assert kept[0] == TrackedPod("chassis", "template", NEW, created=created.timestamp())
    # stale; injected without a revision (by hand); no sidecar
    assert [k.revision if k else None for k in kept[1:]] == [OLD, "unknown", ""]


def test_pods_that_never_asked_and_terminating_pods_are_not_kept() -> None:
    web = next(p for p in recorded_items("pods") if p["metadata"]["name"].startswith("web-"))
    assert tracked(web["metadata"]) is None
    leaving = copy.deepcopy(meshed_pods()[0])
    leaving["metadata"]["deletionTimestamp"] = "2026-12-04T17:00:00Z"
    assert tracked(leaving["metadata"]) is None


def test_every_pod_is_counted_in_the_state_status_gives_it() -> None:
    for pod in meshed_pods():
        kept = tracked(pod["metadata"])
        assert kept is not None
        counted = tally([kept], LIVE)
        (shown,) = workloads(Snapshot(pods=[pod]), revision=NEW, sidecar_names=frozenset())
        assert counted.pods == {("chassis", "template", shown.state): 1}


def test_a_tally_counts_by_namespace_template_and_state() -> None:
    kept = [tracked(p["metadata"]) for p in meshed_pods()]
    counted = tally([k for k in kept if k is not None], LIVE)
    assert counted.pods == {
        ("chassis", "template", "current"): 1,
        ("chassis", "template", "stale"): 2,
        ("chassis", "template", "missing"): 1,
    }


def test_a_pod_is_stale_from_the_later_of_its_creation_and_the_edit() -> None:
    old = TrackedPod("a", "template", OLD, created=EDITED_AT - 3600)
    young = TrackedPod("a", "template", OLD, created=EDITED_AT + 50)
    now = EDITED_AT + 100
    assert tally([old], LIVE).stale_oldest(now) == {"template": 100.0}
    assert tally([young], LIVE).stale_oldest(now) == {"template": 50.0}
    assert tally([old, young], LIVE).stale_oldest(now) == {"template": 100.0}


def test_a_template_with_nothing_stale_shows_zero() -> None:
    current = TrackedPod("a", "template", NEW, created=0.0)
    assert tally([current], LIVE).stale_oldest(EDITED_AT) == {"template": 0.0}
    assert tally([], LIVE).stale_oldest(EDITED_AT) == {"template": 0.0}


def test_a_template_name_the_configmap_lacks_is_labelled_unknown() -> None:
    """Pods choose the name: a thousand invented names are one series, and their pods stale
    (as status says: the ConfigMap does not have that template)."""
    invented = [TrackedPod("a", f"no-such-{i}", OLD, created=EDITED_AT) for i in range(1000)]
    counted = tally(invented, LIVE)
    assert counted.pods == {("a", UNKNOWN_TEMPLATE, "stale"): 1000}
    assert counted.stale_oldest(EDITED_AT + 10) == {"template": 0.0, UNKNOWN_TEMPLATE: 10.0}


def test_live_templates_are_the_active_ones_with_when_they_took_effect() -> None:
    templates = TemplateSet(clock=lambda: EDITED_AT)
    assert live_templates(templates) == {}
    templates.offer(DEFAULT_TEMPLATE.read_text(), source="test")
    (name,) = live_templates(templates)
    assert live_templates(templates)[name].since == EDITED_AT
    assert live_templates(templates)[name].revision == templates.template.revision  # type: ignore[union-attr]


def test_what_a_tenant_writes_in_the_annotations_is_not_what_is_kept() -> None:
    """A template name that cannot be a ConfigMap key or a revision that is not one of
    ours is kept as a constant, so a 100 KB annotation costs the leader nothing."""
    pod = meshed_pods()[0]
    pod["metadata"]["annotations"][ann.TEMPLATE] = "x" * 100_000
    pod["metadata"]["annotations"][ann.TEMPLATE_REVISION] = "f" * 100_000
    kept = tracked(pod["metadata"])
    assert kept is not None
    assert (kept.template, kept.revision) == (UNKNOWN_TEMPLATE, "unknown")
    assert tally([kept], LIVE).pods == {("chassis", UNKNOWN_TEMPLATE, "stale"): 1}
