"""The Helm chart on a real control plane of this module's own, with the README's own Helm
commands (`helm install`, `helm upgrade`, `helm uninstall`), in this module's order: the injector's
Deployment runs as local processes of our CLI (tests/e2e/pod_runner.py), and the API
server calls the webhooks through their Service, as in test_install.py."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from injector.core.template import load_template
from tests.e2e.controlplane import ControlPlane, find_binaries, running_control_plane
from tests.e2e.injector import (
    kubectl_ok,
    wait_until_a_broken_template_is_refused,
    wait_until_the_api_server_calls,
)
from tests.e2e.installing import (
    INSTALLED_OBJECTS,
    WEBHOOK_KINDS,
    ca_bundles,
    create_pod,
    get,
    gone_or_going,
    opt_in,
)
from tests.e2e.manifests import INJECTOR_NAMESPACE, container_names, template_configmap
from tests.support.charts import Json, helm_binary, readme_helm_commands, run_helm
from tests.support.helpers import DEFAULT_TEMPLATE, ROOT, bump

pytestmark = pytest.mark.e2e

APP = "meshed"
RELOAD_LIMIT = 20.0
SELECTOR = "app.kubernetes.io/name=mesher-injector"
TLS_SECRET = "mesher-injector-tls"
# What the chart installs in the injector's namespace (the template ConfigMap aside): what
# install.sh does, and the self-signed CA's Secret it keeps across upgrades.
RELEASED = (*INSTALLED_OBJECTS, "secret/mesher-injector-ca")
CLI = ROOT / ".venv" / "bin" / "mesher-injector"
# An upgrade that renews the serving certificate now (it is valid for 365 days).
RENEW_NOW = ("--set", "certificates.selfSigned.renewBeforeDays=400")


@pytest.fixture(scope="module")
def helm() -> Path:
    found = helm_binary()
    assert found is not None, "no helm: run `make helm` first"
    return found


@pytest.fixture(scope="module")
def commands() -> dict[str, list[str]]:
    return readme_helm_commands()


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with running_control_plane(tmp_path_factory.mktemp("helm-plane"), find_binaries()) as plane:
        opt_in(plane, APP)
        yield plane


def helm_ok(helm: Path, command: list[str], plane: ControlPlane, *extra: str) -> str:
    done = run_helm(helm, command, plane.kubeconfig, *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def stored_template(plane: ControlPlane) -> str:
    found = kubectl_ok(
        plane, "get", "configmap", "-n", INJECTOR_NAMESPACE, "mesher-sidecar-template", "-o", "json"
    )
    text: str = json.loads(found)["data"]["template.yaml"]
    return text


def edit_template(plane: ControlPlane, text: str) -> None:
    configmap = json.dumps(template_configmap(text))
    kubectl_ok(plane, "apply", "-n", INJECTOR_NAMESPACE, "-f", "-", stdin=configmap)


def injected_revision(plane: ControlPlane, name: str) -> str:
    created = create_pod(plane, name, APP)
    assert created.returncode == 0, created.stderr
    pod = json.loads(created.stdout)
    assert container_names(pod) == ["app", "mesher"]
    revision: str = pod["metadata"]["annotations"]["sidecar.mesher.io/template-revision"]
    return revision


def wait_until_injected_with(plane: ControlPlane, text: str, prefix: str) -> None:
    """Every injector replica serves `text` (its watch has it): a few pods in a row get it."""
    wanted = load_template(text).revision
    deadline = time.monotonic() + RELOAD_LIMIT
    for attempt in itertools.count():
        if all(injected_revision(plane, f"{prefix}-{attempt}-{i}") == wanted for i in range(4)):
            return
        assert time.monotonic() < deadline, f"pods are not injected with {wanted} yet"
        time.sleep(0.2)


def secret_data(plane: ControlPlane) -> dict[str, str]:
    secret = get(plane, "secret", TLS_SECRET, "-n", INJECTOR_NAMESPACE)
    assert secret is not None
    data: dict[str, str] = secret["data"]
    return data


@contextlib.contextmanager
def creating_pods(plane: ControlPlane, outcomes: list[str]) -> Iterator[None]:
    """Pods that ask for mesher created one after another for the block, each outcome
    recorded: "injected", "not injected" (created without mesher) or kubectl's error."""
    stop = threading.Event()

    def create_until_stopped() -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            created = create_pod(plane, f"meanwhile-{time.monotonic_ns()}-{n}", APP)
            if created.returncode != 0:
                outcomes.append(created.stderr.strip())
            elif container_names(json.loads(created.stdout)) == ["app", "mesher"]:
                outcomes.append("injected")
            else:
                outcomes.append("not injected")

    creator = threading.Thread(target=create_until_stopped)
    creator.start()
    try:
        yield
    finally:
        stop.set()
        creator.join()


def live_injectors(plane: ControlPlane) -> list[Json]:
    pods = json.loads(
        kubectl_ok(plane, "get", "pods", "-n", INJECTOR_NAMESPACE, "-l", SELECTOR, "-o", "json")
    )["items"]
    live: list[Json] = [p for p in pods if "deletionTimestamp" not in p["metadata"]]
    return live


def served_certificate(pod: Json) -> str:
    """The PEM certificate the injector pod serves on its webhook port."""
    return ssl.get_server_certificate((pod["status"]["podIP"], 8443))


def test_helm_install_runs_the_injector_and_it_injects(
    helm: Path, commands: dict[str, list[str]], plane: ControlPlane
) -> None:
    installed = helm_ok(helm, commands["install"], plane)

    assert "STATUS: deployed" in installed
    deployment = get(plane, "deployment/mesher-injector", "-n", INJECTOR_NAMESPACE)
    assert deployment is not None
    assert deployment["status"]["readyReplicas"] == 2  # --wait waited for them
    assert stored_template(plane) == DEFAULT_TEMPLATE.read_text()
    wait_until_the_api_server_calls(plane, APP)
    assert injected_revision(plane, "first") == load_template(DEFAULT_TEMPLATE.read_text()).revision
    # the template's validating webhook trusts the self-signed CA too
    wait_until_a_broken_template_is_refused(plane, INJECTOR_NAMESPACE)


def test_helm_upgrade_keeps_the_admins_template_edit_and_the_certificate(
    helm: Path, commands: dict[str, list[str]], plane: ControlPlane
) -> None:
    edit = bump(stored_template(plane), "1.6.9")
    edit_template(plane, edit)
    before, bundles = secret_data(plane), ca_bundles(plane)

    helm_ok(helm, commands["upgrade"], plane)

    assert stored_template(plane) == edit
    assert secret_data(plane) == before
    assert ca_bundles(plane) == bundles
    wait_until_injected_with(plane, edit, "upgraded")


def test_a_renewed_certificate_rolls_out_with_no_failed_admission(
    helm: Path, commands: dict[str, list[str]], plane: ControlPlane
) -> None:
    before, bundles = secret_data(plane), ca_bundles(plane)
    outcomes: list[str] = []

    with creating_pods(plane, outcomes):
        helm_ok(helm, commands["upgrade"], plane, *RENEW_NOW)
        # the injectors read the new Secret when they start (a kubelet's sync, on a node)
        deployment = "deployment/mesher-injector"
        kubectl_ok(plane, "rollout", "restart", "-n", INJECTOR_NAMESPACE, deployment)
        kubectl_ok(
            plane, "rollout", "status", "-n", INJECTOR_NAMESPACE, deployment, "--timeout=60s"
        )

    assert [o for o in outcomes if o != "injected"] == []
    assert len(outcomes) >= 5
    renewed = secret_data(plane)
    assert renewed["tls.crt"] != before["tls.crt"]
    assert renewed["ca.crt"] == before["ca.crt"]
    assert ca_bundles(plane) == bundles
    for pod in live_injectors(plane):
        assert ssl.PEM_cert_to_DER_cert(served_certificate(pod)) == ssl.PEM_cert_to_DER_cert(
            base64.b64decode(renewed["tls.crt"]).decode()
        )


def test_helm_uninstall_removes_the_webhooks_first_and_keeps_the_template(
    helm: Path, commands: dict[str, list[str]], plane: ControlPlane
) -> None:
    edited = stored_template(plane)
    outcomes: list[str] = []

    with creating_pods(plane, outcomes):
        helm_ok(helm, commands["uninstall"], plane)
        time.sleep(1.0)  # a moment for the API server's webhook cache to catch up

    for kind in WEBHOOK_KINDS:
        assert get(plane, kind, "mesher-injector") is None
    for released in RELEASED:
        assert gone_or_going(get(plane, released, "-n", INJECTOR_NAMESPACE)), released
    # never a pod refused meanwhile: the webhooks went before the Service and the injectors
    assert [o for o in outcomes if o not in ("injected", "not injected")] == []
    assert outcomes[-1] == "not injected"
    assert stored_template(plane) == edited


def test_helm_install_again_keeps_the_admins_template(
    helm: Path, commands: dict[str, list[str]], plane: ControlPlane
) -> None:
    edited = stored_template(plane)
    assert edited != DEFAULT_TEMPLATE.read_text()

    helm_ok(helm, commands["install"], plane)

    assert stored_template(plane) == edited
    wait_until_the_api_server_calls(plane, APP)
    wait_until_injected_with(plane, edited, "reinstalled")


def test_helm_install_with_the_users_certificate_serves_it(
    helm: Path, commands: dict[str, list[str]], plane: ControlPlane, tmp_path: Path
) -> None:
    helm_ok(helm, commands["uninstall"], plane)
    certs = tmp_path / "certs"
    issued = subprocess.run(
        [str(CLI), "certs", "--namespace", INJECTOR_NAMESPACE, "-o", str(certs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert issued.returncode == 0, issued.stderr
    kubectl_ok(plane, "apply", "-f", str(certs / "secret.yaml"))

    helm_ok(
        helm,
        commands["install"],
        plane,
        "--set",
        "certificates.source=provided",
        "--set-file",
        f"certificates.provided.caBundle={certs / 'cabundle'}",
    )

    assert get(plane, "secret", "mesher-injector-ca", "-n", INJECTOR_NAMESPACE) is None
    wait_until_the_api_server_calls(plane, APP)
    expected = ssl.PEM_cert_to_DER_cert((certs / "tls.crt").read_text())
    pods = live_injectors(plane)
    assert len(pods) == 2
    for pod in pods:
        assert ssl.PEM_cert_to_DER_cert(served_certificate(pod)) == expected
