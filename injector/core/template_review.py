"""The validating webhook for the template ConfigMap (pure): a CREATE, UPDATE or DELETE of
it is checked with exactly what a reload runs (`template_in` then `load_template`), so
`kubectl apply` of an edit the injectors would refuse is refused, with every problem.

Valid edits are allowed, with warnings for risky ones: an image tagged `latest` or not
tagged at all, and a discovery type the current template has that the new one drops
(pods asking for it would be denied). A DELETE is allowed with a warning: the injectors
keep serving their last good template, but a new replica cannot start without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from injector.core.images import drift_warning
from injector.core.limits import MAX_MESSAGE_CHARS, cap_warnings, clip, join_capped
from injector.core.names import DEFAULT_TEMPLATE_NAME, TEMPLATE_CONFIGMAP
from injector.core.reviews import BadReview, Review, read_review
from injector.core.template import (
    Template,
    TemplateError,
    load_template,
    template_in,
    template_name,
)


@dataclass(frozen=True, slots=True)
class TemplateReview:
    """The answer to one review of the template ConfigMap; `status` 400 for a body that is
    not an AdmissionReview (then `error` says why)."""

    status: int
    body: bytes
    uid: str = ""
    operation: str = ""
    allowed: bool = True
    problems: int = 0
    warnings: int = 0
    revision: str = ""
    error: str = ""


def review_template(
    raw: bytes, *, name: str = TEMPLATE_CONFIGMAP, namespace: str = "", key: str
) -> TemplateReview:
    """Bytes in, answer out: never raises. Only the ConfigMap `namespace`/`name` is judged
    (an empty namespace: any); every other object is allowed untouched."""
    try:
        review = read_review(raw)
    except BadReview as exc:
        error = clip(str(exc), MAX_MESSAGE_CHARS)
        return TemplateReview(status=400, body=orjson.dumps({"error": error}), error=error)
    request = review.request
    operation = str(request.get("operation") or "")
    new, old = request.get("object"), request.get("oldObject")
    target = new if isinstance(new, dict) else old
    if not _is_the_template(request, target, name=name, namespace=namespace):
        return _answer(review, operation, allowed=True)
    if operation == "DELETE" or not isinstance(new, dict):
        return _answer(
            review,
            operation,
            allowed=True,
            warnings=[
                f"deleting {name}: running injectors keep serving their last good template, "
                "but a new or restarted replica has none and denies every pod that asks for "
                "mesher until the ConfigMap is back"
            ],
        )
    data = new.get("data")
    problems: list[str] = []
    warnings: list[str] = []
    revision = ""
    for data_key, label in _template_keys(data, key):
        prefix = f"{label}: " if label else ""
        try:
            template = load_template(template_in(data, data_key))
        except TemplateError as exc:
            problems += [prefix + p for p in exc.problems]
            continue
        revision = revision or template.revision
        warnings += [prefix + w for w in risky_images(template)]
        previous = _previous(old, data_key)
        if previous is not None:
            dropped = [t for t in previous.discovery_types if t not in template.discovery_types]
            if dropped:
                warnings.append(
                    f"{prefix}discovery type(s) {', '.join(dropped)} removed: pods that ask "
                    "for them will be denied"
                )
    if problems:
        message = (
            f"the mesher sidecar template in {name} is invalid, so the injectors would "
            f"refuse it: {join_capped(problems, limit=MAX_MESSAGE_CHARS - 200)}"
        )
        return _answer(review, operation, allowed=False, message=message, problems=len(problems))
    return _answer(review, operation, allowed=True, warnings=warnings, revision=revision)


def _template_keys(data: object, key: str) -> list[tuple[str, str]]:
    """(key, label) of every template in a ConfigMap's data: the default `key` (no label,
    checked even when missing) and each named `NAME.yaml`, as a reload reads them."""
    keys = [(key, "")]
    if isinstance(data, dict):
        for data_key in sorted(data):
            name = template_name(data_key)
            if name is not None and data_key != key and name != DEFAULT_TEMPLATE_NAME:
                keys.append((data_key, data_key))
    return keys


def risky_images(template: Template) -> list[str]:
    """A warning per sidecar image (as rendered) tagged `latest` or not tagged at all:
    it changes under the pods, so revisions stop telling what runs."""
    warnings: dict[str, str] = {}
    for found in template.images():
        warning = drift_warning(found.image)
        if warning is not None and found.image not in warnings:
            warnings[found.image] = (
                f"container {found.container}: {warning}; pin a version so a "
                "template revision names what runs"
            )
    return list(warnings.values())


def _is_the_template(
    request: Mapping[str, Any], target: object, *, name: str, namespace: str
) -> bool:
    kind = request.get("kind")
    if not isinstance(kind, dict) or kind.get("kind") != "ConfigMap":
        return False
    metadata = target.get("metadata") if isinstance(target, dict) else None
    target_name = metadata.get("name") if isinstance(metadata, dict) else request.get("name")
    target_namespace = request.get("namespace")
    return target_name == name and (not namespace or target_namespace == namespace)


def _previous(old: object, key: str) -> Template | None:
    if not isinstance(old, dict):
        return None
    try:
        return load_template(template_in(old.get("data"), key))
    except TemplateError:
        return None


def _answer(
    review: Review,
    operation: str,
    *,
    allowed: bool,
    message: str = "",
    warnings: list[str] | None = None,
    problems: int = 0,
    revision: str = "",
) -> TemplateReview:
    capped = cap_warnings(warnings or [])
    response: dict[str, Any] = {"uid": review.uid, "allowed": allowed}
    if capped:
        response["warnings"] = list(capped)
    if not allowed:
        response["status"] = {
            "status": "Failure",
            "code": 422,
            "reason": "Invalid",
            "message": clip(message, MAX_MESSAGE_CHARS),
        }
    body = orjson.dumps(
        {"apiVersion": review.api_version, "kind": "AdmissionReview", "response": response}
    )
    return TemplateReview(
        status=200,
        body=body,
        uid=review.uid,
        operation=operation,
        allowed=allowed,
        problems=problems,
        warnings=len(capped),
        revision=revision,
    )
