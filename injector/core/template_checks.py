"""Every check a template passes before it may activate (pure): JSON values only, the
known keys and shapes, the Kubernetes API's own schema, files, and variables that exist.
`check` returns every problem found at once, so the admin fixes them in one edit."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from injector.core import schema
from injector.core.limits import MAX_FILES, MAX_TEMPLATE_NODES
from injector.core.sidecar import CONTEXT_VARIABLES

TOP_LEVEL_KEYS = frozenset(
    {
        "version",
        "defaults",
        "values",
        "containers",
        "initContainers",
        "initContainersPosition",
        "volumes",
        "imagePullSecrets",
        "appEnv",
        "discovery",
        "nativeSidecars",
    }
)
FRAGMENT_KEYS = frozenset({"env", "volumes", "volumeMounts", "image", "files"})
# Files are configuration mesher parses: only the admin's words may shape them, never a
# value that comes from the pod (labels, names, annotations).
FILE_VARIABLES_ALLOWED = ("values.", "discovery.type", "template.revision")
_FILE_PATH = re.compile(r"^/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class Checked(NamedTuple):
    problems: list[str]  # empty: the template is valid
    values: dict[str, str]  # `values`, flattened: values.a.b -> its text
    used: set[str]  # the variables the template uses


def check(document: dict[str, Any]) -> Checked:
    """Every problem of a parsed template, its values and the variables it uses."""
    problems = _json_problems(document)
    if problems:  # the checks below assume string keys and JSON values
        return Checked(problems, {}, set())
    problems = _check_structure(document)
    if not problems:  # the API schema's own words, once the basic shape is right
        problems += _check_schema(document)
    values = _flatten_values(document.get("values") or {}, problems)
    known = CONTEXT_VARIABLES | values.keys()
    used = _variables_in(document)
    unknown = sorted(name for name in used if name not in known)
    places = _variable_places(document, set(unknown)) if unknown else {}
    for name in unknown:
        problems.append(f"unknown variable {{{{ {name} }}}} at {places.get(name, '?')}")
    return Checked(problems, values, used)


_JSON_SCALARS = (str, int, float, bool, type(None))


def _json_problems(document: object) -> list[str]:
    """Keys that are not strings and values that are not JSON (a YAML date, binary),
    anywhere; and a node count bound, so YAML aliases cannot make a small text huge."""
    problems: list[str] = []
    stack: list[tuple[object, str]] = [(document, "")]
    visited = 0
    while stack:
        node, where = stack.pop()
        visited += 1
        if visited > MAX_TEMPLATE_NODES:
            return [
                f"the template has more than {MAX_TEMPLATE_NODES} values "
                "(counting each use of a YAML alias)"
            ]
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    problems.append(
                        f"key {key!r} at {where or 'the top level'} must be a string (quote it)"
                    )
                    continue
                stack.append((value, f"{where}.{key}" if where else key))
        elif isinstance(node, list):
            stack.extend((item, f"{where}[{index}]") for index, item in enumerate(node))
        elif not isinstance(node, _JSON_SCALARS) or node != node:  # NaN is not JSON
            problems.append(f"{where} is a {type(node).__name__}, not a JSON value (quote it)")
        if len(problems) >= 20:
            break
    return problems


def _check_structure(doc: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for key in sorted(set(doc) - TOP_LEVEL_KEYS, key=str):
        problems.append(
            f"unknown top-level key {key!r} (allowed: {', '.join(sorted(TOP_LEVEL_KEYS))})"
        )
    version = doc.get("version")
    if version is not None and not isinstance(version, str | int | float):
        problems.append("version must be a string")

    names: list[str] = []
    containers = doc.get("containers")
    if not isinstance(containers, list) or not containers:
        problems.append("containers must be a non-empty list")
    else:
        names += _check_containers("containers", containers, problems)
    init_containers = doc.get("initContainers")
    if init_containers is not None:
        if isinstance(init_containers, list):
            names += _check_containers("initContainers", init_containers, problems)
        else:
            problems.append("initContainers must be a list")
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"container name {name!r} is used more than once")
    if not isinstance(doc.get("nativeSidecars", False), bool):
        problems.append("nativeSidecars must be true or false")
    position = doc.get("initContainersPosition", "first")
    if position not in ("first", "last"):
        problems.append("initContainersPosition must be 'first' or 'last'")

    _check_named_list("volumes", doc.get("volumes"), problems)
    _check_named_list("imagePullSecrets", doc.get("imagePullSecrets"), problems)
    _check_named_list("appEnv", doc.get("appEnv"), problems)

    values = doc.get("values")
    if values is not None and not isinstance(values, dict):
        problems.append("values must be a mapping")
    discovery = doc.get("discovery")
    if discovery is None:
        discovery = {}
    if not isinstance(discovery, dict):
        problems.append("discovery must be a mapping of discovery type -> fragment")
        discovery = {}
    for dtype, fragment in discovery.items():
        where = f"discovery.{dtype}"
        if not isinstance(dtype, str) or not dtype:
            problems.append(f"discovery type {dtype!r} must be a non-empty string")
            continue
        if fragment is None:
            continue
        if not isinstance(fragment, dict):
            problems.append(f"{where} must be a mapping")
            continue
        for key in sorted(set(fragment) - FRAGMENT_KEYS, key=str):
            problems.append(
                f"{where} has unknown key {key!r} (allowed: {', '.join(sorted(FRAGMENT_KEYS))})"
            )
        image = fragment.get("image")
        if image is not None and (not isinstance(image, str) or not image.strip()):
            problems.append(f"{where}.image must be a non-empty string")
        _check_files(where, fragment.get("files"), doc.get("containers"), problems)
        _check_named_list(f"{where}.env", fragment.get("env"), problems)
        _check_named_list(f"{where}.volumes", fragment.get("volumes"), problems)
        _check_mounts(f"{where}.volumeMounts", fragment.get("volumeMounts"), problems)

    defaults = doc.get("defaults")
    if defaults is None:
        defaults = {}
    if not isinstance(defaults, dict):
        problems.append("defaults must be a mapping")
        defaults = {}
    default_type = defaults.get("discoveryType")
    if default_type is not None and default_type not in discovery:
        allowed = ", ".join(map(str, discovery)) or "none declared"
        problems.append(
            f"defaults.discoveryType {default_type!r} is not a key of discovery ({allowed})"
        )
    if default_type is None and discovery:
        problems.append("defaults.discoveryType is required when discovery types are declared")
    return problems


def _check_files(where: str, files: object, containers: object, problems: list[str]) -> None:
    """Files written into the first sidecar container before its command runs."""
    if files is None:
        return
    if not isinstance(files, dict) or len(files) > MAX_FILES:
        problems.append(f"{where}.files must be a mapping of at most {MAX_FILES} path -> text")
        return
    for path, text in files.items():
        if not _FILE_PATH.match(path) or "/../" in path + "/" or "/./" in path + "/":
            problems.append(f"{where}.files: {path!r} must be an absolute path of [A-Za-z0-9._-]")
        if not isinstance(text, str):
            problems.append(f"{where}.files[{path}] must be text")
            continue
        for name in sorted(set(VARIABLE.findall(text))):
            if not name.startswith(FILE_VARIABLES_ALLOWED):
                problems.append(
                    f"{where}.files[{path}] uses {{{{ {name} }}}}: files may use only "
                    "values.*, discovery.type and template.revision (nothing from the pod)"
                )
    first = containers[0] if isinstance(containers, list) and containers else None
    command = first.get("command") if isinstance(first, dict) else None
    if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
        problems.append(
            f"{where}.files needs the first container to declare its command (what the image "
            "runs, e.g. [sh, /opt/mesher/start.sh]): the files are written, then it is run"
        )


def _check_schema(doc: dict[str, Any]) -> list[str]:
    """Every part checked as the Kubernetes type it becomes (unknown fields, wrong types)."""
    parts: list[tuple[str, str, list[Any]]] = [
        ("containers", "Container", doc.get("containers") or []),
        ("initContainers", "Container", doc.get("initContainers") or []),
        ("volumes", "Volume", doc.get("volumes") or []),
        ("imagePullSecrets", "LocalObjectReference", doc.get("imagePullSecrets") or []),
        ("appEnv", "EnvVar", doc.get("appEnv") or []),
    ]
    for dtype, fragment in (doc.get("discovery") or {}).items():
        for key, kind in (
            ("env", "EnvVar"),
            ("volumes", "Volume"),
            ("volumeMounts", "VolumeMount"),
        ):
            parts.append((f"discovery.{dtype}.{key}", kind, (fragment or {}).get(key) or []))
    problems: list[str] = []
    for where, kind, items in parts:
        for index, item in enumerate(items):
            name = item.get("name", index) if isinstance(item, dict) else index
            problems += schema.check(item, kind, f"{where}[{name}]")
    return problems


def _check_containers(where: str, containers: list[Any], problems: list[str]) -> list[str]:
    names: list[str] = []
    for index, container in enumerate(containers):
        at = f"{where}[{index}]"
        if not isinstance(container, dict):
            problems.append(f"{at} must be a mapping")
            continue
        name = container.get("name")
        if not isinstance(name, str) or not DNS_LABEL.match(name):
            problems.append(f"{at} needs a name that is a DNS label (got {name!r})")
        else:
            names.append(name)
            at = f"{where}[{name}]"
        image = container.get("image")
        if not isinstance(image, str) or not image.strip():
            problems.append(f"{at} needs an image")
        ports = container.get("ports")
        if ports is not None:
            if not isinstance(ports, list):
                problems.append(f"{at}.ports must be a list")
            else:
                for port in ports:
                    value = port.get("containerPort") if isinstance(port, dict) else None
                    if type(value) is not int or not 1 <= value <= 65535:
                        problems.append(
                            f"{at}.ports: containerPort must be an integer 1-65535 (got {value!r})"
                        )
        _check_named_list(f"{at}.env", container.get("env"), problems)
        _check_mounts(f"{at}.volumeMounts", container.get("volumeMounts"), problems)
    return names


def _check_named_list(where: str, items: object, problems: list[str]) -> None:
    if items is None:
        return
    if not isinstance(items, list):
        problems.append(f"{where} must be a list")
        return
    seen: set[str] = set()
    for item in items:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: every item needs a name")
        elif name in seen:
            problems.append(f"{where}: name {name!r} is used more than once")
        else:
            seen.add(name)


def _check_mounts(where: str, mounts: object, problems: list[str]) -> None:
    if mounts is None:
        return
    if not isinstance(mounts, list):
        problems.append(f"{where} must be a list")
        return
    for mount in mounts:
        if not isinstance(mount, dict) or not mount.get("name") or not mount.get("mountPath"):
            problems.append(f"{where}: every mount needs a name and a mountPath")


def _flatten_values(values: object, problems: list[str], prefix: str = "values") -> dict[str, str]:
    flat: dict[str, str] = {}
    if not isinstance(values, dict):
        return flat
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            flat.update(_flatten_values(value, problems, name))
        elif isinstance(value, list):
            problems.append(f"{name} must be a scalar or a mapping, not a list")
        elif isinstance(value, bool):
            flat[name] = "true" if value else "false"
        else:
            flat[name] = "" if value is None else str(value)
    return flat


def _variable_places(document: object, names: set[str]) -> dict[str, str]:
    """Where each of `names` is first used, as a path (containers[0].env[1].value)."""
    places: dict[str, str] = {}
    stack: list[tuple[object, str]] = [(document, "")]
    while stack and len(places) < len(names):
        node, where = stack.pop()
        if isinstance(node, str):
            for name in VARIABLE.findall(node):
                if name in names:
                    places.setdefault(name, where or "the top level")
        elif isinstance(node, dict):
            stack += [(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(v, f"{where}[{i}]") for i, v in enumerate(node)]
    return places


def _variables_in(node: object) -> set[str]:
    if isinstance(node, str):
        return set(VARIABLE.findall(node))
    if isinstance(node, dict):
        return set().union(*(_variables_in(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_variables_in(v) for v in node)) if node else set()
    return set()
