"""deploy/install.sh and deploy/e2e.sh end to end, on control planes of this module's own
(a bare one per test first, then one installed into mesher-system for the rest): the
injector's Deployment runs as local processes of our CLI on its pods' loopback addresses
(tests/e2e/pod_runner.py), probed for readiness by the stand-in node, and the API server
calls the webhooks through their Service's endpoints."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from injector.core.template import load_template
from injector.web.tls import service_dns_names
from tests.e2e.controlplane import ControlPlane, find_binaries, running_control_plane
from tests.e2e.injector import (
    DENIED_TEMPLATE,
    UNKNOWN_VARIABLE,
    kubectl_ok,
    samples,
    wait_until_a_broken_template_is_refused,
    wait_until_the_api_server_calls,
)
from tests.e2e.installing import (
    E2E_OWNER,
    INSTALLED_OBJECTS,
    WEBHOOK_KINDS,
    a_users_workload,
    assert_passed_and_cleaned_up,
    assert_untouched,
    ca_bundles,
    create_pod,
    get,
    gone_or_going,
    install,
    opt_in,
    run_e2e_script,
    serving_names,
    template_data,
)
from tests.e2e.manifests import (
    INJECTION_LABEL,
    INJECTOR_NAMESPACE,
    container_names,
    template_configmap,
)
from tests.e2e.rollout import eventually, leads, pods_by_state
from tests.support.helpers import DEFAULT_TEMPLATE, bump

pytestmark = pytest.mark.e2e

APP = "meshed"
RELOAD_LIMIT = 20.0
SELECTOR = "app.kubernetes.io/name=mesher-injector"
# Another namespace for the injector.
ELSEWHERE = "mesh-tools"
DEFAULT_REVISION = load_template(DEFAULT_TEMPLATE.read_text()).revision


def injected_revision(plane: ControlPlane, name: str, namespace: str = APP) -> str:
    created = create_pod(plane, name, namespace)
    assert created.returncode == 0, created.stderr
    pod = json.loads(created.stdout)
    assert container_names(pod) == ["app", "mesher"]
    revision: str = pod["metadata"]["annotations"]["sidecar.mesher.io/template-revision"]
    return revision


def stored_template(plane: ControlPlane) -> str:
    return template_data(plane)["template.yaml"]


@pytest.fixture
def bare_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A fresh control plane with no injector. Function-scoped, and its tests come first
    in this module, so it never runs beside `installed`'s."""
    with running_control_plane(tmp_path / "bare-plane", find_binaries()) as plane:
        yield plane


def test_an_install_into_another_namespace_injects_through_the_service_there(
    bare_plane: ControlPlane,
) -> None:
    installed = install(bare_plane, NAMESPACE=ELSEWHERE)

    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert f"mesher-injector is installed in namespace {ELSEWHERE}" in installed.stdout
    assert get(bare_plane, "namespace", INJECTOR_NAMESPACE) is None
    secret = get(bare_plane, "secret", "mesher-injector-tls", "-n", ELSEWHERE)
    assert secret is not None
    assert serving_names(secret) == service_dns_names("mesher-injector", ELSEWHERE)
    for kind in WEBHOOK_KINDS:
        configuration = get(bare_plane, kind, "mesher-injector")
        assert configuration is not None
        for hook in configuration["webhooks"]:  # the mutating one has two
            assert hook["clientConfig"]["service"]["namespace"] == ELSEWHERE
            assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
            (names,) = hook["namespaceSelector"]["matchExpressions"]
            assert ELSEWHERE in names["values"]
            assert INJECTOR_NAMESPACE not in names["values"]
    assert template_data(bare_plane, ELSEWHERE) == {"template.yaml": DEFAULT_TEMPLATE.read_text()}
    # The rollout watch's cluster-wide binding names the ServiceAccount there too.
    binding = get(bare_plane, "clusterrolebinding", "mesher-injector")
    assert binding is not None
    (subject,) = binding["subjects"]
    assert (subject["name"], subject["namespace"]) == ("mesher-injector", ELSEWHERE)
    # The API server calls the injector at mesher-injector.ELSEWHERE.svc and trusts it.
    opt_in(bare_plane, APP)
    wait_until_the_api_server_calls(bare_plane, APP)
    assert injected_revision(bare_plane, "elsewhere") == DEFAULT_REVISION
    # The template's validating webhook follows, and the injector's own namespace is never
    # sent, even labelled.
    wait_until_a_broken_template_is_refused(bare_plane, ELSEWHERE)
    kubectl_ok(bare_plane, "label", "namespace", ELSEWHERE, f"{INJECTION_LABEL}=enabled")
    own = create_pod(bare_plane, "in-the-injectors-namespace", ELSEWHERE)
    assert own.returncode == 0, own.stderr
    assert container_names(json.loads(own.stdout)) == ["app"]


def test_deploy_e2e_sh_on_a_bare_cluster_removes_its_install_but_never_the_template(
    bare_plane: ControlPlane,
) -> None:
    users = a_users_workload(bare_plane)

    result = run_e2e_script(bare_plane, NAMESPACE=ELSEWHERE)

    announced = assert_passed_and_cleaned_up(bare_plane, result)
    assert f"mesher-injector in namespace {ELSEWHERE}, not installed" in announced
    assert_untouched(bare_plane, users)
    for kind in WEBHOOK_KINDS:
        assert get(bare_plane, kind, "mesher-injector") is None
    for installed in INSTALLED_OBJECTS:
        assert gone_or_going(get(bare_plane, installed, "-n", ELSEWHERE)), installed
    assert not gone_or_going(get(bare_plane, "namespace", ELSEWHERE))
    # the template it created stays, and holds the text it had before the edit e2e.sh made
    assert template_data(bare_plane, ELSEWHERE) == {"template.yaml": DEFAULT_TEMPLATE.read_text()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A fresh control plane with deploy/install.sh run once, and namespace APP opted in."""
    with running_control_plane(tmp_path_factory.mktemp("install-plane"), find_binaries()) as plane:
        first = install(plane)
        assert first.returncode == 0, first.stdout + first.stderr
        opt_in(plane, APP)
        yield plane


def test_a_fresh_install_injects_pods_through_the_injectors_service(
    installed: ControlPlane,
) -> None:
    revision = injected_revision(installed, "first")

    assert revision == DEFAULT_REVISION
    deployment = json.loads(
        kubectl_ok(
            installed, "get", "-n", INJECTOR_NAMESPACE, "deployment/mesher-injector", "-o", "json"
        )
    )
    assert deployment["status"]["readyReplicas"] == 2


def test_a_fresh_install_refuses_a_broken_template_edit_through_the_service(
    installed: ControlPlane,
) -> None:
    wait_until_a_broken_template_is_refused(installed, INJECTOR_NAMESPACE)
    before = stored_template(installed)

    applied = installed.kubectl(
        "apply",
        "-n",
        INJECTOR_NAMESPACE,
        "-f",
        "-",
        stdin=json.dumps(template_configmap(UNKNOWN_VARIABLE)),
    )

    assert applied.returncode != 0
    assert DENIED_TEMPLATE in applied.stderr
    assert stored_template(installed) == before


def test_a_fresh_install_makes_every_installed_object(installed: ControlPlane) -> None:
    for made in INSTALLED_OBJECTS:
        assert not gone_or_going(get(installed, made, "-n", INJECTOR_NAMESPACE)), made


def test_the_injectors_account_may_list_pods_everywhere_and_hold_its_lease_only(
    installed: ControlPlane,
) -> None:
    """What the API server's RBAC authorizer answers for the rollout watch's verbs."""
    account = f"system:serviceaccount:{INJECTOR_NAMESPACE}:mesher-injector"

    def may(*request: str) -> bool:
        answer = installed.kubectl("auth", "can-i", *request, "--as", account)
        assert answer.stdout.strip() in ("yes", "no"), answer.stdout + answer.stderr
        return answer.stdout.strip() == "yes"

    own = ("-n", INJECTOR_NAMESPACE)
    assert may("list", "pods", "--all-namespaces")
    assert may("watch", "pods", "--all-namespaces")
    assert may("get", "leases/mesher-injector-rollout", *own)
    assert may("update", "leases/mesher-injector-rollout", *own)
    assert may("create", "leases", *own)
    assert not may("get", "pods", "-n", APP)
    assert not may("delete", "pods", "-n", APP)
    assert not may("update", "leases/another", *own)
    assert not may("delete", "leases/mesher-injector-rollout", *own)
    assert not may("create", "leases", "-n", APP)
    assert not may("list", "secrets", "--all-namespaces")


async def test_one_installed_replica_leads_the_rollout_watch_and_counts_pods_with_its_rights(
    installed: ControlPlane,
) -> None:
    """The installed Deployment's two replicas, each with its service account's token:
    one holds the Lease and counts the meshed pods of the cluster."""
    injected_revision(installed, "counted")
    replicas = (get(installed, "pods", "-n", INJECTOR_NAMESPACE, "-l", SELECTOR) or {})["items"]
    admins = [f"http://{pod['status']['podIP']}:8080" for pod in replicas]
    assert len(admins) == 2

    leaders = await eventually(
        lambda: [admin for admin in admins if leads(admin)], lambda found: len(found) == 1
    )
    counted = await eventually(lambda: pods_by_state(leaders[0], APP), lambda seen: seen != {})
    assert set(counted) == {"current"}
    assert counted["current"] >= 1
    follower = next(admin for admin in admins if admin not in leaders)
    assert samples(follower, "mesher_injector_rollout_leader") == [({}, 0.0)]
    assert samples(follower, "mesher_injector_pods") == []


def test_a_re_install_keeps_the_admins_template_edit(installed: ControlPlane) -> None:
    edit = bump(stored_template(installed), "1.6.9")
    kubectl_ok(
        installed,
        "apply",
        "-n",
        INJECTOR_NAMESPACE,
        "-f",
        "-",
        stdin=json.dumps(template_configmap(edit)),
    )

    again = install(installed)

    assert again.returncode == 0, again.stdout + again.stderr
    assert "keeping the template ConfigMap" in again.stdout
    assert stored_template(installed) == edit
    # Every injector replica serves the edit (its watch has it): a few pods in a row get it.
    wanted = load_template(edit).revision
    deadline = time.monotonic() + RELOAD_LIMIT
    for attempt in itertools.count():
        if all(injected_revision(installed, f"edited-{attempt}-{i}") == wanted for i in range(4)):
            break
        assert time.monotonic() < deadline, f"pods are not injected with {wanted} yet"
        time.sleep(0.2)


def ca_bundle(plane: ControlPlane) -> str:
    """The CA every webhook entry trusts (install.sh sets them all alike)."""
    bundles = ca_bundles(plane)
    assert len(bundles) == 3, bundles
    assert len(set(bundles)) == 1, "the webhook entries trust different CAs"
    return bundles[0]


def injector_pods(plane: ControlPlane) -> set[str]:
    names = kubectl_ok(plane, "get", "pods", "-n", INJECTOR_NAMESPACE, "-l", SELECTOR, "-o", "name")
    return set(names.split())


def test_rotate_issues_a_new_ca_with_no_failed_pod_creation_meanwhile(
    installed: ControlPlane,
) -> None:
    before_ca, before_pods = ca_bundle(installed), injector_pods(installed)
    stop = threading.Event()
    outcomes: list[str] = []

    def create_pods_until_stopped() -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            created = create_pod(installed, f"rotating-{n}", APP)
            if created.returncode != 0:
                outcomes.append(created.stderr.strip())
            else:
                names = container_names(json.loads(created.stdout))
                outcomes.append(
                    "injected" if names == ["app", "mesher"] else f"not injected: {names}"
                )

    creator = threading.Thread(target=create_pods_until_stopped)
    creator.start()
    try:
        rotated = install(installed, ROTATE="1")
    finally:
        stop.set()
        creator.join()

    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert "caBundle trusts the old and the new CA while the injectors switch" in rotated.stdout
    assert "every injector serves the new certificate: caBundle trusts the new CA only" in (
        rotated.stdout
    )
    assert [o for o in outcomes if o != "injected"] == []
    assert len(outcomes) >= 10
    assert ca_bundle(installed) not in ("", before_ca)
    assert injector_pods(installed).isdisjoint(before_pods)
    assert injected_revision(installed, "rotated") != ""


def test_reset_template_puts_the_shipped_template_back(installed: ControlPlane) -> None:
    edit = bump(DEFAULT_TEMPLATE.read_text(), "1.6.8")
    kubectl_ok(
        installed,
        "apply",
        "-n",
        INJECTOR_NAMESPACE,
        "-f",
        "-",
        stdin=json.dumps(template_configmap(edit)),
    )

    reset = install(installed, RESET_TEMPLATE="1")

    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert "reset the template ConfigMap to the shipped default" in reset.stdout
    assert stored_template(installed) == DEFAULT_TEMPLATE.read_text()


@pytest.mark.parametrize(
    ("image", "running"),
    [
        ("registry.local:5000/mesher-injector:0.2.0", "registry.local:5000/mesher-injector:0.2.0"),
        # a registry's port is not a tag: the shipped tag stays
        ("registry.local:5000/mesher-injector", "registry.local:5000/mesher-injector:0.1.0"),
        ("mesher-injector:dev", "mesher-injector:dev"),
    ],
)
def test_an_install_with_another_image_rolls_the_injectors_onto_it(
    installed: ControlPlane, image: str, running: str
) -> None:
    before = injector_pods(installed)

    upgraded = install(installed, IMAGE=image)

    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    pods = json.loads(
        kubectl_ok(installed, "get", "pods", "-n", INJECTOR_NAMESPACE, "-l", SELECTOR, "-o", "json")
    )["items"]
    live = [p for p in pods if "deletionTimestamp" not in p["metadata"]]
    assert {p["spec"]["containers"][0]["image"] for p in live} == {running}
    assert {f"pod/{p['metadata']['name']}" for p in live}.isdisjoint(before)
    assert injected_revision(installed, f"upgraded-{len(before)}-{time.monotonic_ns()}") != ""


def test_a_second_install_into_another_namespace_is_refused(installed: ControlPlane) -> None:
    elsewhere = install(installed, NAMESPACE=ELSEWHERE)

    assert elsewhere.returncode != 0
    assert f"mesher-injector is installed in namespace {INJECTOR_NAMESPACE}" in elsewhere.stderr
    assert get(installed, "namespace", ELSEWHERE) is None
    configuration = get(installed, "mutatingwebhookconfiguration", "mesher-injector")
    assert configuration is not None
    assert configuration["webhooks"][0]["clientConfig"]["service"]["namespace"] == (
        INJECTOR_NAMESPACE
    )


@pytest.fixture
def as_if_from_cert_manager(installed: ControlPlane) -> Iterator[ControlPlane]:
    """The mutating webhook annotated as deploy/cert-manager/ installs it, for the test."""
    annotation = "cert-manager.io/inject-ca-from"
    webhook = ("mutatingwebhookconfiguration", "mesher-injector")
    kubectl_ok(installed, "annotate", *webhook, f"{annotation}={INJECTOR_NAMESPACE}/serving")
    try:
        yield installed
    finally:
        kubectl_ok(installed, "annotate", *webhook, f"{annotation}-")


def test_install_sh_leaves_an_install_by_cert_manager_alone(
    as_if_from_cert_manager: ControlPlane,
) -> None:
    before = ca_bundle(as_if_from_cert_manager)

    refused = install(as_if_from_cert_manager, ROTATE="1")

    assert refused.returncode != 0
    assert "certificate comes from cert-manager" in refused.stderr
    assert ca_bundle(as_if_from_cert_manager) == before


def test_deploy_e2e_sh_leaves_an_install_by_cert_manager_alone(
    as_if_from_cert_manager: ControlPlane,
) -> None:
    refused = run_e2e_script(as_if_from_cert_manager)

    assert refused.returncode != 0
    assert "certificate comes from cert-manager" in refused.stderr
    assert "touches only" not in refused.stdout
    labelled = get(as_if_from_cert_manager, "namespaces", "-l", E2E_OWNER)
    assert labelled is not None
    assert labelled["items"] == []


def test_deploy_e2e_sh_on_an_install_leaves_it_and_puts_the_admins_template_back(
    installed: ControlPlane,
) -> None:
    # Last in this module: it rotates the certificate and scales the injector.
    users = a_users_workload(installed)
    # the admin's ConfigMap has a named template too: e2e.sh's edit must leave it alone
    configmap = template_configmap(stored_template(installed))
    configmap["data"]["canary.yaml"] = bump(DEFAULT_TEMPLATE.read_text(), "1.7.0")
    kubectl_ok(installed, "apply", "-n", INJECTOR_NAMESPACE, "-f", "-", stdin=json.dumps(configmap))
    before = template_data(installed)
    deployment = get(installed, "deployment/mesher-injector", "-n", INJECTOR_NAMESPACE)
    assert deployment is not None
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]

    result = run_e2e_script(installed)

    announced = assert_passed_and_cleaned_up(installed, result)
    assert f"mesher-injector in namespace {INJECTOR_NAMESPACE}, installed already" in announced
    assert f"(image {image})" in announced
    assert "removed the injector" not in result.stdout
    assert_untouched(installed, users)
    assert template_data(installed) == before
    after = get(installed, "deployment/mesher-injector", "-n", INJECTOR_NAMESPACE)
    assert after is not None
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert after["status"]["readyReplicas"] == after["spec"]["replicas"] == 2
    # still installed, serving the admin's template (not the one e2e.sh edited)
    wanted = load_template(before["template.yaml"]).revision
    assert injected_revision(installed, "after-e2e") == wanted
