"""Hand-built RFC 6902 operations that add a rendered sidecar to a pod (pure).

Never removes or overwrites what the pod already had; a missing map or list is
created whole, since JSON Patch cannot add into a parent that does not exist.

The patch is written as JSON bytes, put together from the sidecar's pieces serialised
once per render (`Sidecar.encoded`): the pod only decides which operations, at which
list indexes, and which app containers get which env. The bytes are exactly what
`orjson.dumps` makes of the same operations as objects.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from injector.core.json_patch import add_op, json_array
from injector.core.sidecar import Sidecar


class PatchConflict(ValueError):
    """The pod already holds something the sidecar would add under the same name."""


def escape(token: str) -> str:
    """RFC 6901: `~` becomes `~0` first, then `/` becomes `~1`."""
    return token.replace("~", "~0").replace("/", "~1")


def build_patch(
    *, pod: Mapping[str, Any], sidecar: Sidecar, annotations: Mapping[str, str]
) -> bytes:
    """The JSON Patch document (a JSON array) adding `sidecar` and `annotations` to
    `pod` (a pod `pods.pod_shape_problem` passes); PatchConflict when a name is
    taken."""
    spec: Mapping[str, Any] = pod.get("spec") or {}
    metadata: Mapping[str, Any] = pod.get("metadata") or {}
    encoded = sidecar.encoded
    ops: list[bytes] = []

    app_containers: list[Mapping[str, Any]] = spec.get("containers") or []
    init_containers: list[Mapping[str, Any]] = spec.get("initContainers") or []
    for container in (*app_containers, *init_containers):
        if container.get("name") in encoded.container_names:
            taken = {c.get("name") for c in (*app_containers, *init_containers)}
            name = next(
                c["name"]
                for c in sidecar.containers + sidecar.init_containers
                if c["name"] in taken
            )
            raise PatchConflict(f"the pod already has a container named {name!r}")

    if encoded.app_env:
        for index, container in enumerate(app_containers):
            env = container.get("env")
            if env is None:  # the usual case: the whole list, serialised once per render
                ops.append(add_op(b'"/spec/containers/%d/env"' % index, encoded.app_env_array))
                continue
            defined = {e.get("name") for e in env}
            missing = [json for name, json in encoded.app_env if name not in defined]
            _append(ops, b'"/spec/containers/%d/env' % index, env, missing)
    # Native sidecars (Kubernetes 1.29+): the sidecar containers run first among the init
    # containers, restartPolicy Always, so they start before everything and a Job completes.
    native = encoded.containers if sidecar.native else ()
    if encoded.container_ops and not sidecar.native:
        ops.append(encoded.container_ops)  # a pod always has containers: append to them
    before = encoded.init_containers if sidecar.init_containers_first else ()
    after = () if sidecar.init_containers_first else encoded.init_containers
    if spec.get("initContainers") is None:
        if native or encoded.init_containers:
            ops.append(add_op(b'"/spec/initContainers"', json_array((*native, *before, *after))))
    else:
        for index, json in enumerate((*native, *before)):
            ops.append(add_op(b'"/spec/initContainers/%d"' % index, json))
        _append(ops, b'"/spec/initContainers', spec["initContainers"], after)

    if sidecar.volumes:
        pod_volumes = spec.get("volumes")
        if pod_volumes:
            names = {v.get("name") for v in pod_volumes}
            for added in sidecar.volumes:
                if added["name"] in names:
                    raise PatchConflict(f"the pod already has a volume named {added['name']!r}")
        _append(ops, b'"/spec/volumes', pod_volumes, encoded.volumes)

    if encoded.image_pull_secrets:
        secrets = spec.get("imagePullSecrets")
        new = [json for _, json in encoded.image_pull_secrets]
        if secrets:
            pod_secrets = {s.get("name") for s in secrets}
            new = [json for name, json in encoded.image_pull_secrets if name not in pod_secrets]
        _append(ops, b'"/spec/imagePullSecrets', secrets, new)

    marks = _annotation_ops(tuple(annotations.items()), metadata.get("annotations") is None)
    if marks:
        ops.append(marks)
    return json_array(ops)


# Keyed on the injector's own annotations (its status and each template's revision),
# never on anything from a request.
@functools.lru_cache(maxsize=64)
def _annotation_ops(annotations: tuple[tuple[str, str], ...], create: bool) -> bytes:
    """The operations adding `annotations`, joined; creating the map when the pod has none."""
    if create:
        return add_op(b'"/metadata/annotations"', orjson.dumps(dict(annotations)))
    return b",".join(
        add_op(orjson.dumps(f"/metadata/annotations/{escape(key)}"), orjson.dumps(value))
        for key, value in annotations
    )


def _append(ops: list[bytes], path: bytes, existing: object, items: Sequence[bytes]) -> None:
    """Add `items` at the end of the list at `path` (an opening quote and the path, no
    closing quote), creating it whole if the pod has none."""
    if not items:
        return
    if existing is None:
        ops.append(add_op(path + b'"', json_array(items)))
        return
    end = path + b'/-"'
    ops.extend(add_op(end, item) for item in items)
