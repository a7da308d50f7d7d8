"""The mutating webhook decodes only what decide reads (injector.core.pod_review): every body
gets the answer the full parse gives it, and a body the decoder takes is a Pod that
pod_shape_problem passes (decide skips that check for it)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from injector.core import pod_review
from injector.core.decide import decide
from injector.core.pods import pod_shape_problem
from injector.core.responses import answer, build_response
from injector.core.reviews import BadReview, read_pod_review, read_review
from tests.support.helpers import ADMISSION, admission_fixture, admission_fixture_names
from tests.support.strategies import (
    NAMED,
    RECORDED_POD,
    TEMPLATE,
    broken_fields,
    pods,
    recorded_pod_with,
    review_of,
)


def full_answer(raw: bytes) -> tuple[str, bytes]:
    """What the full parse (read_review, the shape check in decide) makes of `raw`."""
    try:
        review = read_review(raw)
        outcome = decide(review.request, TEMPLATE, named=NAMED)
    except BadReview as exc:
        return "refused", str(exc).encode()
    return "answered", build_response(review, outcome)


def fast_answer(raw: bytes) -> tuple[str, bytes]:
    """What the webhook's path makes of `raw`."""
    result = answer(raw, TEMPLATE, named=NAMED)
    if result.status == 400:
        return "refused", result.error.encode()
    return "answered", result.body


def assert_same_answer(raw: bytes) -> None:
    fast, full = fast_answer(raw), full_answer(raw)
    assert fast[0] == full[0]
    if fast[0] == "refused":
        # answer() clips long errors; the full parse's message is the same text
        assert full[1].startswith(fast[1][:200])
    else:
        assert fast[1] == full[1]


def review_bytes(pod: Any, **request: Any) -> bytes:
    """review_of(pod), `request` fields set, as the API server sends it (UTF-8, compact)."""
    body = review_of(pod)
    body["request"].update(request)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("name", admission_fixture_names())
def test_every_recorded_review_gets_the_full_parses_answer(name: str) -> None:
    raw = (ADMISSION / f"{name}.json").read_bytes()
    assert_same_answer(raw)


def test_the_decoder_keeps_only_what_decide_reads() -> None:
    raw = (ADMISSION / "server-mesher.json").read_bytes()
    review = pod_review.decode(raw)
    metadata = review["request"]["object"]["metadata"]
    assert "managedFields" not in metadata
    assert "userInfo" not in review["request"]
    assert "image" not in review["request"]["object"]["spec"]["containers"][0]
    assert (
        metadata["annotations"] == json.loads(raw)["request"]["object"]["metadata"]["annotations"]
    )
    assert read_pod_review(raw).pod_checked


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods())
def test_generated_pods_get_the_full_parses_answer(pod: dict[str, Any]) -> None:
    assert_same_answer(review_bytes(pod))


@settings(max_examples=600, deadline=None)
@given(broken_fields)
def test_a_broken_field_gets_the_full_parses_answer_and_decoded_means_shaped(
    edits: list[tuple[tuple[Any, ...], Any]],
) -> None:
    raw = review_bytes(recorded_pod_with(edits))
    assert_same_answer(raw)
    try:
        decoded = pod_review.decode(raw)
    except pod_review.NotAPodReview:
        return
    assert pod_shape_problem(decoded["request"]["object"]) == ""


SHAPE_PROBLEMS = [
    {"metadata": [], "spec": {"containers": [{"name": "a"}]}},
    {"spec": None},
    {"spec": {"containers": []}},
    {"spec": {"containers": {"name": "a"}}},
    {"metadata": {"annotations": {"a": 1}}, "spec": {"containers": [{"name": "a"}]}},
    {"metadata": {"labels": []}, "spec": {"containers": [{"name": "a"}]}},
    {"metadata": {"name": 5}, "spec": {"containers": [{"name": "a"}]}},
    {"metadata": {"ownerReferences": [{"name": 1}]}, "spec": {"containers": [{"name": "a"}]}},
    {"spec": {"containers": [{"name": 7}]}},
    {"spec": {"containers": [{"name": "a", "env": [{"name": None}]}]}},
    {"spec": {"containers": [{"name": "a", "ports": ["80"]}]}},
    {"spec": {"containers": [{"name": "a"}], "initContainers": [[]]}},
    {"spec": {"containers": [{"name": "a"}], "volumes": {"name": "v"}}},
    {"spec": {"containers": [{"name": "a"}], "imagePullSecrets": ["cred"]}},
]


@pytest.mark.parametrize("pod", SHAPE_PROBLEMS)
def test_every_shape_problem_is_left_to_the_full_parse(pod: dict[str, Any]) -> None:
    raw = review_bytes(pod)
    assert pod_shape_problem(pod)
    with pytest.raises(pod_review.NotAPodReview):
        pod_review.decode(raw)
    result = answer(raw, TEMPLATE)
    assert (result.status, result.refusal) == (400, "not-a-valid-pod")
    assert result.error == f"request.object is not a valid Pod: {pod_shape_problem(pod)}"


MANAGED = b'"managedFields":'


@pytest.mark.parametrize(
    "junk",
    [
        b'"\xff"',  # not UTF-8
        b'"\xed\xa0\x80"',  # an encoded surrogate
        b'"\\ud800"',  # a lone surrogate escape
        b'"a\x01"',  # a control character
        b"[" * 5000 + b"]" * 5000,  # deeper than either parser goes
        b"01",
        b"[1,]",
    ],
)
def test_malformed_json_where_decide_never_reads_is_still_refused(junk: bytes) -> None:
    raw = (ADMISSION / "server-mesher.json").read_bytes()
    assert MANAGED in raw
    broken = raw.replace(MANAGED, MANAGED + junk + b',"x":', 1)
    result = answer(broken, TEMPLATE)
    assert (result.status, result.refusal) == (400, "malformed-json")
    assert result.error == full_answer(broken)[1].decode()[: len(result.error)]


def test_a_number_beyond_a_double_where_decide_never_reads_is_accepted() -> None:
    """The one documented difference (pod_review's docstring): valid JSON per RFC 8259,
    which the full parse refuses."""
    raw = (ADMISSION / "server-mesher.json").read_bytes()
    broken = raw.replace(MANAGED, MANAGED + b'1e400,"x":', 1)
    assert full_answer(broken)[0] == "refused"
    result = answer(broken, TEMPLATE)
    assert result.status == 200
    assert result.outcome is not None
    assert result.outcome.reason == "requested"


def test_a_delete_with_a_null_object_is_parsed_whole_and_skipped() -> None:
    raw = review_bytes(None, operation="DELETE", oldObject=admission_fixture("rich-pod"))
    result = answer(raw, TEMPLATE)
    assert result.status == 200
    assert result.outcome is not None
    assert result.outcome.reason == "not-a-pod-create"
    assert result.review is not None
    assert not result.review.pod_checked


def test_non_ascii_utf8_is_decoded() -> None:
    pod = copy.deepcopy(RECORDED_POD)
    pod["metadata"].setdefault("annotations", {})["note"] = "héllo ✓"
    raw = review_bytes(pod)
    assert not raw.isascii()
    assert read_pod_review(raw).pod_checked
    assert_same_answer(raw)
