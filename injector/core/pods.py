"""What the injector reads of a pod: its shape, its service, its owner (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from injector.core.limits import MAX_LOG_FIELD_CHARS, clip

_HASH_SUFFIX = re.compile(r"-[a-z0-9]{5,10}$")


class PodFacts(NamedTuple):
    """What the log line says about the pod: never the spec or env values."""

    namespace: str
    name: str
    owner: str


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


def declares_port(containers: list[dict[str, Any]], number: int) -> bool:
    """Whether a container declares containerPort `number` (an int, as JSON gives it)."""
    for container in containers:
        for port in container.get("ports") or ():
            value = port.get("containerPort")
            if value == number and isinstance(value, int):  # not 9999.0 (JSON gives ints)
                return True
    return False


def service_name(metadata: Mapping[str, Any]) -> str:
    """Label `app`, then `app.kubernetes.io/name`, then the owning workload's name, then the
    pod name, then the generateName stem."""
    return service_name_of(metadata, controller_of(metadata))


def service_name_of(metadata: Mapping[str, Any], controller: tuple[str, str] | None) -> str:
    """`service_name`, the pod's `controller_of` already known."""
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
