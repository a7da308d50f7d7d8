"""Check template parts against the Kubernetes API's own OpenAPI schema (pure).

`k8s_schema.json` holds the core/v1 schemas a template can contain (Container, Volume,
EnvVar, VolumeMount, LocalObjectReference and what they refer to), trimmed from the
OpenAPI v3 document a real v1.33 API server served (tests/fixtures/kube-api/). The API
server silently drops unknown fields from a webhook's patch, so a typo such as
`resource:` would give every pod a sidecar without limits: the template is refused
instead, naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

PREFIX = "io.k8s.api.core.v1."
ROOTS = ("Container", "Volume", "EnvVar", "VolumeMount", "LocalObjectReference")
_REF = "#/components/schemas/"


def trim(openapi: Mapping[str, Any], roots: tuple[str, ...] = ROOTS) -> dict[str, Any]:
    """The schemas reachable from `roots`, without descriptions: what we bundle."""
    schemas: Mapping[str, Any] = openapi["components"]["schemas"]
    kept: dict[str, Any] = {}
    pending = [PREFIX + root for root in roots]
    while pending:
        name = pending.pop()
        if name in kept:
            continue
        kept[name] = _strip(schemas[name])
        pending += [ref for ref in _refs(schemas[name]) if ref not in kept]
    return {name: kept[name] for name in sorted(kept)}


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in ("description", "default")}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"][len(_REF) :]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@cache
def bundled() -> dict[str, Any]:
    text = resources.files("injector").joinpath("k8s_schema.json").read_text()
    schemas: dict[str, Any] = json.loads(text)
    return schemas


def check(value: Any, kind: str, where: str) -> list[str]:
    """Problems with `value` as a core/v1 `kind` (e.g. "Container"); empty if none."""
    problems: list[str] = []
    _check(value, {"$ref": _REF + PREFIX + kind}, where, problems)
    return problems


def _resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    schemas = bundled()
    while True:
        if "$ref" in node:
            node = schemas[node["$ref"][len(_REF) :]]
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            return node


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _type_ok(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind != "boolean":
        return False
    return isinstance(value, _TYPES.get(kind, (object,)))


def _check(value: Any, node: Mapping[str, Any], where: str, problems: list[str]) -> None:
    node = _resolve(node)
    if "oneOf" in node:
        if not any(not _errors(value, option, where) for option in node["oneOf"]):
            kinds = " or ".join(str(_resolve(o).get("type", "?")) for o in node["oneOf"])
            problems.append(f"{where}: expected {kinds}, got {type(value).__name__}")
        return
    kind = node.get("type")
    if kind is None:
        return
    if not _type_ok(value, kind):
        problems.append(f"{where}: expected {kind}, got {type(value).__name__} {value!r}")
        return
    if kind == "array":
        for index, item in enumerate(value):
            _check(item, node.get("items", {}), f"{where}[{index}]", problems)
    elif kind == "object":
        properties: Mapping[str, Any] | None = node.get("properties")
        extra: Mapping[str, Any] | None = node.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                _check(item, properties[key], f"{where}.{key}", problems)
            elif isinstance(extra, Mapping):
                _check(item, extra, f"{where}.{key}", problems)
            elif properties is not None:
                problems.append(f"{where}: unknown field {key!r}")
        for key in node.get("required", []):
            if key not in value:
                problems.append(f"{where}: missing required field {key!r}")


def _errors(value: Any, node: Mapping[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    _check(value, node, where, problems)
    return problems
