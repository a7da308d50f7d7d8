"""Template source `file`: read a file and reload it when its content changes.

Change is detected by content hash, so a mounted ConfigMap's symlink swap counts. A new
content is offered only once two polls in a row read the same bytes: a file written in
place (not replaced atomically) can be read half-way, and half a template may itself be
valid YAML. Writers should still replace the file atomically (write a temporary file,
then rename it over the template), as the kubelet does for a mounted ConfigMap.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from injector.store import Reload, TemplateStore


class FileSource:
    __slots__ = ("_digest", "_missing", "_pending", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest: str | None = None
        self._pending: str | None = None
        self._missing = False

    @property
    def description(self) -> str:
        return f"file:{self.path}"

    def poll(self, store: TemplateStore) -> Reload | None:
        """Offer the file to the store if it changed and read the same on the previous
        poll; None if there is nothing (yet) to offer."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            self._pending = None
            if self._missing:
                return None
            self._missing = True
            self._digest = None
            return store.source_gone(source=self.description, why=f"cannot read template: {exc}")
        self._missing = False
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            self._pending = None
            return None
        if digest != self._pending:  # new content: wait for the next poll to read it again
            self._pending = digest
            return None
        self._digest, self._pending = digest, None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return store.reject(source=self.description, why=f"template is not UTF-8: {exc}")
        return store.offer(text, source=self.description)
