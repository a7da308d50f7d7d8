"""`mesher-injector diff --template-file NEW` (a process, through the kubeconfig) against
workloads a local injector really injected from the template ConfigMap: what the new
template would change in each one's sidecar, and its exit code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e import manifests
from tests.e2e.commands import (
    Live,
    ready_deployment,
    revision_of,
    wait_rolled_out,
    watching_injector,
)
from tests.e2e.controlplane import ControlPlane
from tests.e2e.kube import Kube
from tests.e2e.manifests import ASK, TEMPLATE_CONFIGMAP, template_configmap
from tests.support.helpers import DEFAULT_TEMPLATE, SHIPPED_IMAGE, SHIPPED_VERSION, bump

pytestmark = pytest.mark.e2e

# Its own namespace for the template ConfigMap: status's module deletes its own at its end.
SYSTEM = "e2e-diff-system"
GOOD = DEFAULT_TEMPLATE.read_text()
PILOT = {**ASK, "sidecar.mesher.io/discoveryType": "pilot"}
PILOT_IMAGE = SHIPPED_IMAGE + "-pilot"


@pytest.fixture(scope="module")
def live_module(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("diff-injector")
    with watching_injector(control_plane, workdir, GOOD, system=SYSTEM) as live:
        yield live


@pytest.fixture
def live(live_module: Live) -> Live:
    """The shipped template live and served, and nothing else in the ConfigMap."""
    live_module.put_template(GOOD)
    return live_module


async def meshed_workloads(kube: Kube, namespace: str) -> None:
    """Injected by the live template: Deployment web (service-center), Deployment api
    (Pilot) and the bare pod solo."""
    await ready_deployment(kube, namespace, "web", replicas=1)
    await kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        manifests.deployment("api", annotations=PILOT),
    )
    await wait_rolled_out(kube, namespace, "api", replicas=1)
    solo = await kube.create(
        f"/api/v1/namespaces/{namespace}/pods", manifests.pod("solo", annotations=ASK)
    )
    assert "mesher" in manifests.container_names(solo)  # injected: diff must see past it


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


async def test_diff_shows_the_sidecar_a_new_pilot_image_changes_and_exits_0(
    kube: Kube, labelled_namespace: str, live: Live, tmp_path: Path
) -> None:
    await meshed_workloads(kube, labelled_namespace)
    new_pilot = PILOT_IMAGE.replace(SHIPPED_VERSION, "1.6.4")
    edit = GOOD.replace(f"pilotImage: {PILOT_IMAGE}", f"pilotImage: {new_pilot}")
    assert edit != GOOD
    new = write(tmp_path, "new.yaml", edit)

    result = live.cli("diff", "-n", labelled_namespace, "--template-file", str(new))

    assert result.returncode == 0, result.stderr
    ns = labelled_namespace
    assert result.stdout.splitlines() == [
        f"live: configmap {SYSTEM}/{TEMPLATE_CONFIGMAP}, revision {revision_of(GOOD)}, "
        f"version {SHIPPED_VERSION}",
        f"new:  file {new}, revision {revision_of(edit)}, version {SHIPPED_VERSION}",
        f"deployment/api -n {ns}",
        f"  containers[mesher].image: {PILOT_IMAGE} -> {new_pilot}",
        f"deployment/web -n {ns}",
        "  no change",
        f"pod/solo -n {ns}",
        "  no change",
        "3 workloads: 1 would change, 2 unchanged, 0 denied",
    ]
    assert result.stderr == ""


async def test_a_configmap_dropping_a_discovery_type_denies_its_workload_and_exits_1(
    kube: Kube, labelled_namespace: str, live: Live, tmp_path: Path
) -> None:
    await meshed_workloads(kube, labelled_namespace)
    document = yaml.safe_load(GOOD)
    del document["discovery"]["pilot"]
    document["containers"][0]["resources"]["limits"]["memory"] = "512Mi"
    manifest = template_configmap(yaml.safe_dump(document))
    manifest["metadata"]["namespace"] = SYSTEM
    new = write(tmp_path, "configmap.yaml", yaml.safe_dump(manifest))

    text = live.cli("diff", "-n", labelled_namespace, "--template-file", str(new))
    as_json = live.cli("diff", "-n", labelled_namespace, "--template-file", str(new), "-o", "json")

    assert text.returncode == 1, text.stderr
    ns = labelled_namespace
    assert text.stdout.splitlines()[1:] == [
        f"new:  configmap manifest {new}, revision {revision_of(yaml.safe_dump(document))}, "
        f"version {SHIPPED_VERSION}",
        f"deployment/api -n {ns}",
        '  would be denied (unknown-discovery-type): sidecar.mesher.io/discoveryType="pilot" '
        "is not a known discovery type (allowed: sc)",
        f"deployment/web -n {ns}",
        "  containers[mesher].resources.limits.memory: 256Mi -> 512Mi",
        f"pod/solo -n {ns}",
        "  containers[mesher].resources.limits.memory: 256Mi -> 512Mi",
        "3 workloads: 2 would change, 0 unchanged, 1 denied",
    ]
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["summary"] == {"changed": 2, "unchanged": 0, "denied": 1, "not-compared": 0}
    api, web, solo = report["workloads"]
    assert (api["kind"], api["name"], api["verdict"], api["reason"]) == (
        "Deployment",
        "api",
        "denied",
        "unknown-discovery-type",
    )
    assert web["changes"] == [
        {"path": "containers[mesher].resources.limits.memory", "old": "256Mi", "new": "512Mi"}
    ]
    assert (solo["kind"], solo["verdict"]) == ("Pod", "changed")


async def test_a_workload_asking_for_a_named_template_is_compared_under_it(
    kube: Kube, labelled_namespace: str, live: Live, tmp_path: Path
) -> None:
    canary, next_canary = bump(GOOD, "1.7.0"), bump(GOOD, "1.7.1")
    live.put_template(GOOD, named={"canary": canary})
    await ready_deployment(kube, labelled_namespace, "web", replicas=1)
    await kube.create(
        f"/apis/apps/v1/namespaces/{labelled_namespace}/deployments",
        manifests.deployment("cart", annotations={**ASK, "sidecar.mesher.io/template": "canary"}),
    )
    await wait_rolled_out(kube, labelled_namespace, "cart", replicas=1)
    manifest = template_configmap(GOOD)
    manifest["data"]["canary.yaml"] = next_canary
    new = write(tmp_path, "configmap.yaml", yaml.safe_dump(manifest))
    only_default = write(tmp_path, "template.yaml", GOOD)

    result = live.cli("diff", "-n", labelled_namespace, "--template-file", str(new))
    kept = live.cli("diff", "-n", labelled_namespace, "--template-file", str(only_default))

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2:] == [
        f"deployment/cart -n {labelled_namespace} (template canary)",
        f"  containers[mesher].image: {SHIPPED_IMAGE.replace(SHIPPED_VERSION, '1.7.0')} -> "
        f"{SHIPPED_IMAGE.replace(SHIPPED_VERSION, '1.7.1')}",
        f"deployment/web -n {labelled_namespace}",
        "  no change",
        "2 workloads: 1 would change, 1 unchanged, 0 denied",
    ]
    # A template file is the default template: the live canary stays as it is.
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.splitlines()[-1] == "2 workloads: 0 would change, 2 unchanged, 0 denied"


def test_an_unreachable_api_server_is_a_one_line_error_with_exit_2(
    live: Live, tmp_path: Path
) -> None:
    new = write(tmp_path, "new.yaml", GOOD)

    result = live.cli(
        "diff", "-A", "--template-file", str(new), "--kube-api-server", "http://127.0.0.1:9"
    )

    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("mesher-injector diff: error: cannot reach the API server")
