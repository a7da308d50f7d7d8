"""deploy/install.sh end to end, on a control plane of the module's own (a fresh
mesher-system): the injector's Deployment runs as local processes of our CLI on its pods'
loopback addresses (tests/e2e/pod_runner.py), probed for readiness by the stand-in node,
and the API server calls the webhooks through their Service's endpoints."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from injector.core.template import load_template
from tests.e2e import manifests
from tests.e2e.controlplane import ControlPlane, find_binaries, running_control_plane
from tests.e2e.injector import (
    DENIED_TEMPLATE,
    UNKNOWN_VARIABLE,
    kubectl_ok,
    wait_until_a_broken_template_is_refused,
)
from tests.e2e.manifests import (
    ASK,
    INJECTION_LABEL,
    INJECTOR_NAMESPACE,
    TEMPLATE_CONFIGMAP,
    container_names,
    template_configmap,
)
from tests.support.helpers import DEFAULT_TEMPLATE, ROOT, bump

pytestmark = pytest.mark.e2e

INSTALL = ROOT / "deploy" / "install.sh"
APP = "meshed"
RELOAD_LIMIT = 20.0
SELECTOR = "app.kubernetes.io/name=mesher-injector"


def install(plane: ControlPlane, **env: str) -> subprocess.CompletedProcess[str]:
    """deploy/install.sh with our kubectl on `plane` and this checkout's CLI."""
    return subprocess.run(
        ["bash", str(INSTALL)],
        env={
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "KUBECTL": str(plane.bin_dir / "kubectl"),
            "MESHER_INJECTOR": str(ROOT / ".venv" / "bin" / "mesher-injector"),
            "TIMEOUT": "60s",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def create_pod(plane: ControlPlane, name: str) -> subprocess.CompletedProcess[str]:
    pod = manifests.pod(name, annotations=ASK)
    return plane.kubectl("create", "-n", APP, "-o", "json", "-f", "-", stdin=json.dumps(pod))


def injected_revision(plane: ControlPlane, name: str) -> str:
    created = create_pod(plane, name)
    assert created.returncode == 0, created.stderr
    pod = json.loads(created.stdout)
    assert container_names(pod) == ["app", "mesher"]
    revision: str = pod["metadata"]["annotations"]["sidecar.mesher.io/template-revision"]
    return revision


def stored_template(plane: ControlPlane) -> str:
    found = kubectl_ok(
        plane, "get", "configmap", "-n", INJECTOR_NAMESPACE, TEMPLATE_CONFIGMAP, "-o", "json"
    )
    text: str = json.loads(found)["data"]["template.yaml"]
    return text


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A fresh control plane with deploy/install.sh run once, and namespace APP opted in."""
    with running_control_plane(tmp_path_factory.mktemp("install-plane"), find_binaries()) as plane:
        first = install(plane)
        assert first.returncode == 0, first.stdout + first.stderr
        kubectl_ok(plane, "create", "namespace", APP)
        kubectl_ok(plane, "label", "namespace", APP, f"{INJECTION_LABEL}=enabled")
        yield plane


def test_a_fresh_install_injects_pods_through_the_injectors_service(
    installed: ControlPlane,
) -> None:
    revision = injected_revision(installed, "first")

    assert revision == load_template(DEFAULT_TEMPLATE.read_text()).revision
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
    return kubectl_ok(
        plane,
        "get",
        "mutatingwebhookconfiguration",
        "mesher-injector",
        "-o",
        "jsonpath={.webhooks[0].clientConfig.caBundle}",
    )


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
            created = create_pod(installed, f"rotating-{n}")
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


def test_the_readmes_verify_steps_pass_as_deploy_e2e_sh_runs_them(installed: ControlPlane) -> None:
    # Last in this module: e2e.sh ends by deleting what it installed.
    result = subprocess.run(
        ["bash", str(ROOT / "deploy" / "e2e.sh")],
        env={
            **os.environ,
            "KUBECONFIG": str(installed.kubeconfig),
            "KUBECTL": str(installed.bin_dir / "kubectl"),
            "MESHER_INJECTOR": str(ROOT / ".venv" / "bin" / "mesher-injector"),
            "TIMEOUT": "60s",
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" not in result.stdout
    assert "FAIL" not in result.stdout
    assert result.stdout.count("ok   ") == 9
