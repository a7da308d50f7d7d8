"""injector.kube.cluster's list pages: decoded with only the fields status reads, they give
the workloads that the API server's whole answers give."""

from __future__ import annotations

import json

import pytest

from injector.core.workloads import Snapshot, workloads
from injector.kube.cluster import decode_page
from tests.support.helpers import KUBE_API, recorded_items

RESOURCES = {
    "pods": "pods",
    "replicasets": "replicasets",
    "jobs": "jobs",
    "namespaces": "namespaces",
}
# Every container of the recorded pods: each pod then counts as injected by its containers.
CONTAINERS = frozenset(c["name"] for p in recorded_items("pods") for c in p["spec"]["containers"])


@pytest.mark.parametrize("sidecars", [frozenset({"mesher"}), CONTAINERS])
def test_status_finds_the_same_workloads_in_decoded_pages_as_in_whole_answers(
    sidecars: frozenset[str],
) -> None:
    whole = Snapshot(**{name: recorded_items(name) for name in RESOURCES})
    decoded = Snapshot(
        **{
            name: decode_page((KUBE_API / f"{name}-list.json").read_bytes())[0]
            for name in RESOURCES
        }
    )

    found = workloads(decoded, revision="r", sidecar_names=sidecars)

    assert found == workloads(whole, revision="r", sidecar_names=sidecars)
    assert found


def test_a_page_gives_its_continue_token_and_the_last_none() -> None:
    answer = json.loads((KUBE_API / "pods-list.json").read_bytes())
    last = json.dumps(answer).encode()
    answer["metadata"]["continue"] = "next-page"

    assert decode_page(json.dumps(answer).encode())[1] == "next-page"
    assert decode_page(last)[1] == ""
