"""Named templates, the canary path: every NAME.yaml key of the template ConfigMap (or
file of a --template-file folder) is a template of its own."""

from __future__ import annotations

import json
import shutil
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import generate_latest

from injector.core.decide import decide
from injector.core.store import TemplateSet
from injector.core.template import load_template
from injector.core.template_review import review_template
from injector.core.workloads import Snapshot, workloads
from injector.web.template_file import FileSource
from tests.support.cli import cli
from tests.support.helpers import (
    DEFAULT_TEMPLATE,
    MANIFESTS,
    admission_fixture,
    apply,
    bump,
    decode_patch,
    recorded_items,
    wait_until,
)
from tests.support.kube_api import KubeApi
from tests.support.servers import start_server
from tests.support.watch import watching

GOOD = DEFAULT_TEMPLATE.read_text()
CANARY = bump(GOOD, "1.7.0")
BROKEN = "version: [broken\n"


def data(**named: str) -> dict[str, object]:
    return {"template.yaml": GOOD, **{f"{name}.yaml": text for name, text in named.items()}}


def test_each_template_is_validated_and_kept_last_good_on_its_own() -> None:
    store = TemplateSet()
    store.offer_data(data(canary=CANARY), source="s", default_key="template.yaml")
    default, canary = store.template, store.named["canary"]
    assert default is not None
    assert canary.version == "1.7.0"
    assert canary.revision != default.revision
    reloads = store.offer_data(data(canary=BROKEN), source="s", default_key="template.yaml")
    assert {r.template: r.result for r in reloads} == {
        "template": "unchanged",
        "canary": "rejected",
    }
    assert store.named["canary"] is canary  # its last good version
    assert store.template is default  # never affected
    assert store.last_error is None
    assert "not valid YAML" in store.stores()["canary"].last_error.error  # type: ignore[union-attr]
    reloads = store.offer_data(
        {"template.yaml": BROKEN, "canary.yaml": CANARY}, source="s", default_key="template.yaml"
    )
    assert store.template is default  # the default keeps its last good, too
    assert store.named["canary"] is canary
    reloads = store.offer_data(data(), source="s", default_key="template.yaml")
    assert [(r.template, r.result) for r in reloads][-1] == ("canary", "deleted")
    assert "canary" not in store.named  # a removed key removes the template
    reloads = store.offer_data(data(**{"Bad_Name": GOOD}), source="s", default_key="template.yaml")
    assert any(r.result == "rejected" and "DNS label" in r.error for r in reloads)


def test_a_pod_picks_a_named_template_and_carries_its_revision() -> None:
    default, canary = load_template(GOOD), load_template(CANARY)
    request = admission_fixture("server-mesher")["request"]
    request["object"]["metadata"]["annotations"]["sidecar.mesher.io/template"] = "canary"
    outcome = decide(request, default, named={"canary": canary})
    assert outcome.decision == "injected"
    assert outcome.template == "canary"
    assert outcome.revision == canary.revision
    patched = apply(request["object"], outcome.operations())
    annotations = patched["metadata"]["annotations"]
    assert annotations["sidecar.mesher.io/template-revision"] == canary.revision
    mesher = next(c for c in patched["spec"]["containers"] if c["name"] == "mesher")
    assert mesher["image"] == "servicecomb/mesher-sidecar:1.7.0"
    request["object"]["metadata"]["annotations"]["sidecar.mesher.io/template"] = "nope"
    denied = decide(request, default, named={"canary": canary})
    assert (denied.decision, denied.reason) == ("denied", "unknown-template")
    assert (
        denied.message
        == 'sidecar.mesher.io/template="nope" names no template (available: template, canary)'
    )


def test_the_validating_webhook_checks_every_key() -> None:
    review = admission_fixture("configmap-update")
    review["request"]["object"]["data"]["canary.yaml"] = BROKEN
    result = review_template(json.dumps(review).encode(), key="template.yaml")
    message = json.loads(result.body)["response"]["status"]["message"]
    assert not result.allowed
    assert "canary.yaml: not valid YAML" in message


def test_status_compares_each_pod_with_the_template_it_asked_for() -> None:
    pods = recorded_items("pods")
    for pod in pods:
        annotations = pod["metadata"].setdefault("annotations", {})
        annotations["sidecar.mesher.io/status"] = "injected"
        annotations["sidecar.mesher.io/template-revision"] = "default-rev"
    db = next(p for p in pods if p["metadata"]["name"] == "db-0")
    db["metadata"]["annotations"].update(
        {
            "sidecar.mesher.io/template": "canary",
            "sidecar.mesher.io/template-revision": "canary-rev",
        }
    )
    agent = next(p for p in pods if p["metadata"]["name"].startswith("agent-"))
    agent["metadata"]["annotations"]["sidecar.mesher.io/template"] = "gone"
    found = {
        w.name: w
        for w in workloads(
            Snapshot(
                pods=pods,
                replicasets=recorded_items("replicasets"),
                jobs=recorded_items("jobs"),
                namespaces=recorded_items("namespaces"),
            ),
            revision="default-rev",
            named_revisions={"canary": "canary-rev"},
            sidecar_names=frozenset({"mesher"}),
        )
    }
    assert found["db"].state == "current"  # canary pod on the canary's revision
    assert found["native"].state == "current"
    assert found["agent"].state == "stale"
    assert found["agent"].why == "pods ask for template gone, which the ConfigMap does not have"


async def test_the_configmap_source_serves_every_key_through_kubernetes_asyncio() -> None:
    api = KubeApi.from_recorded_list()
    assert api.obj is not None
    api.obj["data"] = data(canary=CANARY)
    async with watching(api) as w:
        await wait_until(lambda: "canary" in w.store.named)
        assert w.store.named["canary"].version == "1.7.0"
        assert {r.template for r in w.reloads} == {"template", "canary"}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(DEFAULT_TEMPLATE, templates / "template.yaml")
    (templates / "canary.yaml").write_text(CANARY)
    (templates / "notes.txt").write_text("not a template")
    return templates


async def post(session: aiohttp.ClientSession, url: str, review: dict[str, Any]) -> dict[str, Any]:
    async with session.post(url, json=review) as resp:
        assert resp.status == 200
        result: dict[str, Any] = await resp.json()
        return result


async def test_a_template_folder_over_https_with_template_and_metrics(
    tmp_path: Path, folder: Path
) -> None:
    server, _ = await start_server(tmp_path, template_file=folder)
    try:
        ctx = ssl.create_default_context(cafile=str(server.ca_file))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            review = admission_fixture("server-mesher")
            review["request"]["object"]["metadata"]["annotations"]["sidecar.mesher.io/template"] = (
                "canary"
            )
            answer = await post(session, f"https://localhost:{server.port}/mutate", review)
            patched = apply(review["request"]["object"], decode_patch(answer["response"]))
            canary = load_template(CANARY)
            assert (
                patched["metadata"]["annotations"]["sidecar.mesher.io/template-revision"]
                == canary.revision
            )
            admin = f"http://127.0.0.1:{server.admin_port}"
            async with session.get(admin + "/template") as resp:
                status = await resp.json()
            assert status["revision"] == load_template(GOOD).revision  # the default, on top
            assert set(status["templates"]) == {"template", "canary"}
            assert status["templates"]["canary"]["revision"] == canary.revision
            assert status["templates"]["canary"]["version"] == "1.7.0"
            async with session.get(admin + "/metrics") as resp:
                metrics = await resp.text()
            assert (
                f'mesher_injector_template_info{{revision="{canary.revision}",source="file:{folder}",template="canary",version="1.7.0"}} 1.0'
                in metrics
            )
            (folder / "canary.yaml").write_text(BROKEN)  # a broken canary: the default is untouched
            await wait_until(
                lambda: server.injector.store.stores()["canary"].last_error is not None
            )
            assert server.injector.store.named["canary"].revision == canary.revision
            async with session.get(admin + "/metrics") as resp:
                metrics = await resp.text()
            assert 'mesher_injector_template_reload_failing{template="canary"} 1.0' in metrics
            assert 'mesher_injector_template_reload_failing{template="template"} 0.0' in metrics
    finally:
        await server.stop()


def test_inject_f_with_a_template_folder_uses_the_named_template(folder: Path) -> None:
    import subprocess
    import sys

    from tests.support.helpers import ROOT

    manifest = folder.parent / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n"
        "    sidecar.mesher.io/inject: 'yes'\n    sidecar.mesher.io/template: canary\n"
        "spec:\n  containers: [{name: app, image: x}]\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "injector",
            "inject",
            "-f",
            str(manifest),
            "--template-file",
            str(folder),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    pod = yaml.safe_load(result.stdout)
    assert (
        pod["metadata"]["annotations"]["sidecar.mesher.io/template-revision"]
        == load_template(CANARY).revision
    )


def test_inject_and_the_file_source_take_and_refuse_the_same_template_names(folder: Path) -> None:
    (folder / "Canary_V2.yaml").write_text(CANARY)  # no DNS label
    (folder / ".draft.yaml").write_text(BROKEN)  # hidden: no template at all
    source, store = FileSource(folder), TemplateSet()
    assert source.poll(store) == []  # new content is offered on the second poll
    served = source.poll(store)
    assert {r.template for r in served if r.result == "rejected"} == {"Canary_V2"}
    assert set(store.named) == {"canary"}

    result = cli("inject", "-f", str(MANIFESTS / "deployment.yaml"), "--template-file", str(folder))

    assert result.returncode == 0, result.stderr  # issue 22: it denies only its own pods
    assert result.stderr.splitlines()[0] == (
        f"warning: {folder / 'Canary_V2.yaml'}: 'Canary_V2.yaml': a template name must be a "
        "DNS label; pods that ask for it are denied"
    )


def test_a_missing_default_source_counts_as_failing_and_a_removed_canary_leaves_no_series() -> None:
    from injector.obs.metrics import Metrics

    metrics = Metrics()
    store = TemplateSet()
    for reload in store.source_gone(source="file:x", why="cannot read template"):
        metrics.observe_reload(reload, store.stores()[reload.template].active)
    value = metrics.registry.get_sample_value
    assert value("mesher_injector_template_reload_failing", {"template": "template"}) == 1
    for text in (data(canary=CANARY), data()):
        for reload in store.offer_data(text, source="s", default_key="template.yaml"):
            current = store.stores().get(reload.template)
            metrics.observe_reload(reload, current.active if current else None)
    assert value("mesher_injector_template_reload_failing", {"template": "template"}) == 0
    assert value("mesher_injector_template_reload_failing", {"template": "canary"}) is None
    exposition = generate_latest(metrics.registry).decode()
    assert 'template="canary"' not in exposition
