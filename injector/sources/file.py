"""Template source `file`: read a file and reload it when its content changes.

Change is detected by content hash, so a mounted ConfigMap's symlink swap counts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from injector.store import Reload, TemplateStore


class FileSource:
    __slots__ = ("_digest", "_missing", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest: str | None = None
        self._missing = False

    @property
    def description(self) -> str:
        return f"file:{self.path}"

    def poll(self, store: TemplateStore) -> Reload | None:
        """Offer the file to the store if it changed since the last poll; None if not."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            if self._missing:
                return None
            self._missing = True
            self._digest = None
            return store.source_gone(source=self.description, why=f"cannot read template: {exc}")
        self._missing = False
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            return None
        self._digest = digest
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return store.reject(source=self.description, why=f"template is not UTF-8: {exc}")
        return store.offer(text, source=self.description)
