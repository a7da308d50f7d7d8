"""The sidecar template: parse, validate, revision, render (pure).

A template is YAML parsed once. Variables are written ``{{ name }}`` inside string
values and substituted after parsing, so a value can never change the structure.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import orjson
import yaml

from injector import schema
from injector.limits import MAX_FILES, MAX_TEMPLATE_NODES, RENDER_CACHE_BYTES
from injector.names import TEMPLATE_SUFFIX
from injector.patch import add_op, json_array

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
FILE_ENV_PREFIX = "MESHER_INJECTOR_FILE_"
# The context variables that come from the pod, as RenderContext attributes.
_CONTEXT_ATTRIBUTES = {
    "pod.name": "pod_name",
    "pod.namespace": "pod_namespace",
    "service.name": "service_name",
    "service.version": "service_version",
    "service.ports": "service_ports",
    "discovery.type": "discovery_type",
}
CONTEXT_VARIABLES = frozenset({*_CONTEXT_ATTRIBUTES, "template.revision"})
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class TemplateError(ValueError):
    """The template is invalid; `problems` lists every reason found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid template: " + "; ".join(problems))


class RenderContext(NamedTuple):  # made per admission: a NamedTuple costs half
    pod_name: str
    pod_namespace: str
    service_name: str
    service_version: str
    service_ports: str
    discovery_type: str


SAMPLE_CONTEXT = RenderContext(
    pod_name="sample-7d9f8b6c5-x2x4z",
    pod_namespace="default",
    service_name="sample",
    service_version="1.0.0",
    service_ports="rest:8080",
    discovery_type="",
)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A sidecar's pieces as JSON, serialised once per render: the patch for a pod is
    put together from these bytes, so no admission serialises the sidecar again."""

    containers: tuple[bytes, ...]  # as this render places them (native: restartPolicy Always)
    init_containers: tuple[bytes, ...]
    volumes: tuple[bytes, ...]
    image_pull_secrets: tuple[tuple[str, bytes], ...]  # (name, JSON)
    app_env: tuple[tuple[str, bytes], ...]  # (name, JSON)
    container_names: frozenset[str]  # of the containers and the init containers
    app_env_array: bytes  # app_env as one JSON array: a container without env gets it whole
    container_ops: bytes  # the add operations appending `containers` to a pod's list

    @property
    def size(self) -> int:
        """Bytes held, for the render cache's budget."""
        return (
            len(self.app_env_array)
            + len(self.container_ops)
            + sum(map(len, self.containers))
            + sum(map(len, self.init_containers))
            + sum(map(len, self.volumes))
            + sum(len(j) for _, j in self.image_pull_secrets)
            + sum(len(j) for _, j in self.app_env)
        )


@dataclass(frozen=True, slots=True)
class Sidecar:
    """What one rendering of the template adds to a pod.

    Renders are cached by the values of the variables the template uses, so pods of one
    workload share one Sidecar: treat it as read-only (copy before changing anything).
    `encoded` is the same, serialised (raises TypeError at construction if it cannot be).
    """

    containers: list[dict[str, Any]]
    init_containers: list[dict[str, Any]]
    init_containers_first: bool
    volumes: list[dict[str, Any]]
    image_pull_secrets: list[dict[str, Any]]
    app_env: list[dict[str, Any]]
    native: bool = False  # the containers go first among initContainers, restartPolicy Always
    encoded: Encoded = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        dumps = orjson.dumps
        containers = self.containers
        if self.native:
            containers = [{**c, "restartPolicy": "Always"} for c in containers]
        serialised = tuple(map(dumps, containers))
        app_env = tuple((e["name"], dumps(e)) for e in self.app_env)
        encoded = Encoded(
            containers=serialised,
            init_containers=tuple(map(dumps, self.init_containers)),
            volumes=tuple(map(dumps, self.volumes)),
            image_pull_secrets=tuple((s["name"], dumps(s)) for s in self.image_pull_secrets),
            app_env=app_env,
            container_names=frozenset(c["name"] for c in (*containers, *self.init_containers)),
            app_env_array=json_array([json for _, json in app_env]),
            container_ops=b",".join(add_op(b'"/spec/containers/-"', c) for c in serialised),
        )
        object.__setattr__(self, "encoded", encoded)

    def for_pod(self, *, native: bool, resources: Mapping[str, Mapping[str, str]]) -> Sidecar:
        """This render as one pod asked for it: native or classic, and the first sidecar
        container's (mesher's) resources overridden. A copy where anything changes: the
        render itself is shared."""
        if native == self.native and not resources:
            return self
        containers = list(self.containers)
        if resources and containers:
            first = dict(containers[0])
            merged = {k: dict(v) for k, v in (first.get("resources") or {}).items()}
            for group, values in resources.items():
                merged.setdefault(group, {}).update(values)
            first["resources"] = merged
            containers[0] = first
        return replace(self, containers=containers, native=native)


# A compiled node renders itself from the variables of one request.
Renderer = Callable[[Mapping[str, str]], Any]


class RenderCache:
    """Renders by the values of the variables they depend on, bounded in bytes (the JSON
    size of each render and its key; oldest out first). A render larger than a quarter
    of the budget is not kept."""

    __slots__ = ("_entries", "budget", "size")

    def __init__(self, budget: int = RENDER_CACHE_BYTES) -> None:
        self._entries: OrderedDict[tuple[str, ...], tuple[Sidecar, int]] = OrderedDict()
        self.budget = budget
        self.size = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, ...]) -> Sidecar | None:
        entry = self._entries.get(key)
        return entry[0] if entry is not None else None

    def put(self, key: tuple[str, ...], sidecar: Sidecar, size: int) -> None:
        size += sum(len(k) for k in key)
        if size > self.budget // 4 or key in self._entries:
            return
        self._entries[key] = (sidecar, size)
        self.size += size
        while self.size > self.budget:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.size -= evicted


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed, validated, immutable template. Swap references to it, never mutate it."""

    version: str
    revision: str
    default_discovery: str | None
    discovery_types: tuple[str, ...]
    sidecar_names: frozenset[str]
    values: Mapping[str, str]
    native_sidecars: bool
    _base: Renderer
    _fragments: Mapping[str, Renderer]
    _pod_key: Callable[[RenderContext], tuple[str, ...]]  # the render key of a context
    _cache: RenderCache = field(default_factory=RenderCache, compare=False)

    def variables(self, ctx: RenderContext) -> dict[str, str]:
        variables = dict(self.values)
        for name, attr in _CONTEXT_ATTRIBUTES.items():
            variables[name] = getattr(ctx, attr)
        variables["template.revision"] = self.revision
        return variables

    def render_key(self, ctx: RenderContext) -> tuple[str, ...]:
        """What a render depends on: the discovery type and the pod-derived variables the
        template uses (values and the revision are the template's own)."""
        return self._pod_key(ctx)

    def render(self, ctx: RenderContext) -> Sidecar:
        """Render for one pod. `ctx.discovery_type` must be one of `discovery_types` (or
        empty when the template declares none). The result is shared: read-only."""
        key = self.render_key(ctx)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        sidecar = self._render(ctx.discovery_type, self.variables(ctx))
        self._cache.put(key, sidecar, sidecar.encoded.size)
        return sidecar

    def _render(self, discovery_type: str, variables: dict[str, str]) -> Sidecar:
        base: dict[str, Any] = self._base(variables)
        containers: list[dict[str, Any]] = base.get("containers", [])
        volumes: list[dict[str, Any]] = base.get("volumes", [])
        if discovery_type:
            fragment: dict[str, Any] = self._fragments[discovery_type](variables)
            for container in containers:
                if fragment.get("env"):
                    container["env"] = [*container.get("env", []), *fragment["env"]]
                if fragment.get("volumeMounts"):
                    container["volumeMounts"] = [
                        *container.get("volumeMounts", []),
                        *fragment["volumeMounts"],
                    ]
            volumes = [*volumes, *fragment.get("volumes", [])]
            if containers and fragment.get("image"):
                containers[0]["image"] = fragment["image"]
            if containers and fragment.get("files"):
                containers[0] = _with_files(containers[0], fragment["files"])
        return Sidecar(
            containers=containers,
            init_containers=base.get("initContainers", []),
            init_containers_first=base.get("initContainersPosition", "first") == "first",
            volumes=volumes,
            image_pull_secrets=base.get("imagePullSecrets", []),
            app_env=base.get("appEnv", []),
        )


def _with_files(container: dict[str, Any], files: Mapping[str, str]) -> dict[str, Any]:
    """The container, writing `files` before it runs its own command: each file's text
    travels in an env var (never in the script), paths were checked at load, and `$` is
    doubled so the kubelet's $(VAR) expansion leaves the text as written."""
    env = [*container.get("env", [])]
    script = ["set -e"]
    for index, (path, text) in enumerate(files.items()):
        name = f"{FILE_ENV_PREFIX}{index}"
        env.append({"name": name, "value": text.replace("$", "$$")})
        script.append(f"printf '%s' \"${name}\" > '{path}'")
    script.append('exec "$@"')
    command = ["sh", "-c", "; ".join(script), "mesher-injector-files", *container["command"]]
    return {**container, "env": env, "command": command}


def revision_of(document: object) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_template(text: str) -> Template:
    """Parse and validate; raise TemplateError with every problem found. Nothing else
    escapes: a template of any shape that cannot be loaded is a TemplateError."""
    try:
        return _load(text)
    except TemplateError:
        raise
    except Exception as exc:  # a shape the checks did not foresee must not escape
        raise TemplateError([f"cannot load the template: {type(exc).__name__}: {exc}"]) from exc


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loading that refuses a key given twice in one mapping (YAML says keys are
    unique; PyYAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            if isinstance(key, str | int | float | bool):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load(text: str) -> Template:
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise TemplateError([f"not valid YAML: {_one_line(str(exc))}"]) from exc
    if not isinstance(document, dict):
        raise TemplateError(["the template must be a YAML mapping"])
    problems = _json_problems(document)
    if problems:  # the checks below assume string keys and JSON values
        raise TemplateError(problems)
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
    if problems:
        raise TemplateError(problems)

    discovery: dict[str, Any] = document.get("discovery") or {}
    base = {
        k: v
        for k, v in document.items()
        if k not in ("discovery", "values", "defaults", "nativeSidecars")
    }
    defaults = document.get("defaults") or {}
    version = document.get("version")
    template = Template(
        version="" if version is None else str(version),
        revision=revision_of(document),
        default_discovery=defaults.get("discoveryType"),
        discovery_types=tuple(discovery),
        sidecar_names=frozenset(
            c["name"] for c in [*document["containers"], *(document.get("initContainers") or [])]
        ),
        values=values,
        native_sidecars=document.get("nativeSidecars") is True,
        _base=_compile(base),
        _fragments={name: _compile(fragment or {}) for name, fragment in discovery.items()},
        _pod_key=_key_of(used),
    )
    for discovery_type in template.discovery_types or ("",):
        try:
            template.render(sample_context(discovery_type))  # serialises it: Sidecar.encoded
        except Exception as exc:  # a template that cannot render must never activate
            raise TemplateError(
                [f"rendering discovery type {discovery_type!r} failed: {exc}"]
            ) from exc
    return template


def _key_of(used: set[str]) -> Callable[[RenderContext], tuple[str, ...]]:
    """The render key: the discovery type, then the pod-derived variables used."""
    fields = RenderContext._fields
    indexes = [
        fields.index(_CONTEXT_ATTRIBUTES[name])
        for name in sorted(used)
        if name in _CONTEXT_ATTRIBUTES and name != "discovery.type"
    ]
    if not indexes:
        return lambda ctx: (ctx.discovery_type,)
    # itemgetter of two or more indexes: a tuple, made in C
    return operator.itemgetter(fields.index("discovery_type"), *indexes)


def template_name(key: str) -> str | None:
    """`NAME.yaml` -> NAME (`template.yaml` is the default, named "template"); None for a
    key that is no template (another suffix). A NAME must be a DNS label."""
    if not key.endswith(TEMPLATE_SUFFIX):
        return None
    return key[: -len(TEMPLATE_SUFFIX)]


def valid_template_name(name: str) -> bool:
    return bool(_DNS_LABEL.match(name))


def template_in(data: object, key: str) -> str:
    """The template text under `key` of a ConfigMap's `data`, or TemplateError: what a
    reload and the validating webhook both read."""
    text = data.get(key) if isinstance(data, dict) else None
    if not isinstance(text, str):
        raise TemplateError([f"the ConfigMap has no key {key!r}"])
    return text


def sample_context(discovery_type: str) -> RenderContext:
    """The sample pod every discovery type is rendered against before activation."""
    return SAMPLE_CONTEXT._replace(discovery_type=discovery_type)


def _one_line(text: str) -> str:
    """A YAML error on one line, without PyYAML's "<unicode string>" (the caller names
    the file)."""
    return " ".join(text.replace('in "<unicode string>", ', "").split())


# --- validation -----------------------------------------------------------------

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
        for name in sorted(set(_VARIABLE.findall(text))):
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
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
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
            for name in _VARIABLE.findall(node):
                if name in names:
                    places.setdefault(name, where or "the top level")
        elif isinstance(node, dict):
            stack += [(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(v, f"{where}[{i}]") for i, v in enumerate(node)]
    return places


def _variables_in(node: object) -> set[str]:
    if isinstance(node, str):
        return set(_VARIABLE.findall(node))
    if isinstance(node, dict):
        return set().union(*(_variables_in(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_variables_in(v) for v in node)) if node else set()
    return set()


# --- rendering ------------------------------------------------------------------


def _compile(node: object) -> Renderer:
    """Turn a parsed node into a function of the variables that builds a fresh copy."""
    if isinstance(node, dict):
        items = [(key, _compile(value)) for key, value in node.items()]
        return lambda variables: {key: render(variables) for key, render in items}
    if isinstance(node, list):
        children = [_compile(value) for value in node]
        return lambda variables: [render(variables) for render in children]
    if isinstance(node, str) and _VARIABLE.search(node):
        pieces = _VARIABLE.split(node)  # literal, name, literal, name, ..., literal
        literals = pieces[0::2]
        names = pieces[1::2]

        def substitute(variables: Mapping[str, str]) -> str:
            out = [literals[0]]
            for name, literal in zip(names, literals[1:], strict=True):
                out.append(variables[name])
                out.append(literal)
            return "".join(out)

        return substitute
    return lambda _variables: node
