"""AdmissionReview -> decision -> response (pure).

`decide` is the one decision function: the webhook and the manual `inject` command
both call it, so they always agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import orjson
import pybase64  # SIMD base64: the patch is encoded per admission

from injector.core import annotations as ann
from injector.core import pod_review
from injector.core.limits import (
    MAX_CONTAINERS,
    MAX_LOG_FIELD_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_UID_CHARS,
    MAX_VARIABLE_CHARS,
    cap_warnings,
    clip,
)
from injector.core.names import DEFAULT_TEMPLATE_NAME, NEVER_INJECTED
from injector.core.patch import PatchConflict, build_patch
from injector.core.sidecar import RenderContext, Sidecar
from injector.core.template import Template

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")

Decision = Literal["injected", "skipped", "denied"]
Reason = Literal[
    "requested",
    "not-requested",
    "already-injected",
    "host-network",
    "excluded-namespace",
    "not-a-pod-create",
    "unknown-discovery-type",
    "invalid-service-ports",
    "no-template",
    "render-error",
    "pod-too-large",
    "invalid-resources",
    "unknown-template",
    "internal-error",
]
REASONS: dict[Reason, Decision] = {
    "requested": "injected",
    "not-requested": "skipped",
    "already-injected": "skipped",
    "host-network": "skipped",
    "excluded-namespace": "skipped",
    "not-a-pod-create": "skipped",
    "unknown-discovery-type": "denied",
    "invalid-service-ports": "denied",
    "no-template": "denied",
    "render-error": "denied",
    "pod-too-large": "denied",
    "invalid-resources": "denied",
    "unknown-template": "denied",
    "internal-error": "denied",
}

_NONE: Mapping[str, Template] = MappingProxyType({})
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_HASH_SUFFIX = re.compile(r"-[a-z0-9]{5,10}$")


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


class Outcome(NamedTuple):
    decision: Decision
    reason: Reason
    message: str = ""
    warnings: tuple[str, ...] = ()
    patch: bytes = b""  # the JSON Patch document (a JSON array), b"" for none
    discovery_type: str = ""
    service_ports: str = ""
    revision: str = ""
    template: str = ""

    def operations(self) -> list[dict[str, Any]]:
        """The patch as objects (for applying it here: `inject`, tests)."""
        operations: list[dict[str, Any]] = orjson.loads(self.patch) if self.patch else []
        return operations


class PodFacts(NamedTuple):
    """What the log line says about the pod: never the spec or env values."""

    namespace: str
    name: str
    owner: str


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
        return repr(clip(value, 80))
    if isinstance(value, dict | list):
        return "a JSON " + ("object" if isinstance(value, dict) else "array")
    return clip(repr(value), 100)


def _skip(reason: Reason, message: str, warnings: list[str] | None = None) -> Outcome:
    return Outcome(
        decision="skipped", reason=reason, message=message, warnings=cap_warnings(warnings or [])
    )


def _deny(reason: Reason, message: str, warnings: list[str] | None = None) -> Outcome:
    return Outcome(
        decision="denied",
        reason=reason,
        message=clip(message, MAX_MESSAGE_CHARS),
        warnings=cap_warnings(warnings or []),
    )


_NOT_A_POD_CREATE = Outcome(
    decision="skipped", reason="not-a-pod-create", message="only pod CREATE requests are mutated"
)
_NOT_REQUESTED = Outcome(
    decision="skipped", reason="not-requested", message=f"{ann.INJECT} is not yes"
)


def decide(
    request: Mapping[str, Any],
    template: Template | None,
    *,
    named: Mapping[str, Template] = _NONE,
    excluded_namespaces: frozenset[str] = NEVER_INJECTED,
    pod_checked: bool = False,
) -> Outcome:
    """`template` is the default, `named` the named templates a pod may pick with the
    template annotation. Raises BadReview when the pod is not shaped like a Pod (never
    sent by an API server); `pod_checked` says pod_review's types already made sure."""
    kind = request.get("kind")
    pod = request.get("object")
    if (
        not isinstance(kind, dict)
        or kind.get("kind") != "Pod"
        or request.get("operation") != "CREATE"
        or request.get("subResource")
        or not isinstance(pod, dict)
    ):
        return _NOT_A_POD_CREATE
    problem = "" if pod_checked else pod_shape_problem(pod)
    if problem:
        raise BadReview(f"request.object is not a valid Pod: {problem}")
    metadata: Mapping[str, Any] = pod.get("metadata") or {}
    spec: Mapping[str, Any] = pod.get("spec") or {}
    namespace = request.get("namespace") or metadata.get("namespace") or ""
    if not isinstance(namespace, str):
        raise BadReview("request.namespace must be a string")
    if namespace in excluded_namespaces:
        return _skip("excluded-namespace", f"namespace {namespace!r} is never injected")

    # Only ours are read, each by its key (pod_shape_problem checked they are strings):
    # a pod may carry megabytes of other annotations, never copied.
    annotations: Mapping[str, Any] = metadata.get("annotations") or _EMPTY
    choice = ann.parse_inject(annotations)
    warnings = [choice.warning] if choice.warning else []
    if not choice.requested:
        return (
            _skip("not-requested", _NOT_REQUESTED.message, warnings) if warnings else _NOT_REQUESTED
        )
    app_containers: list[dict[str, Any]] = spec["containers"]
    init_containers: list[dict[str, Any]] = spec.get("initContainers") or []
    if annotations.get(ann.STATUS) == ann.STATUS_INJECTED:
        return _skip("already-injected", f"{ann.STATUS} is {ann.STATUS_INJECTED}")
    name = annotations.get(ann.TEMPLATE, "").strip() or DEFAULT_TEMPLATE_NAME
    if name != DEFAULT_TEMPLATE_NAME:
        if name not in named:
            available = ", ".join([DEFAULT_TEMPLATE_NAME, *sorted(named)])
            return _deny(
                "unknown-template",
                f"{ann.TEMPLATE}={ann.quote(name)} names no template (available: {available})",
                warnings,
            )
        template = named[name]
    if template is not None:
        sidecar_names = template.sidecar_names
        for container in (*app_containers, *init_containers):  # all objects: pod_shape_problem
            if container.get("name") in sidecar_names:
                names = {c.get("name") for c in (*app_containers, *init_containers)}
                found = ", ".join(sorted(str(n) for n in names & sidecar_names))
                return _skip("already-injected", f"the pod already has sidecar container {found}")
    if spec.get("hostNetwork"):
        return _skip("host-network", "pods with hostNetwork: true are not injected")
    if template is None:
        return _deny(
            "no-template",
            "mesher-injector has no sidecar template loaded yet, so the pod cannot be "
            "injected; retry shortly or check the injector's /template",
        )

    count = len(app_containers) + len(init_containers)
    if count > MAX_CONTAINERS:
        return _deny(
            "pod-too-large",
            f"the pod has {count} containers and init containers; mesher-injector "
            f"injects pods with at most {MAX_CONTAINERS}",
            warnings,
        )
    discovery = annotations.get(ann.DISCOVERY_TYPE, "").strip() or template.default_discovery or ""
    if discovery and discovery not in template.discovery_types:
        allowed = ", ".join(template.discovery_types) or "none: this template declares no types"
        return _deny(
            "unknown-discovery-type",
            f"{ann.DISCOVERY_TYPE}={ann.quote(discovery)} is not a known discovery type "
            f"(allowed: {allowed})",
            warnings,
        )
    try:
        ports = ann.parse_service_ports(annotations)
    except ann.InvalidServicePorts as exc:
        return _deny("invalid-service-ports", str(exc), warnings)
    warnings += ports.warnings
    for port in ports.ports:
        if not _declares(app_containers, port.port):
            warnings.append(
                f"{ann.SERVICE_PORTS}: port {port.port} is not declared by any container of the pod"
            )

    owner = controller_of(metadata)
    ctx = RenderContext(  # positional: a third of the cost of keywords, per admission
        str(metadata.get("name") or ""),  # pod_name
        namespace,  # pod_namespace
        _service_name(metadata, owner),  # service_name
        service_version(metadata),  # service_version
        ports.text,  # service_ports
        discovery,  # discovery_type
    )
    if max(len(ctx.pod_name), len(namespace), len(ctx.service_name), len(ctx.service_version)) > (
        MAX_VARIABLE_CHARS
    ):
        for variable, value in (
            ("pod.name", ctx.pod_name),
            ("pod.namespace", ctx.pod_namespace),
            ("service.name", ctx.service_name),
            ("service.version", ctx.service_version),
        ):
            if len(value) > MAX_VARIABLE_CHARS:
                # The API server refuses such a name or label after admission anyway.
                return _deny(
                    "pod-too-large",
                    f"{variable} would be {len(value)} characters long (from the pod's name, "
                    f"namespace or labels); Kubernetes allows at most {MAX_VARIABLE_CHARS}",
                    warnings,
                )
    native = ann.parse_native(annotations, default=template.native_sidecars)
    if native.warning:
        warnings.append(native.warning)
    try:
        resources = ann.parse_resources(annotations)
    except ann.InvalidResources as exc:
        return _deny("invalid-resources", str(exc), warnings)
    job = clip(owner[1], MAX_LOG_FIELD_CHARS) if owner and owner[0] == "Job" else ""
    if job and not native.native:
        warnings.append(
            f"this pod belongs to Job {job}: with a classic sidecar the Job never completes, "
            f'because mesher keeps running; set {ann.NATIVE_SIDECAR}: "yes" '
            "(native sidecars, Kubernetes 1.29+)"
        )
    try:
        sidecar = template.render(ctx)
        if resources or native.native != sidecar.native:
            sidecar = sidecar.for_pod(native=native.native, resources=resources)
        problem = _resources_problem(sidecar) if resources else ""
        if problem:
            return _deny("invalid-resources", problem, warnings)
        patch = build_patch(
            pod=pod,
            sidecar=sidecar,
            annotations={
                ann.STATUS: ann.STATUS_INJECTED,
                ann.TEMPLATE_REVISION: template.revision,
            },
        )
    except PatchConflict as exc:
        return _deny("render-error", f"cannot inject the mesher sidecar: {exc}", warnings)
    return Outcome(  # positional: made for every injection, keywords cost twice as much
        "injected",  # decision
        "requested",  # reason
        f"mesher sidecar injected (discovery {discovery or 'none'})",  # message
        cap_warnings(warnings),  # warnings
        patch,  # patch
        discovery,  # discovery_type
        ports.text,  # service_ports
        template.revision,  # revision
        name,  # template
    )


def _declares(containers: list[dict[str, Any]], number: int) -> bool:
    """Whether a container declares containerPort `number` (an int, as JSON gives it)."""
    for container in containers:
        for port in container.get("ports") or ():
            value = port.get("containerPort")
            if value == number and isinstance(value, int):  # not 9999.0 (JSON gives ints)
                return True
    return False


def _resources_problem(sidecar: Sidecar) -> str:
    """A request above its limit, once the pod's annotations are merged with the
    template's values: the API server would refuse the pod."""
    resources = (sidecar.containers[0].get("resources") or {}) if sidecar.containers else {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for name in sorted(set(requests) & set(limits)):
        try:
            request, limit = ann.quantity(str(requests[name])), ann.quantity(str(limits[name]))
        except ValueError:
            continue  # a template value the schema let through; the API server judges it
        if request > limit:
            return (
                f"the mesher container's {name} request {requests[name]} would be above its "
                f"limit {limits[name]} (annotations {', '.join(ann.RESOURCES)} override the "
                "template's values)"
            )
    return ""


def pod_shape_problem(pod: Mapping[str, Any]) -> str:
    """What makes `pod` unusable as a Pod (wrong JSON types where decide reads), or ''."""
    metadata, spec = pod.get("metadata"), pod.get("spec")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        return "metadata must be an object"
    if not isinstance(spec, dict):
        return "spec must be an object"
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return "spec.containers must be a non-empty list of objects"
    for name in ("annotations", "labels"):
        mapping = metadata.get(name)
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            return f"metadata.{name} must be an object"
        for value in mapping.values():
            if not isinstance(value, str):
                return f"metadata.{name}: every value must be a string"
    for name in ("name", "generateName", "namespace"):
        if not isinstance(metadata.get(name) or "", str):
            return f"metadata.{name} must be a string"
    owners = metadata.get("ownerReferences")
    problem = _list_problem(owners) if owners is not None else ""
    if problem:
        return "metadata.ownerReferences" + problem
    for name in ("containers", "initContainers", "volumes", "imagePullSecrets"):
        items = spec.get(name)
        problem = _list_problem(items) if items is not None else ""
        if problem:
            return f"spec.{name}{problem}"
    for group in ("containers", "initContainers"):
        for index, container in enumerate(spec.get(group) or ()):
            for field in ("env", "ports"):
                items = container.get(field)
                problem = _list_problem(items) if items is not None else ""
                if problem:
                    return f"spec.{group}[{index}].{field}{problem}"
    return ""


def _list_problem(items: object) -> str:
    """'' when `items` is a list of objects whose names (where given) are strings; else
    what is wrong with it, to follow the list's path in a message."""
    if not isinstance(items, list):
        return " must be a list of objects"
    for item in items:
        if not isinstance(item, dict):
            return " must be a list of objects"
    for item in items:
        if not isinstance(item.get("name", ""), str):
            return ": every name must be a string"
    return ""


def service_name(metadata: Mapping[str, Any]) -> str:
    """Label `app`, then `app.kubernetes.io/name`, then the owning workload's name, then the
    pod name, then the generateName stem."""
    return _service_name(metadata, controller_of(metadata))


def _service_name(metadata: Mapping[str, Any], controller: tuple[str, str] | None) -> str:
    labels: Mapping[str, Any] = metadata.get("labels") or {}
    for key in ("app", "app.kubernetes.io/name"):
        if labels.get(key):
            return str(labels[key])
    owner = _owner_name(metadata, controller)
    if owner:
        return owner
    if metadata.get("name"):
        return str(metadata["name"])
    return str(metadata.get("generateName") or "").rstrip("-")


def service_version(metadata: Mapping[str, Any]) -> str:
    labels: Mapping[str, Any] = metadata.get("labels") or {}
    for key in ("version", "app.kubernetes.io/version"):
        if labels.get(key):
            return str(labels[key])
    return ""


def controller_of(metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (kind, name) of the object that controls this one (its first owner reference
    not marked controller: false), or None."""
    owners = metadata.get("ownerReferences")
    for owner in owners if isinstance(owners, list) else []:
        if isinstance(owner, dict) and owner.get("controller", True):
            return str(owner.get("kind", "")), str(owner.get("name") or "")
    return None


def owner_name(metadata: Mapping[str, Any]) -> str:
    """The owning workload's name: a ReplicaSet's less its pod-template-hash suffix."""
    return _owner_name(metadata, controller_of(metadata))


def _owner_name(metadata: Mapping[str, Any], owner: tuple[str, str] | None) -> str:
    if owner is None:
        return ""
    kind, name = owner
    if kind == "ReplicaSet":
        template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
        if template_hash and name.endswith(f"-{template_hash}"):
            return name[: -len(template_hash) - 1]
        return _HASH_SUFFIX.sub("", name)
    return name


def pod_facts(request: Mapping[str, Any]) -> PodFacts:
    """For the log line, from a request of any shape (never raises); fields bounded."""
    pod = request.get("object")
    metadata = pod.get("metadata") if isinstance(pod, dict) else None
    if not isinstance(metadata, dict):
        metadata = {}
    owners = metadata.get("ownerReferences")
    owner = ""
    if isinstance(owners, list) and owners and isinstance(owners[0], dict):
        owner = f"{_text(owners[0].get('kind'))}/{_text(owners[0].get('name'))}"
    return PodFacts(  # namespace, name, owner
        _text(request.get("namespace") or metadata.get("namespace")),
        _text(metadata.get("name") or metadata.get("generateName") or request.get("name")),
        clip(owner, MAX_LOG_FIELD_CHARS) if owner else "",
    )


def _text(value: object) -> str:
    """A string field for the log line: '' for anything but a string, and bounded."""
    return clip(value, MAX_LOG_FIELD_CHARS) if isinstance(value, str) else ""


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
    named: Mapping[str, Template] = _NONE,
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
