from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from injector.core.manual import ManualInjectionError, inject_documents
from injector.core.template import Template
from tests.support.helpers import MANIFESTS, assert_only_added, assert_pilot_configured


def load(name: str) -> str:
    return (MANIFESTS / name).read_text()


def names(pod_spec: dict[str, Any]) -> list[str]:
    return [c["name"] for c in pod_spec["containers"]]


def test_a_deployments_pod_template_gets_the_sidecar(template: Template) -> None:
    out, reports = inject_documents(load("deployment.yaml"), template)
    (doc,) = yaml.safe_load_all(out)
    pod_template = doc["spec"]["template"]
    assert names(pod_template["spec"]) == ["server", "mesher"]
    assert pod_template["metadata"]["annotations"]["sidecar.mesher.io/status"] == "injected"
    env = {e["name"]: e.get("value") for e in pod_template["spec"]["containers"][1]["env"]}
    assert env["SERVICE_NAME"] == "server-mesher"
    assert env["SERVICE_PORTS"] == "rest:9999"
    assert "generateName" not in pod_template["metadata"]
    assert_only_added(yaml.safe_load(load("deployment.yaml")), doc)
    assert [r.outcome.decision for r in reports] == ["injected"]


def test_injecting_twice_changes_nothing_the_second_time(template: Template) -> None:
    once, _ = inject_documents(load("mixed.yaml"), template)
    twice, reports = inject_documents(once, template)
    assert twice == once
    assert {r.outcome.reason for r in reports} <= {"already-injected", "not-requested"}


def test_every_workload_kind_and_list_items_are_handled(template: Template) -> None:
    out, reports = inject_documents(load("mixed.yaml"), template)
    service, pod, cronjob, lst = yaml.safe_load_all(out)
    assert service == next(iter(yaml.safe_load_all(load("mixed.yaml"))))
    assert names(pod["spec"]) == ["client", "mesher"]
    assert_pilot_configured(pod["spec"]["containers"][1], "istio-pilot.istio-system:15010")
    assert names(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]) == ["job", "mesher"]
    statefulset, daemonset = lst["items"]
    assert names(statefulset["spec"]["template"]["spec"]) == ["db", "mesher"]
    assert names(daemonset["spec"]["template"]["spec"]) == ["agent"]
    assert [r.outcome.decision for r in reports] == ["injected", "injected", "injected", "skipped"]


def test_cronjob_service_name_comes_from_the_workload(template: Template) -> None:
    out, _ = inject_documents(load("mixed.yaml"), template)
    cronjob = list(yaml.safe_load_all(out))[2]
    sidecar = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][1]
    assert {"name": "SERVICE_NAME", "value": "nightly"} in sidecar["env"]


def test_a_denied_document_is_an_error_naming_it(template: Template) -> None:
    with pytest.raises(ManualInjectionError, match=r"Pod/bad.*invalid-service-ports.*rest:abc"):
        inject_documents(load("denied.yaml"), template)


def test_invalid_yaml_is_a_clear_error(template: Template) -> None:
    with pytest.raises(ManualInjectionError, match="not valid YAML"):
        inject_documents("kind: [", template)


def test_empty_documents_are_dropped_and_scalars_pass_through(template: Template) -> None:
    text = "---\n---\njust text\n---\n"
    out, reports = inject_documents(text, template)
    assert out == "---\njust text\n"
    assert reports == []


def test_documents_without_a_sidecar_pass_through_byte_for_byte(template: Template) -> None:
    service = (
        "# the front door\n"
        "apiVersion: v1\n"
        "kind: Service   # kept, comments and all\n"
        "metadata: {name: front, labels: {app: front}}\n"
        "spec:\n"
        "  ports: [{port: 80}]\n"
    )
    text = service + "---\n" + load("deployment.yaml") + "--- # last\n" + service.rstrip("\n")
    out, reports = inject_documents(text, template)
    assert out.startswith(service + "---\n")
    assert out.endswith("--- # last\n" + service.rstrip("\n"))
    assert [r.outcome.decision for r in reports] == ["injected"]
    unchanged = load("deployment.yaml").replace('inject: "yes"', 'inject: "no"')
    assert unchanged != load("deployment.yaml")
    assert inject_documents(unchanged, template)[0] == unchanged


def test_json_in_is_json_out(template: Template) -> None:
    document = yaml.safe_load(load("deployment.yaml"))
    text = json.dumps(document)
    out, reports = inject_documents(text, template)
    injected = json.loads(out)
    assert names(injected["spec"]["template"]["spec"]) == ["server", "mesher"]
    assert [r.outcome.decision for r in reports] == ["injected"]
    assert inject_documents(out, template)[0] == out  # already injected: the same bytes


def test_a_yaml_error_names_the_source_and_its_line_in_the_whole_stream(
    template: Template,
) -> None:
    text = load("deployment.yaml") + "---\nkind: Pod\nmetadata: [\n"
    line = text.count("\n") + 1
    with pytest.raises(ManualInjectionError) as info:
        inject_documents(text, template, source="app.yaml")
    assert str(info.value).startswith(f"app.yaml:{line}:1: not valid YAML: ")
    assert "<unicode string>" not in str(info.value)


def test_output_is_plain_yaml_without_anchors(template: Template) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "two", "annotations": {"sidecar.mesher.io/inject": "yes"}},
        "spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]},
    }
    out, _ = inject_documents(yaml.safe_dump(pod), template)
    assert "&id" not in out
    assert "*id" not in out
    doc = yaml.safe_load(out)
    assert [e["name"] for e in doc["spec"]["containers"][1]["env"]] == ["http_proxy"]


def test_a_pod_template_of_the_wrong_shape_is_a_clear_error(template: Template) -> None:
    text = load("deployment.yaml").replace(
        "      containers:\n", "      containers: nope\n      x:\n"
    )
    with pytest.raises(
        ManualInjectionError,
        match=r"Deployment/server-mesher.*spec.containers must be a non-empty list",
    ):
        inject_documents(text, template)
