"""The active templates and their atomic swap.

Swapping is one reference rebind of an immutable, validated `Template`: a request
reads a template once and sees exactly one revision. `TemplateStore` keeps one template
(the last good one when an offer is refused); `TemplateSet` keeps the default template
and every named one (`NAME.yaml` keys of the ConfigMap), each validated, revisioned and
kept-last-good on its own, so a broken canary never affects the default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from injector.core.names import DEFAULT_TEMPLATE_NAME
from injector.core.template import (
    Template,
    TemplateError,
    load_template,
    template_in,
    template_name,
    valid_template_name,
)

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
    template: str = DEFAULT_TEMPLATE_NAME


class TemplateStore:
    __slots__ = ("_active", "_clock", "_last_error", "name")

    def __init__(
        self, *, clock: Callable[[], float] = time.time, name: str = DEFAULT_TEMPLATE_NAME
    ) -> None:
        self._active: Active | None = None
        self._last_error: Rejection | None = None
        self._clock = clock
        self.name = name

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
            result = "applied"
        self._last_error = None  # the source holds the active template again
        return Reload(
            result=result,
            source=source,
            revision=template.revision,
            version=template.version,
            previous_revision=previous_revision,
            template=self.name,
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
            template=self.name,
        )


class TemplateSet:
    """The default template's store and the named ones'. `template`, `active`,
    `last_error` and `offer` are the default's; `named` maps every active named
    template's name to it (rebuilt, never mutated, on each change)."""

    __slots__ = ("_clock", "_stores", "named")

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._stores: dict[str, TemplateStore] = {DEFAULT_TEMPLATE_NAME: TemplateStore(clock=clock)}
        self.named: Mapping[str, Template] = MappingProxyType({})

    @property
    def default(self) -> TemplateStore:
        return self._stores[DEFAULT_TEMPLATE_NAME]

    @property
    def template(self) -> Template | None:
        return self.default.template

    @property
    def active(self) -> Active | None:
        return self.default.active

    @property
    def last_error(self) -> Rejection | None:
        return self.default.last_error

    def stores(self) -> dict[str, TemplateStore]:
        return dict(self._stores)

    def offer(self, text: str, *, source: str) -> Reload:
        return self._done([self.default.offer(text, source=source)])[0]

    def offer_data(
        self, data: Mapping[str, object], *, source: str, default_key: str
    ) -> list[Reload]:
        """Every `NAME.yaml` entry of a ConfigMap's data (or a folder's files): the default
        from `default_key` (missing: refused, last good kept), each named one on its own; a
        named template whose key is gone is removed."""
        reloads: list[Reload] = []
        try:
            reloads.append(self.default.offer(template_in(data, default_key), source=source))
        except TemplateError as exc:
            reloads.append(self.default.reject(source=source, why=str(exc)))
        seen = {DEFAULT_TEMPLATE_NAME}
        for key, text in sorted(data.items()):
            name = template_name(key)
            if name is None or key == default_key or name == DEFAULT_TEMPLATE_NAME:
                continue
            store = self._stores.get(name) or TemplateStore(clock=self._clock, name=name)
            if not valid_template_name(name):
                reloads.append(
                    store.reject(source=source, why=f"{key!r}: a template name must be a DNS label")
                )
                continue
            seen.add(name)
            self._stores[name] = store
            if isinstance(text, str):
                reloads.append(store.offer(text, source=source))
            else:
                reloads.append(store.reject(source=source, why=f"{key!r} is not text"))
        for name in sorted(set(self._stores) - seen):
            gone = self._stores.pop(name)
            reloads.append(
                Reload(
                    result="deleted",
                    source=source,
                    error=f"{name}.yaml is gone: the named template is removed",
                    previous_revision=gone.template.revision if gone.template else "",
                    template=name,
                )
            )
        return self._done(reloads)

    def source_gone(self, *, source: str, why: str) -> list[Reload]:
        """The whole source vanished: every template keeps its last good version."""
        return self._done([s.source_gone(source=source, why=why) for s in self._stores.values()])

    def reject_all(self, *, source: str, why: str) -> list[Reload]:
        return self._done([self.default.reject(source=source, why=why)])

    def _done(self, reloads: list[Reload]) -> list[Reload]:
        self.named = MappingProxyType(
            {
                name: store.template
                for name, store in self._stores.items()
                if name != DEFAULT_TEMPLATE_NAME and store.template is not None
            }
        )
        return reloads
