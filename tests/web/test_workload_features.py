"""Native sidecars (Kubernetes 1.29+), the Job warning, and per-pod mesher resources:
decided in-process, over real HTTPS with the recorded reviews, and by `inject -f`."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from injector.core.decide import decide
from injector.core.manual import inject_documents
from injector.core.template import Template, load_template
from tests.support.helpers import (
    DEFAULT_TEMPLATE,
    admission_fixture,
    apply,
    assert_only_added,
    decode_patch,
)
from tests.support.servers import Running

TEMPLATE: Template = load_template(DEFAULT_TEMPLATE.read_text())
NATIVE_TEMPLATE: Template = load_template(
    DEFAULT_TEMPLATE.read_text().replace("nativeSidecars: false", "nativeSidecars: true")
)


def request_with(name: str, **annotations: str) -> dict[str, Any]:
    request: dict[str, Any] = admission_fixture(name)["request"]
    request["object"]["metadata"].setdefault("annotations", {}).update(annotations)
    return request


def injected(request: dict[str, Any], template: Template = TEMPLATE) -> tuple[Any, dict[str, Any]]:
    outcome = decide(request, template)
    assert outcome.decision == "injected", outcome
    patched = apply(request["object"], outcome.operations())
    assert_only_added(request["object"], patched)
    return outcome, patched


def names(containers: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in containers]


def test_native_mode_puts_mesher_first_among_init_containers_and_keeps_the_pods_own() -> None:
    request = request_with("native-sidecar-pod")  # nativeSidecar: "yes", log-shipper native
    _, patched = injected(request)
    inits = patched["spec"]["initContainers"]
    assert names(inits) == ["mesher", "log-shipper"]
    assert inits[0]["restartPolicy"] == "Always"
    assert inits[0]["startupProbe"] == {
        "tcpSocket": {"port": 30101},
        "periodSeconds": 1,
        "failureThreshold": 120,
    }
    assert inits[1] == request["object"]["spec"]["initContainers"][0]  # untouched
    assert names(patched["spec"]["containers"]) == ["app"]
    again = decide({**request, "object": patched}, TEMPLATE)  # idempotent
    assert (again.decision, again.reason) == ("skipped", "already-injected")


def test_a_pod_without_init_containers_gets_the_list_created() -> None:
    _, patched = injected(request_with("server-mesher", **{"sidecar.mesher.io/nativeSidecar": "y"}))
    assert names(patched["spec"]["initContainers"]) == ["mesher"]


def test_the_template_chooses_native_and_a_pod_can_say_no() -> None:
    _, native = injected(request_with("server-mesher"), NATIVE_TEMPLATE)
    assert names(native["spec"]["initContainers"]) == ["mesher"]
    _, classic = injected(
        request_with("server-mesher", **{"sidecar.mesher.io/nativeSidecar": "no"}), NATIVE_TEMPLATE
    )
    assert "mesher" in names(classic["spec"]["containers"])
    assert "initContainers" not in classic["spec"]


def test_an_unrecognised_native_value_warns_and_keeps_the_templates_choice() -> None:
    outcome, patched = injected(
        request_with("server-mesher", **{"sidecar.mesher.io/nativeSidecar": "true"})
    )
    assert "mesher" in names(patched["spec"]["containers"])
    assert any('nativeSidecar="true" is not a recognised value' in w for w in outcome.warnings)


def test_a_jobs_pod_with_a_classic_sidecar_gets_a_warning_and_a_native_one_none() -> None:
    outcome, _ = injected(request_with("job-pod"))
    (warning,) = [w for w in outcome.warnings if "Job" in w]
    assert warning.startswith("this pod belongs to Job nightly: with a classic sidecar")
    native, patched = injected(
        request_with("job-pod", **{"sidecar.mesher.io/nativeSidecar": "yes"})
    )
    assert not [w for w in native.warnings if "Job" in w]
    assert patched["spec"]["initContainers"][0]["name"] == "mesher"


def test_resource_annotations_override_the_templates_for_mesher_only() -> None:
    request = request_with(
        "rich-pod",
        **{
            "sidecar.mesher.io/proxyCPU": "250m",
            "sidecar.mesher.io/proxyMemory": "96Mi",
            "sidecar.mesher.io/proxyCPULimit": "1",
            "sidecar.mesher.io/proxyMemoryLimit": "512Mi",
        },
    )
    _, patched = injected(request)
    mesher = next(c for c in patched["spec"]["containers"] if c["name"] == "mesher")
    assert mesher["resources"] == {
        "requests": {"cpu": "250m", "memory": "96Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    for app in request["object"]["spec"]["containers"]:
        after = next(c for c in patched["spec"]["containers"] if c["name"] == app["name"])
        assert after.get("resources") == app.get("resources")
    # The shared render is untouched: the next pod gets the template's values.
    _, plain = injected(request_with("server-mesher"))
    mesher = next(c for c in plain["spec"]["containers"] if c["name"] == "mesher")
    assert mesher["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"},
    }


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        ("proxyCPU", "lots", 'sidecar.mesher.io/proxyCPU: "lots" is not a Kubernetes quantity'),
        (
            "proxyMemory",
            "128MB",
            'sidecar.mesher.io/proxyMemory: "128MB" is not a Kubernetes quantity',
        ),
        (
            "proxyMemoryLimit",
            "-1Gi",
            'sidecar.mesher.io/proxyMemoryLimit: "-1Gi" must not be negative',
        ),
        ("proxyCPU", "1e9999", 'sidecar.mesher.io/proxyCPU: "1e9999" is not a Kubernetes quantity'),
        (
            "proxyMemory",
            "1Gi",
            "the mesher container's memory request 1Gi would be above its limit 256Mi",
        ),
    ],
)
def test_a_bad_resource_annotation_is_denied_naming_it(
    annotation: str, value: str, message: str
) -> None:
    outcome = decide(
        request_with("server-mesher", **{f"sidecar.mesher.io/{annotation}": value}), TEMPLATE
    )
    assert (outcome.decision, outcome.reason) == ("denied", "invalid-resources")
    assert message in outcome.message


async def test_native_and_resources_over_https(running: Running) -> None:
    review = admission_fixture("job-pod")
    review["request"]["object"]["metadata"]["annotations"].update(
        {"sidecar.mesher.io/nativeSidecar": "yes", "sidecar.mesher.io/proxyMemory": "100Mi"}
    )
    async with running.session.post(running.url + "/mutate", json=review) as resp:
        answer = await resp.json()
    response = answer["response"]
    assert response["allowed"] is True
    assert "warnings" not in response
    patched = apply(review["request"]["object"], decode_patch(response))
    mesher = patched["spec"]["initContainers"][0]
    assert (mesher["name"], mesher["restartPolicy"]) == ("mesher", "Always")
    assert mesher["resources"]["requests"]["memory"] == "100Mi"


JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: nightly, namespace: chassis}
spec:
  template:
    metadata:
      annotations: {sidecar.mesher.io/inject: "yes"%s}
    spec:
      restartPolicy: Never
      containers: [{name: app, image: busybox}]
"""


def test_inject_f_does_the_same_on_manifests() -> None:
    text, reports = inject_documents(JOB % ', sidecar.mesher.io/nativeSidecar: "yes"', TEMPLATE)
    job = yaml.safe_load(text)
    spec = job["spec"]["template"]["spec"]
    assert names(spec["initContainers"]) == ["mesher"]
    assert spec["initContainers"][0]["restartPolicy"] == "Always"
    assert "ownerReferences" not in job["spec"]["template"].get("metadata", {})
    assert not reports[0].outcome.warnings
    _, reports = inject_documents(JOB % "", TEMPLATE)
    assert any("belongs to Job nightly" in w for w in reports[0].outcome.warnings)
    # running it on its own output changes nothing
    again, reports = inject_documents(text, TEMPLATE)
    assert json.dumps(yaml.safe_load(again)) == json.dumps(job)
    assert reports[0].outcome.reason == "already-injected"
