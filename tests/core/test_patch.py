from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from injector.core import patch
from injector.core.patch import PatchConflict, escape
from injector.core.sidecar import sample_context
from injector.core.template import Template, load_template
from tests.support.helpers import DEFAULT_TEMPLATE, admission_fixture, apply, assert_only_added

ANNOTATIONS = {"sidecar.mesher.io/status": "injected", "a~b/c": "1"}


def build_patch(**kwargs: Any) -> list[dict[str, Any]]:
    """The patch as objects: what the API server decodes from the bytes."""
    ops: list[dict[str, Any]] = orjson.loads(patch.build_patch(**kwargs))
    return ops


def pod_of(name: str) -> dict[str, Any]:
    pod: dict[str, Any] = admission_fixture(name)["request"]["object"]
    return pod


def with_init(extra: str) -> Template:
    return load_template(DEFAULT_TEMPLATE.read_text().replace("initContainers: []", extra))


def test_escape_follows_rfc_6901_order() -> None:
    assert escape("sidecar.mesher.io/status") == "sidecar.mesher.io~1status"
    assert escape("a~1/b") == "a~01~1b"


def test_annotations_map_is_created_whole_when_missing(template: Template) -> None:
    pod = pod_of("plain-no-annotations")
    ops = build_patch(
        pod=pod, sidecar=template.render(sample_context("sc")), annotations=ANNOTATIONS
    )
    assert {"op": "add", "path": "/metadata/annotations", "value": ANNOTATIONS} in ops
    assert apply(pod, ops)["metadata"]["annotations"] == ANNOTATIONS


def test_annotation_keys_are_escaped_into_an_existing_map(template: Template) -> None:
    pod = pod_of("server-mesher")
    ops = build_patch(
        pod=pod, sidecar=template.render(sample_context("sc")), annotations=ANNOTATIONS
    )
    paths = {op["path"] for op in ops}
    assert "/metadata/annotations/sidecar.mesher.io~1status" in paths
    assert "/metadata/annotations/a~0b~1c" in paths
    patched = apply(pod, ops)
    assert patched["metadata"]["annotations"]["a~b/c"] == "1"
    assert_only_added(pod, patched)


def test_sidecar_is_appended_after_the_app_containers(template: Template) -> None:
    pod = pod_of("rich-pod")
    patched = apply(
        pod, build_patch(pod=pod, sidecar=template.render(sample_context("sc")), annotations={})
    )
    assert [c["name"] for c in patched["spec"]["containers"]] == ["app", "log-shipper", "mesher"]


def test_init_containers_go_first_or_last_as_the_template_says() -> None:
    pod = pod_of("rich-pod")
    init = "initContainers:\n  - name: mesher-init\n    image: busybox\n  - name: mesher-init2\n    image: busybox"
    for position, expected in [
        ("first", ["mesher-init", "mesher-init2", "migrate"]),
        ("last", ["migrate", "mesher-init", "mesher-init2"]),
    ]:
        t = load_template(
            DEFAULT_TEMPLATE.read_text()
            .replace("initContainers: []", init)
            .replace("initContainersPosition: first", f"initContainersPosition: {position}")
        )
        patched = apply(
            pod, build_patch(pod=pod, sidecar=t.render(sample_context("sc")), annotations={})
        )
        assert [c["name"] for c in patched["spec"]["initContainers"]] == expected
        assert_only_added(pod, patched)


def test_init_containers_list_is_created_when_the_pod_has_none() -> None:
    pod = pod_of("server-mesher")
    t = with_init("initContainers:\n  - name: mesher-init\n    image: busybox")
    ops = build_patch(pod=pod, sidecar=t.render(sample_context("sc")), annotations={})
    assert any(op["path"] == "/spec/initContainers" for op in ops)
    assert [c["name"] for c in apply(pod, ops)["spec"]["initContainers"]] == ["mesher-init"]


def test_volumes_and_pull_secrets_are_added_without_duplicates() -> None:
    pod = pod_of("rich-pod")
    text = (
        DEFAULT_TEMPLATE.read_text()
        .replace("volumes: []", "volumes:\n  - name: mesher-conf\n    emptyDir: {}")
        .replace(
            "imagePullSecrets: []", "imagePullSecrets:\n  - name: regcred\n  - name: mesher-pull"
        )
    )
    t = load_template(text)
    patched = apply(
        pod, build_patch(pod=pod, sidecar=t.render(sample_context("sc")), annotations={})
    )
    assert [v["name"] for v in patched["spec"]["volumes"]][-1] == "mesher-conf"
    assert [s["name"] for s in patched["spec"]["imagePullSecrets"]] == ["regcred", "mesher-pull"]


def test_a_volume_name_clash_is_a_conflict_not_an_overwrite() -> None:
    pod = pod_of("rich-pod")
    t = load_template(
        DEFAULT_TEMPLATE.read_text().replace(
            "volumes: []", "volumes:\n  - name: data\n    emptyDir: {}"
        )
    )
    with pytest.raises(PatchConflict, match="volume named 'data'"):
        build_patch(pod=pod, sidecar=t.render(sample_context("sc")), annotations={})


def test_app_env_is_added_only_where_missing(template: Template) -> None:
    pod = pod_of("client-mesher")
    original = copy.deepcopy(pod)
    ops = build_patch(pod=pod, sidecar=template.render(sample_context("sc")), annotations={})
    assert not any(op["path"].startswith("/spec/containers/0/env") for op in ops)
    assert pod == original  # building a patch never mutates the request
