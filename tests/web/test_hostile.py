"""Hostile and broken input (DESIGN 12): every attack gets a small, clear answer, quickly,
and leaves nothing behind. The bounds asserted are those of injector/core/limits.py."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from injector.core import limits
from injector.core.annotations import SERVICE_PORTS, STATUS, TEMPLATE_REVISION
from injector.core.decide import decide
from injector.core.pods import pod_facts
from injector.core.responses import Answer, answer
from injector.core.store import TemplateStore
from injector.core.template import Template, load_template
from tests.support.helpers import DEFAULT_TEMPLATE, admission_fixture, apply, decode_patch
from tests.support.servers import start_server

TEMPLATE: Template = load_template(DEFAULT_TEMPLATE.read_text())
MiB = 1024 * 1024


def review_with(**annotations: str) -> dict[str, Any]:
    review = admission_fixture("server-mesher")
    review["request"]["object"]["metadata"]["annotations"].update(annotations)
    return review


def answered(review: dict[str, Any], template: Template | None = TEMPLATE) -> Answer:
    return answer(orjson.dumps(review), template)


def assert_bounded(result: Answer) -> None:
    """Every answer is small whatever the request: message, warnings, whole body."""
    assert len(result.body) <= 64 * 1024 or (result.outcome and result.outcome.patch)
    if result.outcome is not None:
        assert len(result.outcome.message) <= limits.MAX_MESSAGE_CHARS
        assert len(result.outcome.warnings) <= limits.MAX_WARNINGS
        assert all(len(w) <= limits.MAX_WARNING_CHARS for w in result.outcome.warnings)
    assert len(result.error) <= limits.MAX_MESSAGE_CHARS


def test_megabytes_of_commas_in_service_ports_get_a_short_denial() -> None:
    result = answered(review_with(**{SERVICE_PORTS: "," * (3 * MiB)}))
    assert result.outcome is not None
    assert result.outcome.reason == "invalid-service-ports"
    assert f"it has {3 * MiB + 1} items; at most {limits.MAX_SERVICE_PORTS}" in (
        result.outcome.message
    )
    assert len(result.body) < 4096
    assert_bounded(result)


def test_every_port_bad_gives_a_capped_message() -> None:
    ports = ",".join(f"rest:{70000 + n}" for n in range(limits.MAX_SERVICE_PORTS))
    result = answered(review_with(**{SERVICE_PORTS: ports}))
    assert result.outcome is not None
    assert result.outcome.reason == "invalid-service-ports"
    assert "more" in result.outcome.message  # "... and N more"
    assert_bounded(result)


def test_many_typo_ports_give_a_capped_warning_list() -> None:
    ports = ",".join(f"grps:{n}" for n in range(1, limits.MAX_SERVICE_PORTS + 1))
    result = answered(review_with(**{SERVICE_PORTS: ports}))
    assert result.outcome is not None
    assert result.outcome.decision == "injected"
    warnings = result.outcome.warnings
    assert len(warnings) == limits.MAX_WARNINGS
    assert warnings[-1] == (
        f"... and {2 * limits.MAX_SERVICE_PORTS - limits.MAX_WARNINGS + 1} more warnings"
    )
    assert_bounded(result)


def test_a_pod_with_thousands_of_containers_is_denied_not_patched() -> None:
    review = admission_fixture("server-mesher")
    spec = review["request"]["object"]["spec"]
    spec["containers"] = [{"name": f"c{n}", "image": "x"} for n in range(30_000)]
    result = answered(review)
    assert result.outcome is not None
    assert result.outcome.reason == "pod-too-large"
    assert result.outcome.decision == "denied"
    assert "30000 containers" in result.outcome.message
    assert "patch" not in json.loads(result.body)["response"]
    assert_bounded(result)


def test_the_container_limit_still_injects_at_the_bound() -> None:
    review = admission_fixture("server-mesher")
    spec = review["request"]["object"]["spec"]
    spec["containers"] = [{"name": f"c{n}", "image": "x"} for n in range(limits.MAX_CONTAINERS)]
    result = answered(review)
    assert result.outcome is not None
    assert result.outcome.decision == "injected"
    assert len(result.body) < 64 * 1024  # one env op per app container, no more


def test_a_megabyte_label_is_denied_and_never_cached() -> None:
    template = load_template(DEFAULT_TEMPLATE.read_text())
    before = template.renders.size
    review = admission_fixture("server-mesher")
    review["request"]["object"]["metadata"]["labels"]["app"] = "a" * MiB
    result = answered(review, template)
    assert result.outcome is not None
    assert result.outcome.reason == "pod-too-large"
    assert "service.name would be 1048576 characters" in result.outcome.message
    assert template.renders.size == before
    assert_bounded(result)


def test_a_long_uid_and_kind_are_refused_with_short_messages() -> None:
    review = admission_fixture("server-mesher")
    review["request"]["uid"] = "u" * MiB
    result = answered(review)
    assert result.status == 400
    assert "request.uid is 1048576 characters long" in result.error
    review = {"kind": "k" * MiB, "apiVersion": "admission.k8s.io/v1"}
    result = answered(review)
    assert result.status == 400
    assert len(result.error) < 200


def test_a_non_create_review_whose_metadata_is_not_an_object_is_skipped() -> None:
    review = admission_fixture("server-mesher")
    review["request"]["operation"] = "UPDATE"
    review["request"]["object"]["metadata"] = ["not", "an", "object"]
    result = answered(review)
    assert result.status == 200
    assert result.outcome is not None
    assert result.outcome.reason == "not-a-pod-create"
    facts = pod_facts(review["request"])
    assert facts.namespace == "chassis"


@pytest.mark.parametrize(
    "request_object",
    [None, 7, "pod", [], {"metadata": 1}, {"metadata": {"ownerReferences": "x"}}],
)
def test_pod_facts_never_raise_whatever_the_object(request_object: object) -> None:
    facts = pod_facts({"object": request_object, "namespace": ["x"]})
    assert facts.namespace == ""


def test_log_fields_from_the_pod_are_bounded() -> None:
    review = admission_fixture("server-mesher-7d9f8b6c5")
    metadata = review["request"]["object"]["metadata"]
    metadata["generateName"] = "g" * MiB
    metadata["ownerReferences"][0]["name"] = "o" * MiB
    facts = pod_facts(review["request"])
    assert len(facts.name) <= limits.MAX_LOG_FIELD_CHARS
    assert len(facts.owner) <= limits.MAX_LOG_FIELD_CHARS


def test_a_numeric_label_is_refused_naming_the_field() -> None:
    review = admission_fixture("server-mesher-7d9f8b6c5")
    review["request"]["object"]["metadata"]["labels"]["pod-template-hash"] = 7
    result = answered(review)
    assert result.status == 400
    assert result.error == (
        "request.object is not a valid Pod: metadata.labels: every value must be a string"
    )


@pytest.mark.parametrize("field", ["annotations", "labels"])
def test_a_list_where_a_map_belongs_is_refused(field: str) -> None:
    review = admission_fixture("server-mesher")
    review["request"]["object"]["metadata"][field] = []
    result = answered(review)
    assert result.status == 400
    assert result.error == f"request.object is not a valid Pod: metadata.{field} must be an object"


def test_the_injector_owns_status_and_template_revision_and_nothing_else() -> None:
    """A pod that brings its own template-revision (copied from an injected pod, say) gets
    the injector's; its other annotations stay as they were."""
    review = review_with(**{TEMPLATE_REVISION: "stale", "team": "a"})
    pod = review["request"]["object"]
    result = answered(review)
    assert result.outcome is not None
    assert result.outcome.decision == "injected"
    patched = apply(pod, decode_patch(json.loads(result.body)["response"]))
    annotations = patched["metadata"]["annotations"]
    assert annotations[TEMPLATE_REVISION] == TEMPLATE.revision
    assert annotations[STATUS] == "injected"
    before = {k: v for k, v in pod["metadata"]["annotations"].items() if k != TEMPLATE_REVISION}
    assert {k: annotations[k] for k in before} == before


def test_unrelated_huge_annotations_are_never_copied() -> None:
    review = review_with(big="x" * (2 * MiB))
    request = review["request"]
    outcome = decide(request, TEMPLATE)
    assert outcome.decision == "injected"
    assert len(outcome.patch) < 64 * 1024


# --- templates of any shape --------------------------------------------------------

BROKEN_TEMPLATES = {
    "an integer key": ("resources:\n      limits: {1: 256Mi}", "key 1 at"),
    "mixed key types": ("resources:\n      limits: {memory: 256Mi, 1: 2}", "key 1 at"),
    "a boolean key": ("resources:\n      limits: {yes: 1}", "key True at"),
    "a date value": ("resources:\n      limits: {memory: 2026-01-01}", "is a date"),
    "binary": ("resources:\n      limits: {memory: !!binary aGk=}", "is a bytes"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_TEMPLATES))
def test_a_template_with_non_json_content_is_rejected_and_the_last_good_kept(name: str) -> None:
    replacement, needle = BROKEN_TEMPLATES[name]
    good = DEFAULT_TEMPLATE.read_text()
    text = good.replace(
        "resources:\n      requests:\n        cpu: 50m\n        memory: 64Mi\n"
        "      limits:\n        memory: 256Mi",
        replacement,
    )
    assert text != good
    store = TemplateStore()
    store.offer(good, source="test")
    reload = store.offer(text, source="test")
    assert reload.result == "rejected"
    assert needle in reload.error
    assert store.template is not None
    assert store.template.revision == TEMPLATE.revision
    assert store.last_error is not None


def test_a_yaml_alias_bomb_is_rejected_quickly() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for n in range(1, 9):
        lines.append(f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]")
    text = "values:\n" + "\n".join("  " + line for line in lines) + "\ncontainers: []\n"
    reload = TemplateStore().offer(text, source="test")
    assert reload.result == "rejected"
    assert f"more than {limits.MAX_TEMPLATE_NODES} values" in reload.error


def test_deeply_nested_yaml_is_a_rejection_not_a_recursion_error() -> None:
    reload = TemplateStore().offer("values: " + "[" * 5000 + "]" * 5000, source="test")
    assert reload.result == "rejected"


def test_a_self_referencing_alias_is_rejected() -> None:
    reload = TemplateStore().offer("values: &v\n  x: *v\ncontainers: []\n", source="test")
    assert reload.result == "rejected"


# --- any bytes at all: a clean 200 or 400, bounded ---------------------------------

hostile_strings = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["yes", "sc", "pilot", "rest:80", "grps:1", ",", "~1", "{{ pod.name }}"]),
    st.builds(
        lambda s, n: s * n, st.sampled_from([",", "rest:1,", "x", "grps:9,"]), st.integers(0, 20000)
    ),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), hostile_strings),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(hostile_strings, children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def hostile_reviews(draw: st.DrawFn) -> bytes:
    review = copy.deepcopy(BASE)
    request = review["request"]
    pod = request["object"]
    for _ in range(draw(st.integers(1, 4))):
        where = draw(
            st.sampled_from(
                [
                    ("annotations", "sidecar.mesher.io/inject"),
                    ("annotations", "sidecar.mesher.io/discoveryType"),
                    ("annotations", "sidecar.mesher.io/servicePorts"),
                    ("annotations", "sidecar.mesher.io/status"),
                    ("labels", "app"),
                    ("labels", "pod-template-hash"),
                    ("metadata", "name"),
                    ("metadata", "generateName"),
                    ("metadata", "ownerReferences"),
                    ("spec", "containers"),
                    ("spec", "initContainers"),
                    ("spec", "volumes"),
                    ("spec", "hostNetwork"),
                    ("request", "operation"),
                    ("request", "namespace"),
                    ("request", "dryRun"),
                    ("request", "uid"),
                ]
            )
        )
        value = draw(st.one_of(hostile_strings, json_values))
        group, key = where
        if group == "annotations":
            pod["metadata"].setdefault("annotations", {})[key] = value
        elif group == "labels":
            pod["metadata"].setdefault("labels", {})[key] = value
        elif group == "metadata":
            pod["metadata"][key] = value
        elif group == "spec":
            pod["spec"][key] = value
        else:
            request[key] = value
    raw = json.dumps(review).encode()  # json: integers beyond 64 bits too
    if draw(st.booleans()):  # and sometimes cut or corrupt the bytes themselves
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=8))
    return raw


BASE = admission_fixture("server-mesher-7d9f8b6c5")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_reviews())
def test_any_body_gets_a_clean_200_or_400_of_bounded_size(raw: bytes) -> None:
    result = answer(raw, TEMPLATE)
    assert result.status in (200, 400)
    assert result.failure is None  # never an internal error
    body = json.loads(result.body)
    if result.status == 400:
        assert set(body) == {"error"}
    else:
        assert body["response"]["uid"] == json.loads(raw)["request"]["uid"]
    assert_bounded(result)
    assert len(result.body) <= 64 * 1024


def test_no_bad_input_logged_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """The pure path logs nothing at all; what the server logs is checked in test_limits_http."""
    with caplog.at_level(logging.DEBUG):
        answer(b"{" * 100_000, TEMPLATE)
        answer(orjson.dumps(review_with(**{SERVICE_PORTS: "," * MiB})), TEMPLATE)
    assert not caplog.records


async def test_serve_starts_not_ready_on_a_template_with_integer_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_TEMPLATE.read_text().replace("memory: 256Mi", "1: 256Mi"))
    server, _ = await start_server(tmp_path, template_file=bad)
    try:
        assert not server.injector.ready
        error = server.injector.store.last_error
        assert error is not None
        assert "key 1 at containers[0].resources.limits must be a string" in error.error
        rejected = server.injector.metrics.registry.get_sample_value(
            "mesher_injector_template_reloads_total", {"result": "rejected"}
        )
        assert rejected == 1
    finally:
        await server.stop()
