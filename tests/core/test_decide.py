"""The one decision function, in-process, without a server."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from injector.core.decide import decide
from injector.core.outcomes import Outcome
from injector.core.pods import owner_name, service_name
from injector.core.responses import build_response
from injector.core.reviews import BadReview, parse_review
from injector.core.template import Template, load_template
from tests.support.expectations import EXPECTED, check_answer
from tests.support.helpers import admission_fixture, decode_patch


def answer_for(review: dict[str, Any], template: Template | None) -> tuple[dict[str, Any], Outcome]:
    parsed = parse_review(review)
    outcome = decide(parsed.request, template)
    return orjson.loads(build_response(parsed, outcome)), outcome


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_request_decides_as_expected(name: str, template: Template) -> None:
    review = admission_fixture(name)
    answer, outcome = answer_for(review, template)
    assert (outcome.decision, outcome.reason) == (EXPECTED[name].decision, EXPECTED[name].reason)
    assert outcome.discovery_type == EXPECTED[name].discovery
    check_answer(name, review, answer, decode_patch(answer["response"]), template.revision)


def test_dry_run_gets_the_same_answer_as_a_real_create(template: Template) -> None:
    review = admission_fixture("dry-run-pod")
    real = copy.deepcopy(review)
    real["request"]["dryRun"] = False
    assert answer_for(review, template)[0] == answer_for(real, template)[0]


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public"])
def test_system_namespaces_are_never_injected(namespace: str, template: Template) -> None:
    review = admission_fixture("server-mesher")
    review["request"]["namespace"] = namespace
    _, outcome = answer_for(review, template)
    assert (outcome.decision, outcome.reason) == ("skipped", "excluded-namespace")


def test_the_injectors_own_namespace_can_be_excluded(template: Template) -> None:
    request = admission_fixture("server-mesher")["request"]
    outcome = decide(request, template, excluded_namespaces=frozenset({"chassis"}))
    assert outcome.reason == "excluded-namespace"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("operation", "UPDATE"),
        ("kind", {"group": "apps", "version": "v1", "kind": "Deployment"}),
        ("subResource", "status"),
    ],
)
def test_anything_but_a_pod_create_is_skipped(
    field: str, value: object, template: Template
) -> None:
    review = admission_fixture("server-mesher")
    review["request"][field] = value
    _, outcome = answer_for(review, template)
    assert (outcome.decision, outcome.reason) == ("skipped", "not-a-pod-create")


def test_no_template_loaded_denies_rather_than_admitting_unmeshed() -> None:
    answer, outcome = answer_for(admission_fixture("server-mesher"), None)
    assert (outcome.decision, outcome.reason) == ("denied", "no-template")
    assert answer["response"]["allowed"] is False
    assert "no sidecar template loaded" in answer["response"]["status"]["message"]


def test_no_template_still_skips_pods_that_did_not_ask() -> None:
    _, outcome = answer_for(admission_fixture("plain-no-annotations"), None)
    assert outcome.decision == "skipped"


def test_a_pod_with_the_sidecar_container_but_no_status_is_already_injected(
    template: Template,
) -> None:
    review = admission_fixture("already-injected")
    del review["request"]["object"]["metadata"]["annotations"]["sidecar.mesher.io/status"]
    _, outcome = answer_for(review, template)
    assert outcome.reason == "already-injected"
    assert "mesher" in outcome.message


def test_service_ports_not_declared_by_any_container_warn(template: Template) -> None:
    review = admission_fixture("server-mesher")
    review["request"]["object"]["metadata"]["annotations"]["sidecar.mesher.io/servicePorts"] = (
        "rest:7777"
    )
    answer, outcome = answer_for(review, template)
    assert outcome.decision == "injected"
    assert any("7777 is not declared" in w for w in answer["response"]["warnings"])


FAILURE_POLICY = "sidecar.mesher.io/failurePolicy"


def answer_with_failure_policy(value: str, template: Template) -> tuple[dict[str, Any], Outcome]:
    review = admission_fixture("server-mesher")
    review["request"]["object"]["metadata"]["annotations"][FAILURE_POLICY] = value
    return answer_for(review, template)


@pytest.mark.parametrize("value", ["Ignore", "Fail"])
def test_a_failure_policy_of_ignore_or_fail_is_injected_quietly(
    value: str, template: Template
) -> None:
    answer, outcome = answer_with_failure_policy(value, template)
    assert outcome.decision == "injected"
    assert "warnings" not in answer["response"]


@pytest.mark.parametrize("value", ["ignore", "IGNORE", "true", "x" * 500])
def test_any_other_failure_policy_is_injected_with_a_warning_that_it_fails_closed(
    value: str, template: Template
) -> None:
    answer, outcome = answer_with_failure_policy(value, template)
    assert outcome.decision == "injected"
    (warning,) = answer["response"]["warnings"]
    assert warning.startswith(f'{FAILURE_POLICY}="{value[:60]}')
    assert "fails closed" in warning
    assert '"Ignore"' in warning
    assert len(warning) < 400


def test_a_failure_policy_on_a_pod_that_did_not_ask_is_not_warned_about(
    template: Template,
) -> None:
    review = admission_fixture("plain-no-annotations")
    review["request"]["object"]["metadata"]["annotations"] = {FAILURE_POLICY: "ignore"}
    _, outcome = answer_for(review, template)
    assert outcome.reason == "not-requested"
    assert not outcome.warnings


def test_a_template_without_discovery_types_denies_a_requested_type() -> None:
    minimal = load_template("containers:\n- name: mesher\n  image: m:1\n")
    _, outcome = answer_for(admission_fixture("server-mesher"), minimal)
    assert outcome.reason == "unknown-discovery-type"
    _, outcome = answer_for(admission_fixture("server-mesher-7d9f8b6c5"), minimal)
    assert outcome.decision == "injected"


def test_a_name_clash_with_the_template_denies_with_render_error(template: Template) -> None:
    clashing = load_template(
        "containers:\n- name: mesher\n  image: m:1\nvolumes:\n- name: data\n  emptyDir: {}\n"
    )
    review = admission_fixture("rich-pod")
    _, outcome = answer_for(review, clashing)
    assert (outcome.decision, outcome.reason) == ("denied", "render-error")
    assert "'data'" in outcome.message


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"labels": {"app": "a", "app.kubernetes.io/name": "b"}, "name": "p"}, "a"),
        ({"labels": {"app.kubernetes.io/name": "b"}, "name": "p"}, "b"),
        (
            {
                "generateName": "web-5d8f9c7b6-",
                "labels": {"pod-template-hash": "5d8f9c7b6"},
                "ownerReferences": [
                    {"kind": "ReplicaSet", "name": "web-5d8f9c7b6", "controller": True}
                ],
            },
            "web",
        ),
        (
            {
                "generateName": "job-x-",
                "ownerReferences": [{"kind": "Job", "name": "job-x", "controller": True}],
            },
            "job-x",
        ),
        (
            {
                "name": "db-0",
                "ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": True}],
            },
            "db",
        ),
        ({"name": "solo"}, "solo"),
        ({"generateName": "stem-"}, "stem"),
    ],
)
def test_service_name_falls_back_in_the_documented_order(
    metadata: dict[str, Any], expected: str
) -> None:
    assert service_name(metadata) == expected


def test_replicaset_owner_without_hash_label_loses_its_hash_suffix() -> None:
    metadata = {
        "ownerReferences": [{"kind": "ReplicaSet", "name": "api-7d9f8b6c5", "controller": True}]
    }
    assert owner_name(metadata) == "api"


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"kind": "AdmissionReview"},
        {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": ""}},
    ],
)
def test_malformed_reviews_raise_bad_review(body: object) -> None:
    with pytest.raises(BadReview):
        parse_review(body)
