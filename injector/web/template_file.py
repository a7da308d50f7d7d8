"""Template source `file`: read a file (or a folder of `NAME.yaml` files) and reload it
when its content changes.

A folder holds the default `template.yaml` and named templates `NAME.yaml`, like the
ConfigMap's keys. Change is detected by content hash, so a mounted ConfigMap's symlink
swap counts. New content is offered only once two polls in a row read the same bytes: a
file written in place (not replaced atomically) can be read half-way, and half a
template may itself be valid YAML. Writers should still replace files atomically (write
a temporary file, then rename it over the template), as the kubelet does for a mounted
ConfigMap.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from injector.core.names import TEMPLATE_KEY, TEMPLATE_SUFFIX
from injector.core.store import Reload, TemplateSet


def template_files(path: Path) -> dict[str, Path]:
    """The template files at `path` under their ConfigMap key: a folder's `NAME.yaml`
    files (no hidden one, such as a mounted ConfigMap's `..data`), or the file itself as
    `template.yaml`. The serving source and `inject --template-file` both read these, and
    the store names and checks them."""
    if path.is_dir():
        return {
            p.name: p
            for p in sorted(path.iterdir())
            if p.name.endswith(TEMPLATE_SUFFIX) and not p.name.startswith(".")
        }
    return {TEMPLATE_KEY: path}


class FileSource:
    __slots__ = ("_digest", "_pending", "path", "read_error")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest: str | None = None
        self._pending: str | None = None
        self.read_error: str | None = None  # why the last poll could not read the template

    @property
    def missing(self) -> bool:
        """The last poll could not read the template (the store was told once)."""
        return self.read_error is not None

    @property
    def description(self) -> str:
        return f"file:{self.path}"

    def _read(self) -> dict[str, bytes]:
        return {key: file.read_bytes() for key, file in template_files(self.path).items()}

    def poll(self, store: TemplateSet) -> list[Reload]:
        """Offer the file(s) to the store if they changed and read the same on the
        previous poll; [] if there is nothing (yet) to offer."""
        try:
            files = self._read()
        except OSError as exc:
            self._pending = None
            if self.read_error is not None:
                return []
            self.read_error = f"cannot read template: {exc}"
            self._digest = None
            return store.source_gone(source=self.description, why=self.read_error)
        self.read_error = None
        digest = hashlib.sha256()
        for name, data in files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        hexdigest = digest.hexdigest()
        if hexdigest == self._digest:
            self._pending = None
            return []
        if hexdigest != self._pending:  # new content: wait for the next poll to read it again
            self._pending = hexdigest
            return []
        self._digest, self._pending = hexdigest, None
        texts: dict[str, object] = {}
        for name, data in files.items():
            try:
                texts[name] = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                if name == TEMPLATE_KEY:
                    return store.reject_all(
                        source=self.description, why=f"template is not UTF-8: {exc}"
                    )
                texts[name] = data  # refused by the store, on its own
        return store.offer_data(texts, source=self.description, default_key=TEMPLATE_KEY)
