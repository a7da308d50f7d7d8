"""Property tests: for generated pods and annotation values, the decision never crashes,
the patch always applies, nothing the pod had is removed or changed, and injecting an
injected pod is a no-op."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings

from injector.core.decide import decide
from injector.core.outcomes import REASONS
from injector.core.responses import build_response
from injector.core.reviews import BadReview, parse_review
from tests.support.helpers import apply, assert_only_added, decode_patch
from tests.support.strategies import (
    NAMED,
    TEMPLATE,
    broken_fields,
    pods,
    recorded_pod_with,
    review_of,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods())
def test_decisions_never_crash_and_patches_only_add(pod: dict[str, Any]) -> None:
    review = parse_review(review_of(pod))
    outcome = decide(review.request, TEMPLATE, named=NAMED)
    event(outcome.reason)
    assert REASONS[outcome.reason] == outcome.decision
    answer = orjson.loads(build_response(review, outcome))
    ops = decode_patch(answer["response"])
    assert bool(ops) == (outcome.decision == "injected")
    if not ops:
        return
    patched = apply(pod, ops)
    assert_only_added(pod, patched)
    # What the annotation said never reaches the structure: one sidecar, named by the
    # template, among the containers or (native) first among the init containers.
    added = [c["name"] for c in patched["spec"]["containers"][len(pod["spec"]["containers"]) :]]
    inits = patched["spec"].get("initContainers") or []
    if added:
        assert added == ["mesher"]
        assert "mesher" not in {c["name"] for c in inits}
    else:
        assert inits[0]["name"] == "mesher"
        assert inits[0]["restartPolicy"] == "Always"
        annotations = pod["metadata"].get("annotations") or {}
        assert annotations.get("sidecar.mesher.io/nativeSidecar", "").strip().lower() in (
            "yes",
            "y",
        )
    again = decide(parse_review(review_of(patched)).request, TEMPLATE, named=NAMED)
    assert (again.decision, again.reason) == ("skipped", "already-injected")
    assert again.patch == b""


@settings(max_examples=600, deadline=None)
@given(broken_fields)
def test_a_recorded_pod_with_any_field_broken_is_decided_or_refused_never_crashes(
    edits: list[tuple[tuple[Any, ...], Any]],
) -> None:
    pod = recorded_pod_with(edits)
    refused = ""
    try:
        outcome = decide(parse_review(review_of(pod)).request, TEMPLATE)
    except BadReview as exc:
        refused = str(exc)
    if refused:
        assert refused.startswith("request.object is not a valid Pod:")
        return
    if outcome.patch:
        apply(pod, outcome.operations())
