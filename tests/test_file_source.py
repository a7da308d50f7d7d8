from __future__ import annotations

from pathlib import Path

from injector.sources.file import FileSource
from injector.store import TemplateStore
from tests.helpers import DEFAULT_TEMPLATE

GOOD = DEFAULT_TEMPLATE.read_text()


def test_polling_offers_only_changed_content(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(GOOD)
    source, store = FileSource(path), TemplateStore()
    first = source.poll(store)
    assert first is not None
    assert first.result == "applied"
    assert source.poll(store) is None
    path.write_text(GOOD)  # rewritten, same bytes: nothing to do
    assert source.poll(store) is None
    path.write_text(GOOD.replace("1.6.3", "1.6.4"))
    changed = source.poll(store)
    assert changed is not None
    assert changed.result == "applied"
    assert store.template is not None
    assert store.template.version == "1.6.4"


def test_a_mounted_configmap_symlink_swap_is_a_change(tmp_path: Path) -> None:
    # The kubelet's layout: template.yaml -> ..data/template.yaml, ..data -> a timestamped dir.
    for name, version in (("v1", "1.6.3"), ("v2", "1.6.4")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "template.yaml").write_text(GOOD.replace("1.6.3", version))
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "template.yaml").symlink_to("..data/template.yaml")
    source, store = FileSource(tmp_path / "template.yaml"), TemplateStore()
    source.poll(store)
    assert store.template is not None
    assert store.template.version == "1.6.3"
    (tmp_path / "..data_tmp").symlink_to("v2")
    (tmp_path / "..data_tmp").rename(tmp_path / "..data")
    reload = source.poll(store)
    assert reload is not None
    assert reload.result == "applied"
    assert store.template.version == "1.6.4"


def test_a_missing_file_is_reported_once_and_its_return_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    source, store = FileSource(path), TemplateStore()
    gone = source.poll(store)
    assert gone is not None
    assert gone.result == "deleted"
    assert source.poll(store) is None
    path.write_text(GOOD)
    back = source.poll(store)
    assert back is not None
    assert back.result == "applied"


def test_a_file_that_is_not_utf8_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_bytes(b"\xff\xfe containers")
    reload = FileSource(path).poll(TemplateStore())
    assert reload is not None
    assert reload.result == "rejected"
    assert "UTF-8" in reload.error
