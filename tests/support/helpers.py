"""Shared test helpers: fixtures on disk, patch checks."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonpatch

from injector.core.names import INJECTOR_NAMESPACE, TEMPLATE_CONFIGMAP
from injector.core.settings import ConfigMapRef
from injector.core.workloads import State, Workload

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
MANIFESTS = Path(__file__).resolve().parent / "manifests"
ADMISSION = FIXTURES / "admission"
KUBE_API = FIXTURES / "kube-api"
DEFAULT_TEMPLATE = ROOT / "injector" / "default_template.yaml"


def admission_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ADMISSION / f"{name}.json").read_text())
    return data


def recorded_items(resource: str) -> list[dict[str, Any]]:
    """The items of a list answer a real API server recorded (kube-api/RESOURCE-list.json):
    pods, replicasets, jobs, namespaces..."""
    items: list[dict[str, Any]] = json.loads((KUBE_API / f"{resource}-list.json").read_text())[
        "items"
    ]
    return items


def admission_fixture_names() -> list[str]:
    return sorted(p.stem for p in ADMISSION.glob("*.json") if not p.name.startswith("_"))


def decode_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return ops


def apply(pod: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    patched: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(pod), ops)
    return patched


def assert_only_added(before: Any, after: Any, path: str = "") -> None:
    """Everything in `before` is still in `after`, unchanged: the patch only added.

    Lists of named objects (containers, env, volumes) are compared by name, since a
    sidecar may be inserted among them; other lists must be equal.
    """
    if isinstance(before, dict):
        assert isinstance(after, dict), path
        for key, value in before.items():
            assert key in after, f"{path}/{key} was removed"
            assert_only_added(value, after[key], f"{path}/{key}")
    elif isinstance(before, list) and all(isinstance(i, dict) and "name" in i for i in before):
        assert isinstance(after, list), path
        by_name = {i["name"]: i for i in after if isinstance(i, dict) and "name" in i}
        order = [i["name"] for i in after if isinstance(i, dict) and i.get("name") in by_name]
        kept = [n for n in order if n in {b["name"] for b in before}]
        assert kept == [b["name"] for b in before], f"{path}: order of existing items changed"
        for item in before:
            assert_only_added(item, by_name[item["name"]], f"{path}[{item['name']}]")
    else:
        assert before == after, f"{path} changed: {before!r} -> {after!r}"


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"expected one container {name!r}"
    return found[0]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


async def wait_until(predicate: Callable[[], object], limit: float = 5.0) -> None:
    """Poll `predicate` until true; fail after `limit` seconds (a bound, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def pilot_chassis(mesher: dict[str, Any]) -> dict[str, Any]:
    """The chassis.yaml a pilot-configured mesher container writes to /tmp before it runs
    mesher's start.sh (which copies it over its own), as mesher will parse it."""
    import yaml

    command = mesher["command"]
    assert command[:2] == ["sh", "-c"]
    assert "> '/tmp/chassis.yaml'" in command[2]
    assert command[-2:] == ["sh", "/opt/mesher/start.sh"]  # the image's own entrypoint
    env = {e["name"]: e.get("value") for e in mesher["env"]}
    (name,) = [n for n in env if n.startswith("MESHER_INJECTOR_FILE_")]
    assert f'"${name}"' in command[2]
    text = str(env[name]).replace("$$", "$")  # the kubelet's $(VAR) escape, undone
    chassis: dict[str, Any] = yaml.safe_load(text)
    return chassis


def assert_pilot_configured(mesher: dict[str, Any], address: str) -> None:
    """Mesher configured for Istio Pilot as mesher reads it (docs/istio/discovery.rst)."""
    registry = pilot_chassis(mesher)["cse"]["service"]["registry"]
    assert registry["registrator"] == {"disabled": True}
    assert registry["serviceDiscovery"] == {"type": "pilotv2", "address": f"grpc://{address}"}
    assert mesher["image"].endswith("-pilot")
    env = {e["name"] for e in mesher["env"]}
    assert not env & {"PILOT_ADDR", "SERVICE_DISCOVERY_TYPE", "CSE_REGISTRY_ADDR"}


def _shipped() -> tuple[str, str]:
    import yaml

    document = yaml.safe_load(DEFAULT_TEMPLATE.read_text())
    return str(document["version"]), str(document["values"]["image"])


# What the shipped template says, so a fork that rolls mesher keeps its tests green.
SHIPPED_VERSION, SHIPPED_IMAGE = _shipped()


def bump(text: str, version: str) -> str:
    """The shipped template `text` with its mesher version (tag and version) replaced."""
    assert SHIPPED_VERSION in text
    return text.replace(SHIPPED_VERSION, version)


# The template ConfigMap where deploy/ puts it, and a restartable workload of a status
# report: what the restart plan's tests (core and kube) start from.
TEMPLATE_REF = ConfigMapRef(namespace=INJECTOR_NAMESPACE, name=TEMPLATE_CONFIGMAP)


def deployment_workload(name: str, *, state: State = "stale") -> Workload:
    revisions = {"r0": 1} if state == "stale" else {}
    return Workload(
        namespace="shop", kind="Deployment", name=name, pods=1, revisions=revisions, state=state
    )
