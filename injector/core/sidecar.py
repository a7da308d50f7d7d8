"""What one rendering of the template adds to a pod (pure): the render context, the
sidecar's pieces and their JSON bytes, the render cache, and the script that writes a
discovery type's files before mesher runs."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import orjson

from injector.core import annotations as ann
from injector.core.json_patch import add_op, json_array
from injector.core.limits import RENDER_CACHE_BYTES

FILE_ENV_PREFIX = "MESHER_INJECTOR_FILE_"
_FILES_ARGV0 = "mesher-injector-files"  # $0 of the script that writes them
_FILE_LINE = re.compile(rf"printf '%s' \"\$({FILE_ENV_PREFIX}\d+)\" > '([^']*)'")
# The context variables that come from the pod, as RenderContext attributes.
CONTEXT_ATTRIBUTES = {
    "pod.name": "pod_name",
    "pod.namespace": "pod_namespace",
    "service.name": "service_name",
    "service.version": "service_version",
    "service.ports": "service_ports",
    "discovery.type": "discovery_type",
}
CONTEXT_VARIABLES = frozenset({*CONTEXT_ATTRIBUTES, "template.revision"})


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


def sample_context(discovery_type: str) -> RenderContext:
    """The sample pod every discovery type is rendered against before activation."""
    return SAMPLE_CONTEXT._replace(discovery_type=discovery_type)


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


def with_files(container: dict[str, Any], files: Mapping[str, str]) -> dict[str, Any]:
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
    command = ["sh", "-c", "; ".join(script), _FILES_ARGV0, *container["command"]]
    return {**container, "env": env, "command": command}


def files_of(container: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """`with_files` undone: the container as the template declares it, and the files it
    writes by path ({} for a container that writes none)."""
    command = container.get("command")
    if not (
        isinstance(command, list)
        and len(command) >= 4
        and command[:2] == ["sh", "-c"]
        and command[3] == _FILES_ARGV0
        and isinstance(command[2], str)
    ):
        return dict(container), {}
    paths = dict(_FILE_LINE.findall(command[2]))  # env name -> path
    env = [e for e in container.get("env") or [] if isinstance(e, dict)]
    texts = {e["name"]: str(e.get("value", "")) for e in env if e.get("name") in paths}
    files = {path: texts.get(name, "").replace("$$", "$") for name, path in paths.items()}
    kept = [e for e in env if e.get("name") not in paths]
    declared = {k: v for k, v in container.items() if k != "env"}
    declared["command"] = command[4:]
    if kept:
        declared["env"] = kept
    return declared, files


def resources_problem(sidecar: Sidecar) -> str:
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
