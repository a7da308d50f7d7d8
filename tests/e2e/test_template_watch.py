"""The template ConfigMap watch of a local injector (`--template-source configmap`) through
a real API server: edits reach /template, a broken one is refused, and the watch carries on
across a restart of kube-apiserver.

The restart gets a control plane of its own (the module's), so the other tests' shared one
never goes away under them."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from injector.core.template import load_template
from tests.e2e.controlplane import ControlPlane, find_binaries, running_control_plane
from tests.e2e.injector import (
    UNKNOWN_VARIABLE,
    LocalInjector,
    kubectl_ok,
    running_injector,
    samples,
)
from tests.e2e.manifests import TEMPLATE_CONFIGMAP, template_configmap
from tests.support.helpers import DEFAULT_TEMPLATE, bump

pytestmark = pytest.mark.e2e

GOOD = DEFAULT_TEMPLATE.read_text()
NAMESPACE = "templates"
# The watch reconnects with a jittered backoff (0.25 s doubling) while the API server is
# down; a few seconds after it is back, it has resumed.
RELOAD_LIMIT = 30.0


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with running_control_plane(tmp_path_factory.mktemp("own-plane"), find_binaries()) as own:
        kubectl_ok(own, "create", "namespace", NAMESPACE)
        yield own


def put_template(plane: ControlPlane, text: str) -> None:
    kubectl_ok(
        plane, "apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(template_configmap(text))
    )


def admin_get(injector: LocalInjector, path: str) -> str:
    with urllib.request.urlopen(f"{injector.admin}{path}", timeout=5) as answer:
        text: str = answer.read().decode()
        return text


def template_state(injector: LocalInjector) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(admin_get(injector, "/template"))
    return state


def watch_restarts(injector: LocalInjector) -> dict[str, float]:
    """mesher_injector_watch_restarts_total by reason."""
    restarts = samples(injector.admin, "mesher_injector_watch_restarts_total")
    return {labels["reason"]: value for labels, value in restarts}


def wait_for_template(injector: LocalInjector, accept: Any) -> dict[str, Any]:
    deadline = time.monotonic() + RELOAD_LIMIT
    state = template_state(injector)
    while time.monotonic() < deadline:
        if accept(state):
            return state
        time.sleep(0.1)
        state = template_state(injector)
    raise AssertionError(f"/template not as expected within {RELOAD_LIMIT} s; last: {state}")


def revision_of(text: str) -> str:
    return load_template(text).revision


@pytest.fixture
def watching(plane: ControlPlane, tmp_path: Path) -> Iterator[LocalInjector]:
    """A local injector watching templates/mesher-sidecar-template, which holds the
    shipped template when it starts."""
    put_template(plane, GOOD)
    with running_injector(
        tmp_path / "injector",
        configmap=f"{NAMESPACE}/{TEMPLATE_CONFIGMAP}",
        kubeconfig=plane.kubeconfig,
    ) as local:
        yield local


def test_an_edit_of_the_template_configmap_becomes_the_served_revision(
    plane: ControlPlane, watching: LocalInjector
) -> None:
    assert template_state(watching)["revision"] == revision_of(GOOD)
    edit = bump(GOOD, "1.6.4")

    put_template(plane, edit)

    state = wait_for_template(watching, lambda s: s["revision"] == revision_of(edit))
    assert state["version"] == "1.6.4"
    assert state["source"].startswith(f"configmap:{NAMESPACE}/{TEMPLATE_CONFIGMAP}@")


def test_a_broken_edit_is_refused_and_the_last_good_template_keeps_serving(
    plane: ControlPlane, watching: LocalInjector
) -> None:
    put_template(plane, UNKNOWN_VARIABLE)

    state = wait_for_template(watching, lambda s: s["last_error"] is not None)
    assert state["revision"] == revision_of(GOOD)
    assert "unknown variable {{ values.nope }}" in state["last_error"]["error"]


def test_the_watch_sees_edits_made_after_the_api_server_restarts(
    plane: ControlPlane, watching: LocalInjector
) -> None:
    before = bump(GOOD, "1.6.4")
    put_template(plane, before)
    wait_for_template(watching, lambda s: s["revision"] == revision_of(before))

    plane.restart_api_server()
    after = bump(GOOD, "1.6.5")
    put_template(plane, after)

    state = wait_for_template(watching, lambda s: s["revision"] == revision_of(after))
    assert state["version"] == "1.6.5"
    # It did lose the stream (then, as a rule, the new API server's watch cache no longer
    # has the old resourceVersion: 410, and it lists again).
    assert watch_restarts(watching).get("disconnected", 0) >= 1
