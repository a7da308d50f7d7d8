"""`kubectl apply` of the template ConfigMap through deploy/'s ValidatingWebhookConfiguration
(its namespaceSelector and matchConditions evaluated by kube-apiserver), calling a local
injector's /validate-template by URL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.controlplane import ControlPlane
from tests.e2e.injector import (
    DENIED_TEMPLATE,
    UNKNOWN_VARIABLE,
    LocalInjector,
    kubectl_ok,
    registered,
    running_injector,
    validating_webhook_by_url,
    wait_until_a_broken_template_is_refused,
)
from tests.e2e.manifests import TEMPLATE_CONFIGMAP, template_configmap
from tests.support.helpers import DEFAULT_TEMPLATE, bump

pytestmark = pytest.mark.e2e

GOOD = DEFAULT_TEMPLATE.read_text()


def apply(
    control_plane: ControlPlane, namespace: str, configmap: dict[str, Any]
) -> tuple[int, str]:
    result = control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(configmap))
    return result.returncode, result.stderr


def stored_template(control_plane: ControlPlane, namespace: str, name: str) -> str:
    found = kubectl_ok(control_plane, "get", "configmap", "-n", namespace, name, "-o", "json")
    text: str = json.loads(found)["data"]["template.yaml"]
    return text


@pytest.fixture(scope="module")
def reviewer(
    control_plane: ControlPlane, injector_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalInjector]:
    """A local injector registered as deploy/ registers the template's validating webhook."""
    with (
        running_injector(tmp_path_factory.mktemp("reviewer")) as local,
        registered(control_plane, validating_webhook_by_url(local)),
    ):
        wait_until_a_broken_template_is_refused(control_plane, injector_namespace)
        yield local


@pytest.fixture
def good_template(control_plane: ControlPlane, injector_namespace: str) -> str:
    """The template ConfigMap in deploy/'s namespace, holding the shipped template."""
    code, err = apply(control_plane, injector_namespace, template_configmap(GOOD))
    assert code == 0, err
    return GOOD


def test_kubectl_apply_of_a_broken_template_edit_is_refused_with_its_reason(
    control_plane: ControlPlane,
    injector_namespace: str,
    reviewer: LocalInjector,
    good_template: str,
) -> None:
    code, err = apply(control_plane, injector_namespace, template_configmap(UNKNOWN_VARIABLE))

    assert code != 0
    assert DENIED_TEMPLATE in err
    assert "unknown variable {{ values.nope }}" in err
    assert stored_template(control_plane, injector_namespace, TEMPLATE_CONFIGMAP) == good_template


def test_kubectl_apply_of_a_template_that_is_not_yaml_is_refused(
    control_plane: ControlPlane,
    injector_namespace: str,
    reviewer: LocalInjector,
    good_template: str,
) -> None:
    code, err = apply(control_plane, injector_namespace, template_configmap("version: [broken\n"))

    assert code != 0
    assert DENIED_TEMPLATE in err
    assert "not valid YAML" in err


def test_kubectl_apply_of_a_good_template_edit_is_accepted_and_stored(
    control_plane: ControlPlane,
    injector_namespace: str,
    reviewer: LocalInjector,
    good_template: str,
) -> None:
    edit = bump(good_template, "1.6.4")

    code, err = apply(control_plane, injector_namespace, template_configmap(edit))

    assert code == 0, err
    assert stored_template(control_plane, injector_namespace, TEMPLATE_CONFIGMAP) == edit


def test_a_configmap_of_another_name_is_never_sent_to_the_template_webhook(
    control_plane: ControlPlane, injector_namespace: str, reviewer: LocalInjector
) -> None:
    other = template_configmap(UNKNOWN_VARIABLE, name="not-the-template")

    code, err = apply(control_plane, injector_namespace, other)

    assert code == 0, err
    assert stored_template(control_plane, injector_namespace, "not-the-template") == (
        UNKNOWN_VARIABLE
    )


def test_the_template_configmap_outside_the_injectors_namespace_is_never_sent(
    control_plane: ControlPlane, namespace: str, reviewer: LocalInjector
) -> None:
    code, err = apply(control_plane, namespace, template_configmap(UNKNOWN_VARIABLE))

    assert code == 0, err
    assert stored_template(control_plane, namespace, TEMPLATE_CONFIGMAP) == UNKNOWN_VARIABLE


def test_deleting_the_template_configmap_is_sent_and_allowed_with_a_warning(
    control_plane: ControlPlane,
    injector_namespace: str,
    reviewer: LocalInjector,
    good_template: str,
) -> None:
    # On DELETE the API server sends no object: only the matchCondition on oldObject's
    # name lets the webhook see it at all.
    deleted = control_plane.kubectl(
        "delete", "configmap", "-n", injector_namespace, TEMPLATE_CONFIGMAP
    )

    assert deleted.returncode == 0, deleted.stderr
    assert f"Warning: deleting {TEMPLATE_CONFIGMAP}: running injectors keep serving" in (
        deleted.stderr
    )
