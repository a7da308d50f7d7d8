from __future__ import annotations

import itertools
from collections.abc import Callable

from injector.core.store import TemplateStore
from tests.support.helpers import DEFAULT_TEMPLATE, bump

GOOD = DEFAULT_TEMPLATE.read_text()


def clock() -> Callable[[], float]:
    ticks = itertools.count(1)
    return lambda: float(next(ticks))


def test_valid_template_is_applied_and_identical_content_is_unchanged() -> None:
    store = TemplateStore(clock=clock())
    first = store.offer(GOOD, source="a")
    assert first.result == "applied"
    active = store.active
    assert active is not None
    again = store.offer("# only a comment differs\n" + GOOD, source="b")
    assert again.result == "unchanged"
    assert store.template is active.template  # same object: nothing swapped
    assert store.active.source == "b"  # type: ignore[union-attr]
    assert store.active.loaded_at == active.loaded_at  # type: ignore[union-attr]


def test_invalid_template_is_rejected_and_the_last_good_keeps_serving() -> None:
    store = TemplateStore(clock=clock())
    store.offer(GOOD, source="a")
    good = store.template
    reload = store.offer("containers: [", source="b")
    assert reload.result == "rejected"
    assert reload.previous_revision == good.revision  # type: ignore[union-attr]
    assert store.template is good
    assert store.last_error is not None
    assert store.last_error.source == "b"
    assert store.offer(bump(GOOD, "9.9.9"), source="c").result == "applied"
    assert store.last_error is None


def test_a_vanished_source_before_any_template_leaves_none() -> None:
    store = TemplateStore(clock=clock())
    reload = store.source_gone(source="a", why="gone")
    assert (reload.result, reload.revision) == ("deleted", "")
    assert store.template is None
    assert store.last_error is not None


def test_a_vanished_source_keeps_the_last_good_template() -> None:
    store = TemplateStore(clock=clock())
    applied = store.offer(GOOD, source="a")
    good = store.template
    assert good is not None
    reload = store.source_gone(source="a", why="deleted")
    assert (reload.result, reload.revision) == ("deleted", applied.revision)
    assert store.template is good
    assert store.last_error is not None
    assert store.last_error.error == "deleted"
