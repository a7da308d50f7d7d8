"""The active template and its atomic swap.

Swapping is one reference rebind of an immutable, validated `Template`: a request
reads `store.template` once and sees exactly one revision.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from injector.template import Template, TemplateError, load_template

ReloadResult = Literal["applied", "rejected", "unchanged", "deleted"]


@dataclass(frozen=True, slots=True)
class Active:
    template: Template
    source: str
    loaded_at: float


@dataclass(frozen=True, slots=True)
class Rejection:
    source: str
    error: str
    at: float


@dataclass(frozen=True, slots=True)
class Reload:
    """What one offered template text did to the store."""

    result: ReloadResult
    source: str
    revision: str = ""
    version: str = ""
    error: str = ""
    previous_revision: str = ""


class TemplateStore:
    __slots__ = ("_active", "_clock", "_last_error")

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._active: Active | None = None
        self._last_error: Rejection | None = None
        self._clock = clock

    @property
    def active(self) -> Active | None:
        return self._active

    @property
    def template(self) -> Template | None:
        active = self._active
        return active.template if active else None

    @property
    def last_error(self) -> Rejection | None:
        return self._last_error

    def offer(self, text: str, *, source: str) -> Reload:
        """Validate `text`; activate it if valid and new. The last good template stays
        active when it is not."""
        previous = self._active
        previous_revision = previous.template.revision if previous else ""
        try:
            template = load_template(text)
        except TemplateError as exc:
            return self.reject(source=source, why=str(exc))
        if previous and previous.template.revision == template.revision:
            self._active = Active(
                template=previous.template, source=source, loaded_at=previous.loaded_at
            )
            result: ReloadResult = "unchanged"
        else:
            self._active = Active(template=template, source=source, loaded_at=self._clock())
            self._last_error = None
            result = "applied"
        return Reload(
            result=result,
            source=source,
            revision=template.revision,
            version=template.version,
            previous_revision=previous_revision,
        )

    def reject(self, *, source: str, why: str) -> Reload:
        """A new template could not be used: record why, keep the last good one."""
        return self._keep(result="rejected", source=source, why=why)

    def source_gone(self, *, source: str, why: str) -> Reload:
        """The template's source vanished: keep serving the last good template."""
        return self._keep(result="deleted", source=source, why=why)

    def _keep(self, *, result: ReloadResult, source: str, why: str) -> Reload:
        self._last_error = Rejection(source=source, error=why, at=self._clock())
        active = self._active
        return Reload(
            result=result,
            source=source,
            error=why,
            # A deletion reports what keeps serving; a rejection, what was offered (nothing).
            revision=active.template.revision if active and result == "deleted" else "",
            version=active.template.version if active and result == "deleted" else "",
            previous_revision=active.template.revision if active else "",
        )
