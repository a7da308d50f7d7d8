"""A request body -> the AdmissionReview in it, or BadReview saying why (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from injector.core import pod_review
from injector.core.limits import (
    MAX_ECHOED_CHARS,
    MAX_ECHOED_VALUE_CHARS,
    MAX_UID_CHARS,
    clip,
)

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class BadReview(ValueError):
    """The body is not an AdmissionReview we can answer (HTTP 400)."""


class MalformedJson(BadReview):
    """The body is not JSON at all."""


# The values made per request are NamedTuples: immutable like the frozen dataclasses
# elsewhere, at half their construction cost (several of them per admission).
class Review(NamedTuple):
    api_version: str
    uid: str
    request: Mapping[str, Any]
    pod_checked: bool = False  # decoded by pod_review: its pod passes pod_shape_problem


def read_review(raw: bytes) -> Review:
    """The AdmissionReview in a request body, or BadReview (MalformedJson) saying why."""
    try:
        body = orjson.loads(raw)
    except ValueError as exc:  # orjson.JSONDecodeError, bad UTF-8 and too deep included
        raise MalformedJson(f"the body is not valid JSON: {exc}") from exc
    return parse_review(body)


def read_pod_review(raw: bytes) -> Review:
    """`read_review` for the mutating webhook: only the fields decide reads are decoded
    (`pod_review`); any other body is parsed whole by `read_review`, as before."""
    try:
        body = pod_review.decode(raw)
    except pod_review.NotAPodReview:
        return read_review(raw)
    return parse_review(body, pod_checked=True)


def parse_review(body: object, *, pod_checked: bool = False) -> Review:
    if not isinstance(body, dict):
        raise BadReview("the body must be a JSON object (an AdmissionReview)")
    if body.get("kind") != "AdmissionReview":
        raise BadReview(f"kind must be AdmissionReview, got {_shown(body.get('kind'))}")
    api_version = body.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise BadReview(
            f"apiVersion must be one of {', '.join(API_VERSIONS)}, got {_shown(api_version)}"
        )
    request = body.get("request")
    if not isinstance(request, dict):
        raise BadReview("the AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid is missing")
    if len(uid) > MAX_UID_CHARS:
        raise BadReview(
            f"request.uid is {len(uid)} characters long; a uid has at most {MAX_UID_CHARS}"
        )
    return Review(api_version, uid, request, pod_checked)


def _shown(value: object) -> str:
    """A client's value inside an error message: repr, bounded."""
    if isinstance(value, str):
        return repr(clip(value, MAX_ECHOED_VALUE_CHARS))
    if isinstance(value, dict | list):
        return "a JSON " + ("object" if isinstance(value, dict) else "array")
    return clip(repr(value), MAX_ECHOED_CHARS)
