"""Hand-built RFC 6902 operations that add a rendered sidecar to a pod (pure).

Never removes or overwrites what the pod already had; a missing map or list is
created whole, since JSON Patch cannot add into a parent that does not exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from injector.template import Sidecar

Operation = dict[str, Any]


class PatchConflict(ValueError):
    """The pod already holds something the sidecar would add under the same name."""


def escape(token: str) -> str:
    """RFC 6901: `~` becomes `~0` first, then `/` becomes `~1`."""
    return token.replace("~", "~0").replace("/", "~1")


def build_patch(
    *, pod: Mapping[str, Any], sidecar: Sidecar, annotations: Mapping[str, str]
) -> list[Operation]:
    spec: Mapping[str, Any] = pod.get("spec") or {}
    metadata: Mapping[str, Any] = pod.get("metadata") or {}
    ops: list[Operation] = []

    app_containers: list[Mapping[str, Any]] = spec.get("containers") or []
    init_containers: list[Mapping[str, Any]] = spec.get("initContainers") or []
    taken = {c.get("name") for c in [*app_containers, *init_containers]}
    for added in [*sidecar.containers, *sidecar.init_containers]:
        if added["name"] in taken:
            raise PatchConflict(f"the pod already has a container named {added['name']!r}")

    for index, container in enumerate(app_containers):
        ops += _add_env(index, container, sidecar.app_env)
    # Native sidecars (Kubernetes 1.29+): the sidecar containers run first among the init
    # containers, restartPolicy Always, so they start before everything and a Job completes.
    native = (
        [{**c, "restartPolicy": "Always"} for c in sidecar.containers] if sidecar.native else []
    )
    if not sidecar.native:
        ops += _append("/spec/containers", spec.get("containers"), sidecar.containers)
    first = [*native, *(sidecar.init_containers if sidecar.init_containers_first else [])]
    last = [] if sidecar.init_containers_first else sidecar.init_containers
    if spec.get("initContainers") is None:
        if first or last:
            ops.append(_add("/spec/initContainers", [*first, *last]))
    else:
        ops += [_add(f"/spec/initContainers/{i}", c) for i, c in enumerate(first)]
        ops += _append("/spec/initContainers", spec["initContainers"], last)

    pod_volumes = {v.get("name") for v in spec.get("volumes") or []}
    for volume in sidecar.volumes:
        if volume["name"] in pod_volumes:
            raise PatchConflict(f"the pod already has a volume named {volume['name']!r}")
    ops += _append("/spec/volumes", spec.get("volumes"), sidecar.volumes)

    pod_secrets = {s.get("name") for s in spec.get("imagePullSecrets") or []}
    new_secrets = [s for s in sidecar.image_pull_secrets if s["name"] not in pod_secrets]
    ops += _append("/spec/imagePullSecrets", spec.get("imagePullSecrets"), new_secrets)

    if metadata.get("annotations") is None:
        ops.append(_add("/metadata/annotations", dict(annotations)))
    else:
        ops += [
            _add(f"/metadata/annotations/{escape(key)}", value)
            for key, value in annotations.items()
        ]
    return ops


def _add(path: str, value: object) -> Operation:
    return {"op": "add", "path": path, "value": value}


def _append(path: str, existing: object, items: list[dict[str, Any]]) -> list[Operation]:
    if not items:
        return []
    if existing is None:
        return [_add(path, items)]
    return [_add(f"{path}/-", item) for item in items]


def _add_env(
    index: int, container: Mapping[str, Any], env: list[dict[str, Any]]
) -> list[Operation]:
    defined = {e.get("name") for e in container.get("env") or []}
    missing = [e for e in env if e["name"] not in defined]
    return _append(f"/spec/containers/{index}/env", container.get("env"), missing)
