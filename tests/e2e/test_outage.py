"""An injector outage as the API server sees it: deploy/'s webhook configurations still
registered, nothing answering at their URL. matchConditions and namespaceSelector are
evaluated by kube-apiserver, so only pods that ask for mesher in an opted-in namespace are
refused (failurePolicy Fail); the template's validating webhook never blocks an edit
(failurePolicy Ignore)."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator

import pytest

from tests.e2e import manifests
from tests.e2e.controlplane import ControlPlane
from tests.e2e.injector import (
    UNKNOWN_VARIABLE,
    UNREACHABLE,
    injecting,
    kubectl_ok,
    registered,
    running_injector,
    validating_webhook_by_url,
    wait_until_a_broken_template_is_refused,
    wait_until_a_pod_that_asks_is_refused,
)
from tests.e2e.kube import ApiError, Json, Kube
from tests.e2e.manifests import (
    ASK,
    INJECTION_LABEL,
    INJECTOR_NAMESPACE,
    TEMPLATE_CONFIGMAP,
    container_names,
    template_configmap,
)
from tests.support.helpers import admission_fixture, admission_fixture_names

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def injector_gone(
    control_plane: ControlPlane, injector_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Both webhook configurations registered for a local injector that answered (probed),
    then stopped: its URL refuses connections while they stay registered."""
    with contextlib.ExitStack() as registrations:
        with running_injector(tmp_path_factory.mktemp("gone")) as local:
            registrations.enter_context(injecting(control_plane, local))
            registrations.enter_context(registered(control_plane, validating_webhook_by_url(local)))
            wait_until_a_broken_template_is_refused(control_plane, injector_namespace)
        wait_until_a_pod_that_asks_is_refused(control_plane)
        yield


async def test_with_the_injector_gone_a_plain_pod_in_an_opted_in_namespace_is_admitted(
    kube: Kube, labelled_namespace: str, injector_gone: None
) -> None:
    pod = await kube.create(f"/api/v1/namespaces/{labelled_namespace}/pods", manifests.pod("plain"))

    assert container_names(pod) == ["app"]


async def test_with_the_injector_gone_a_pod_that_asks_is_refused(
    kube: Kube, labelled_namespace: str, injector_gone: None
) -> None:
    pods = f"/api/v1/namespaces/{labelled_namespace}/pods"

    with pytest.raises(ApiError) as refused:
        await kube.create(pods, manifests.pod("asks", annotations=ASK))

    assert refused.value.status == 500
    assert UNREACHABLE in str(refused.value)
    assert (await kube.get(pods))["items"] == []


async def test_with_the_injector_gone_a_workloads_pods_that_ask_are_not_created(
    kube: Kube, labelled_namespace: str, injector_gone: None
) -> None:
    await kube.create(
        f"/apis/apps/v1/namespaces/{labelled_namespace}/deployments",
        manifests.deployment("web", annotations=ASK),
    )

    replicaset = await kube.wait_for(
        f"/apis/apps/v1/namespaces/{labelled_namespace}/replicasets",
        lambda sets: any(
            UNREACHABLE in c.get("message", "")
            for rs in sets["items"]
            for c in rs.get("status", {}).get("conditions", [])
        ),
    )

    assert replicaset["items"][0]["status"].get("replicas", 0) == 0
    pods = await kube.get(f"/api/v1/namespaces/{labelled_namespace}/pods")
    assert pods["items"] == []


async def test_with_the_injector_gone_a_pod_that_asks_outside_an_opted_in_namespace_is_admitted(
    kube: Kube, namespace: str, injector_gone: None
) -> None:
    pod = await kube.create(
        f"/api/v1/namespaces/{namespace}/pods", manifests.pod("elsewhere", annotations=ASK)
    )

    assert container_names(pod) == ["app"]


@pytest.mark.parametrize("system", ["kube-system", "kube-public", INJECTOR_NAMESPACE])
def test_with_the_injector_gone_a_system_namespace_is_never_sent_even_when_labelled(
    control_plane: ControlPlane, injector_namespace: str, injector_gone: None, system: str
) -> None:
    pod = manifests.pod("system-asks", annotations=ASK)
    kubectl_ok(control_plane, "label", "namespace", system, f"{INJECTION_LABEL}=enabled")
    try:
        created = control_plane.kubectl(
            "create", "-n", system, "-o", "json", "-f", "-", stdin=json.dumps(pod)
        )
    finally:
        kubectl_ok(control_plane, "label", "namespace", system, f"{INJECTION_LABEL}-")
        control_plane.kubectl("delete", "pod", "-n", system, "system-asks", "--wait=false")

    assert created.returncode == 0, created.stderr
    assert container_names(json.loads(created.stdout)) == ["app"]


def as_created(recorded: Json) -> Json:
    """A pod a real API server recorded in an AdmissionReview, as a client would send it."""
    pod = copy.deepcopy(recorded)
    metadata = pod["metadata"]
    for field in ("uid", "namespace", "resourceVersion", "creationTimestamp", "managedFields"):
        metadata.pop(field, None)
    metadata.pop("ownerReferences", None)
    pod.pop("status", None)
    pod["spec"].pop("nodeName", None)
    return pod


async def test_with_the_injector_gone_of_every_recorded_pod_only_those_that_ask_are_refused(
    kube: Kube, labelled_namespace: str, injector_gone: None
) -> None:
    pods = f"/api/v1/namespaces/{labelled_namespace}/pods"
    recorded = {
        name: review["request"]["object"]
        for name in admission_fixture_names()
        if (review := admission_fixture(name))["request"]["kind"]["kind"] == "Pod"
    }
    expected, outcomes = {}, {}

    for name, pod in recorded.items():
        asks = "sidecar.mesher.io/inject" in (pod["metadata"].get("annotations") or {})
        expected[name] = "refused: injector unreachable" if asks else "admitted"
        try:
            await kube.create(pods, as_created(pod), dryRun="All")
            outcomes[name] = "admitted"
        except ApiError as error:
            unreachable = UNREACHABLE in str(error)
            outcomes[name] = "refused: injector unreachable" if unreachable else str(error)

    assert outcomes == expected
    assert set(expected.values()) == {"admitted", "refused: injector unreachable"}


def test_with_the_injector_gone_a_template_edit_is_not_blocked(
    control_plane: ControlPlane, injector_namespace: str, injector_gone: None
) -> None:
    # A broken edit, which the webhook refused while it answered (module fixture): only
    # an unanswered webhook lets it through. The injectors still refuse it on reload.
    configmap = template_configmap(UNKNOWN_VARIABLE)
    try:
        applied = control_plane.kubectl(
            "apply", "-n", injector_namespace, "-f", "-", stdin=json.dumps(configmap)
        )
    finally:
        control_plane.kubectl("delete", "configmap", "-n", injector_namespace, TEMPLATE_CONFIGMAP)

    assert applied.returncode == 0, applied.stderr
