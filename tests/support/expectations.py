"""What each recorded AdmissionReview must get (issue 2). Used over HTTPS and in-process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.support.helpers import (
    apply,
    assert_only_added,
    assert_pilot_configured,
    container,
    env_of,
)

SC_ADDR = "http://service-center.servicecomb:30100"


@dataclass(frozen=True)
class Expected:
    decision: str
    reason: str
    discovery: str = ""
    env: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # substrings; each must appear in some warning
    message: tuple[str, ...] = ()  # substrings of the denial message
    native: bool = False  # mesher as the first init container, restartPolicy Always


EXPECTED: dict[str, Expected] = {
    "server-mesher": Expected(
        "injected",
        "requested",
        "sc",
        {
            "SERVICE_NAME": "server-mesher",
            "SERVICE_PORTS": "rest:9999",
            "CSE_REGISTRY_ADDR": SC_ADDR,
        },
    ),
    "client-mesher": Expected("injected", "requested", "sc", {"SERVICE_NAME": "client-mesher"}),
    "client-pilot": Expected(
        "injected",
        "requested",
        "pilot",
        {"SERVICE_NAME": "client-pilot"},
    ),
    "server-pilot": Expected(
        "injected",
        "requested",
        "pilot",
        {"SERVICE_NAME": "server-pilot", "SERVICE_PORTS": "rest:9999,grpc:8000"},
    ),
    "dry-run-pod": Expected("injected", "requested", "sc", {"SERVICE_NAME": "dry"}),
    "server-mesher-7d9f8b6c5": Expected(
        "injected",
        "requested",
        "sc",
        {"SERVICE_NAME": "server-mesher", "SERVICE_PORTS": "rest:9999"},
    ),
    "rich-pod": Expected(
        "injected",
        "requested",
        "sc",
        {"SERVICE_NAME": "rich", "SERVICE_PORTS": "grpc:8080", "VERSION": "2.1"},
        warnings=('"grps" read as "grpc"',),
    ),
    "server-v1beta1": Expected("injected", "requested", "sc", {"SERVICE_NAME": "server-v1beta1"}),
    "plain-no-annotations": Expected("skipped", "not-requested"),
    "inject-true-value": Expected(
        "skipped", "not-requested", warnings=('"true" is not a recognised value', '"yes"', '"y"')
    ),
    "host-network": Expected("skipped", "host-network"),
    "already-injected": Expected("skipped", "already-injected"),
    "bad-discovery": Expected(
        "denied", "unknown-discovery-type", message=('"consul"', "sc, pilot")
    ),
    "bad-ports": Expected(
        "denied", "invalid-service-ports", message=('"rest:abc"', '"grpc:70000"', "65535")
    ),
    "ports-injection-attempt": Expected("denied", "invalid-service-ports", message=("evil",)),
    # Workload pods (recorded on v1.28.7): service.name from the app label.
    "job-pod": Expected(
        "injected",
        "requested",
        "sc",
        {"SERVICE_NAME": "nightly", "SERVICE_PORTS": "rest:9999"},
        warnings=("belongs to Job nightly", 'sidecar.mesher.io/nativeSidecar: "yes"'),
    ),
    "statefulset-pod": Expected(
        "injected", "requested", "sc", {"SERVICE_NAME": "db", "SERVICE_PORTS": "rest:9999"}
    ),
    "daemonset-pod": Expected(
        "injected", "requested", "sc", {"SERVICE_NAME": "agent", "SERVICE_PORTS": "rest:9999"}
    ),
    # nativeSidecar "yes": mesher first among the init containers; the pod's own native
    # sidecar (log-shipper) stays, after it.
    "native-sidecar-pod": Expected(
        "injected",
        "requested",
        "sc",
        {"SERVICE_NAME": "native"},
        warnings=("port 9999 is not declared",),
        native=True,
    ),
    # The template ConfigMap's reviews, if they ever reached /mutate: not a pod.
    "configmap-create": Expected("skipped", "not-a-pod-create"),
    "configmap-update": Expected("skipped", "not-a-pod-create"),
    "configmap-delete": Expected("skipped", "not-a-pod-create"),
}


def check_answer(
    name: str,
    review: dict[str, Any],
    answer: dict[str, Any],
    ops: list[dict[str, Any]],
    revision: str,
) -> None:
    """Assert the AdmissionReview answer for fixture `name`; applies the patch to the pod."""
    expected = EXPECTED[name]
    response = answer["response"]
    assert answer["apiVersion"] == review["apiVersion"]
    assert answer["kind"] == "AdmissionReview"
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is (expected.decision != "denied")
    for text in expected.warnings:
        assert any(text in w for w in response.get("warnings", [])), (
            text,
            response.get("warnings"),
        )
    if not expected.warnings:
        assert "warnings" not in response
    pod = review["request"]["object"]
    if expected.decision != "injected":
        assert ops == []
        assert "patch" not in response
    if expected.decision == "denied":
        message = response["status"]["message"]
        for text in expected.message:
            assert text in message, (text, message)
        assert "evil:latest\n" not in message  # no raw newline from an annotation value
        return
    if expected.decision == "skipped":
        return
    patched = apply(pod, ops)
    assert_only_added(pod, patched)
    annotations = patched["metadata"]["annotations"]
    assert annotations["sidecar.mesher.io/status"] == "injected"
    assert annotations["sidecar.mesher.io/template-revision"] == revision
    if expected.native:
        inits = patched["spec"]["initContainers"]
        mesher = inits[0]
        assert mesher["name"] == "mesher"
        assert mesher["restartPolicy"] == "Always"
        assert mesher["startupProbe"]["tcpSocket"]["port"] == 30101
        assert [c["name"] for c in inits[1:]] == [
            c["name"] for c in pod["spec"].get("initContainers", [])
        ]
        assert "mesher" not in {c["name"] for c in patched["spec"]["containers"]}
    else:
        mesher = container(patched, "mesher")
    env = env_of(mesher)
    for key, value in expected.env.items():
        assert env[key] == value, (key, env.get(key))
    if expected.discovery == "sc":
        assert env["CSE_REGISTRY_ADDR"] == SC_ADDR
        assert "MESHER_INJECTOR_FILE_0" not in env
    else:
        assert_pilot_configured(mesher, "istio-pilot.istio-system:15010")
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Every app container now has http_proxy; one that set its own keeps it.
    for app in pod["spec"]["containers"]:
        before = env_of(app)
        after = env_of(container(patched, app["name"]))
        assert after["http_proxy"] == before.get("http_proxy", "http://127.0.0.1:30101")
