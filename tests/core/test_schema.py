"""Templates are checked against the Kubernetes API's own schema, as recorded."""

from __future__ import annotations

import json

import pytest

from injector.core import schema
from injector.core.template import TemplateError, load_template
from tests.support.helpers import DEFAULT_TEMPLATE, KUBE_API

BASE = DEFAULT_TEMPLATE.read_text()


def test_the_bundled_schema_is_trimmed_from_the_recorded_openapi() -> None:
    recorded = json.loads((KUBE_API / "openapi-v3-api-v1.json").read_text())
    assert schema.bundled() == schema.trim(recorded)
    assert "io.k8s.api.core.v1.Container" in schema.bundled()


def test_the_default_template_fits_the_schema() -> None:
    load_template(BASE)  # raises on any problem


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("    resources:\n", "    resource:\n", "containers[mesher]: unknown field 'resource'"),
        (
            "imagePullPolicy: IfNotPresent",
            "imagePullPolicy: 3",
            "containers[mesher].imagePullPolicy: expected string",
        ),
        (
            "        memory: 256Mi",
            "        memory: [256]",
            "limits.memory: expected string or number",
        ),
        (
            "  - name: http_proxy\n    value:",
            "  - name: http_proxy\n    valu:",
            "appEnv[http_proxy]: unknown field 'valu'",
        ),
        (
            "      periodSeconds: 5",
            "      periodSeconds: five",
            "readinessProbe.periodSeconds: expected integer",
        ),
        ("      runAsNonRoot: true", "      runAsNonRoot: 'yes'", "runAsNonRoot: expected boolean"),
        (
            "volumes: []",
            "volumes:\n  - name: v\n    emptyDir: {medium: 1}",
            "volumes[v].emptyDir.medium: expected string",
        ),
        (
            "      - name: CSE_REGISTRY_ADDR\n        value:",
            "      - name: CSE_REGISTRY_ADDR\n        vaule:",
            "discovery.sc.env[CSE_REGISTRY_ADDR]: unknown field 'vaule'",
        ),
    ],
)
def test_a_template_the_api_server_would_mangle_is_refused(old: str, new: str, needle: str) -> None:
    assert old in BASE
    with pytest.raises(TemplateError) as info:
        load_template(BASE.replace(old, new, 1))
    assert needle in str(info.value)


def test_variables_fit_string_and_int_or_string_fields() -> None:
    text = BASE.replace(
        "      tcpSocket:\n        port: 30101",
        "      tcpSocket:\n        port: '{{ values.probePort }}'",
    )
    text = text.replace("  appId: default", "  appId: default\n  probePort: mesher-http")
    from injector.core.sidecar import sample_context

    (mesher,) = load_template(text).render(sample_context("sc")).containers
    assert mesher["readinessProbe"]["tcpSocket"]["port"] == "mesher-http"


def test_one_of_accepts_either_branch() -> None:
    assert schema.check({"limits": {"cpu": 1, "memory": "1Gi"}}, "ResourceRequirements", "r") == []
    assert schema.check({"containerPort": True}, "ContainerPort", "p") == [
        "p.containerPort: expected integer, got bool True"
    ]
