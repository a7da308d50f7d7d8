"""Generated pods and annotation values for the property tests, and the recorded pod
with fields broken; the templates they are decided against."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from injector.core.template import Template, load_template
from tests.support.helpers import DEFAULT_TEMPLATE, admission_fixture, bump

TEMPLATE: Template = load_template(DEFAULT_TEMPLATE.read_text())
NAMED = {"canary": load_template(bump(DEFAULT_TEMPLATE.read_text(), "1.7.0"))}

names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
text = st.text(max_size=30)
# one_of picks each branch alike: most pods ask for injection with a valid type.
inject_values = st.one_of(
    st.just("yes"), st.just("y"), st.sampled_from(["YES", " y ", "no", "n", "true", ""]), text
)
discovery_values = st.one_of(st.just("sc"), st.just("pilot"), st.sampled_from(["consul", ""]), text)
port_items = st.one_of(
    st.builds(
        lambda p, n: f"{p}:{n}", st.sampled_from(["rest", "grpc", "grps"]), st.integers(1, 65535)
    ),
    st.builds(
        lambda p, n: f"{p}:{n}", st.sampled_from(["rest", "http", ""]), st.integers(-5, 70000)
    ),
    text,
)
ports_values = st.lists(port_items, max_size=3).map(",".join)
native_values = st.one_of(st.sampled_from(["yes", "no", "Y", "maybe"]), text)
quantity_values = st.one_of(
    st.sampled_from(["100m", "0.5", "64Mi", "1Gi", "2", "1e3", "-1", "lots", "999Ei", ""]), text
)


def env_lists() -> st.SearchStrategy[list[dict[str, str]]]:
    return st.lists(
        st.fixed_dictionaries(
            {"name": st.sampled_from(["A", "B", "http_proxy", "SERVICE_NAME"]), "value": text}
        ),
        max_size=3,
        unique_by=lambda e: e["name"],
    )


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    container_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    containers = []
    for name in container_names:
        c: dict[str, Any] = {"name": name, "image": "img:1"}
        if draw(st.booleans()):
            c["env"] = draw(env_lists())
        if draw(st.booleans()):
            c["ports"] = [{"containerPort": draw(st.integers(1, 65535))}]
        containers.append(c)
    annotations = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {"sidecar.mesher.io/inject": inject_values},
                optional={
                    "sidecar.mesher.io/discoveryType": discovery_values,
                    "sidecar.mesher.io/servicePorts": ports_values,
                    "sidecar.mesher.io/nativeSidecar": native_values,
                    "sidecar.mesher.io/template": st.sampled_from(
                        ["canary", "template", "nope", ""]
                    ),
                    "sidecar.mesher.io/proxyCPU": quantity_values,
                    "sidecar.mesher.io/proxyMemoryLimit": quantity_values,
                    "other/key~x": text,
                },
            ),
        )
    )
    metadata: dict[str, Any] = draw(
        st.sampled_from([{"name": "pod"}, {"generateName": "web-abc12-"}])
    )
    if annotations is not None:
        metadata["annotations"] = annotations
    if draw(st.booleans()):
        metadata["labels"] = draw(
            st.dictionaries(st.sampled_from(["app", "version", "x"]), names, max_size=3)
        )
    spec: dict[str, Any] = {"containers": containers}
    if draw(st.booleans()):
        spec["initContainers"] = [{"name": "init-" + container_names[0], "image": "i:1"}]
    if draw(st.booleans()):
        spec["volumes"] = [{"name": "vol", "emptyDir": {}}]
    if draw(st.booleans()):
        spec["imagePullSecrets"] = [{"name": "cred"}]
    if draw(st.booleans()):
        spec["hostNetwork"] = draw(st.booleans())
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def review_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "chassis",
            "object": pod,
        },
    }


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


RECORDED_POD = admission_fixture("rich-pod")["request"]["object"]
POD_PATHS = _paths(RECORDED_POD)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


# up to three fields of the recorded pod, each set to any JSON value
broken_fields = st.lists(st.tuples(st.sampled_from(POD_PATHS), json_values), min_size=1, max_size=3)


def recorded_pod_with(edits: list[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    """A copy of the recorded pod with `edits` (path, value) made where the path exists."""
    pod: dict[str, Any] = copy.deepcopy(RECORDED_POD)
    for path, value in edits:
        node = pod
        try:
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit changed the shape above this path
    return pod
