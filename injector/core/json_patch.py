"""JSON Patch operations as bytes (pure): what a render serialises once (sidecar.py) and
each admission's patch is put together from (patch.py)."""

from __future__ import annotations

from collections.abc import Sequence


def add_op(path: bytes, value: bytes) -> bytes:
    """One JSON Patch add operation; `path` is already a JSON string, `value` JSON."""
    return b'{"op":"add","path":%b,"value":%b}' % (path, value)


def json_array(items: Sequence[bytes]) -> bytes:
    """The JSON array of already serialised `items`."""
    return b"[" + b",".join(items) + b"]"
