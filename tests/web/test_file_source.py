from __future__ import annotations

from pathlib import Path

from injector.core.store import Reload, TemplateSet
from injector.core.template import load_template
from injector.web.template_file import FileSource
from tests.support.helpers import DEFAULT_TEMPLATE, SHIPPED_VERSION, bump

GOOD = DEFAULT_TEMPLATE.read_text()


def settled(source: FileSource, store: TemplateSet) -> Reload | None:
    """Two polls in a row, as the server makes them: new content is offered on the second
    (the default template's reload, or None)."""
    assert source.poll(store) == [] or source.missing
    reloads = source.poll(store)
    return reloads[0] if reloads else None


def test_polling_offers_only_changed_content(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(GOOD)
    source, store = FileSource(path), TemplateSet()
    first = settled(source, store)
    assert first is not None
    assert first.result == "applied"
    assert source.poll(store) == []
    path.write_text(GOOD)  # rewritten, same bytes: nothing to do
    assert source.poll(store) == []
    path.write_text(bump(GOOD, "9.9.9"))
    changed = settled(source, store)
    assert changed is not None
    assert changed.result == "applied"
    assert store.template is not None
    assert store.template.version == "9.9.9"


def test_a_mounted_configmap_symlink_swap_is_a_change(tmp_path: Path) -> None:
    # The kubelet's layout: template.yaml -> ..data/template.yaml, ..data -> a timestamped dir.
    for name, version in (("v1", SHIPPED_VERSION), ("v2", "9.9.9")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "template.yaml").write_text(
            bump(GOOD, version) if version != SHIPPED_VERSION else GOOD
        )
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "template.yaml").symlink_to("..data/template.yaml")
    source, store = FileSource(tmp_path / "template.yaml"), TemplateSet()
    settled(source, store)
    assert store.template is not None
    assert store.template.version == SHIPPED_VERSION
    (tmp_path / "..data_tmp").symlink_to("v2")
    (tmp_path / "..data_tmp").rename(tmp_path / "..data")
    reload = settled(source, store)
    assert reload is not None
    assert reload.result == "applied"
    assert store.template.version == "9.9.9"


def test_a_missing_file_is_reported_once_and_its_return_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    source, store = FileSource(path), TemplateSet()
    (gone,) = source.poll(store)
    assert gone.result == "deleted"
    assert source.poll(store) == []
    path.write_text(GOOD)
    back = settled(source, store)
    assert back is not None
    assert back.result == "applied"


def test_a_file_that_is_not_utf8_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_bytes(b"\xff\xfe containers")
    reload = settled(FileSource(path), TemplateSet())
    assert reload is not None
    assert reload.result == "rejected"
    assert "UTF-8" in reload.error


def test_a_torn_in_place_write_is_never_activated(tmp_path: Path) -> None:
    """A writer that truncates and writes in two steps: the half it left between polls is
    itself a valid template (a prefix of the default), yet never offered."""
    path = tmp_path / "template.yaml"
    path.write_text(GOOD)
    source, store = FileSource(path), TemplateSet()
    settled(source, store)
    assert store.template is not None
    good_revision = store.template.revision
    edited = bump(GOOD, "9.9.9")
    half = edited[: edited.index("\n  pilot:\n") + 1]  # discovery sc only
    assert load_template(half).revision != good_revision  # a valid template on its own
    path.write_text(half)
    assert source.poll(store) == []  # read half-way: not offered
    path.write_text(edited)  # the writer finishes
    assert source.poll(store) == []  # changed again since the last poll: not yet
    (reload,) = source.poll(store)
    assert reload.result == "applied"
    assert store.template.version == "9.9.9"
    assert store.template.revision == load_template(edited).revision
