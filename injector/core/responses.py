"""A request body -> the webhook's answer: an AdmissionReview response or a refusal (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson
import pybase64  # SIMD base64: the patch is encoded per admission

from injector.core.decide import NO_NAMED_TEMPLATES, decide
from injector.core.limits import MAX_MESSAGE_CHARS, clip
from injector.core.names import NEVER_INJECTED
from injector.core.outcomes import Outcome
from injector.core.reviews import BadReview, MalformedJson, Review, read_pod_review
from injector.core.template import Template


class Answer(NamedTuple):
    """What the webhook sends for one request body: a decision (HTTP 200) or a refusal
    (HTTP 400 with `{"error": ...}`, `refusal` its bounded reason label)."""

    status: int
    body: bytes
    review: Review | None = None
    outcome: Outcome | None = None
    refusal: str = ""
    error: str = ""
    failure: Exception | None = None  # the bug behind an internal-error denial


def answer(
    raw: bytes,
    template: Template | None,
    *,
    named: Mapping[str, Template] = NO_NAMED_TEMPLATES,
    excluded_namespaces: frozenset[str] = NEVER_INJECTED,
) -> Answer:
    """Bytes in, answer out: never raises, whatever the bytes."""
    try:
        review = read_pod_review(raw)
    except MalformedJson as exc:
        return _refusal("malformed-json", str(exc))
    except BadReview as exc:
        return _refusal("not-an-admission-review", str(exc))
    failure: Exception | None = None
    try:
        outcome = decide(
            review.request,
            template,
            named=named,
            excluded_namespaces=excluded_namespaces,
            pod_checked=review.pod_checked,
        )
    except BadReview as exc:
        return _refusal("not-a-valid-pod", str(exc), review)
    except Exception as exc:  # a bug must deny, not admit a pod half-injected or crash
        failure = exc
        outcome = Outcome(
            decision="denied",
            reason="internal-error",
            message="mesher-injector failed to decide; see its logs",
        )
    body = build_response(review, outcome)
    return Answer(200, body, review, outcome, "", "", failure)  # positional: per request


def _refusal(reason: str, error: str, review: Review | None = None) -> Answer:
    error = clip(error, MAX_MESSAGE_CHARS)
    body = orjson.dumps({"error": error})
    return Answer(status=400, body=body, review=review, refusal=reason, error=error)


def build_response(review: Review, outcome: Outcome) -> bytes:
    """The AdmissionReview answering `review`, as JSON bytes (what orjson makes of it as
    objects; an admission with a patch and nothing else is written straight)."""
    if outcome.patch and not outcome.warnings and outcome.decision != "denied":
        # base64 is JSON-safe: the encoded patch goes into the answer as it is.
        return _PATCHED % (
            orjson.dumps(review.api_version),
            orjson.dumps(review.uid),
            pybase64.b64encode(outcome.patch),
        )
    response: dict[str, Any] = {"uid": review.uid, "allowed": outcome.decision != "denied"}
    if outcome.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = orjson.Fragment(b'"' + pybase64.b64encode(outcome.patch) + b'"')
    if outcome.warnings:
        response["warnings"] = outcome.warnings
    if outcome.decision == "denied":
        response["status"] = {
            "status": "Failure",
            "code": 400,
            "reason": "BadRequest",
            "message": outcome.message,
        }
    return orjson.dumps(
        {"apiVersion": review.api_version, "kind": "AdmissionReview", "response": response}
    )


_PATCHED = (
    b'{"apiVersion":%b,"kind":"AdmissionReview","response":'
    b'{"uid":%b,"allowed":true,"patchType":"JSONPatch","patch":"%b"}}'
)
