"""The ConfigMap source through kubernetes_asyncio itself, against a local server that
speaks the list/watch protocol with the responses a real API server recorded."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from injector.core.settings import ConfigMapRef
from injector.core.store import TemplateSet
from injector.core.watching import Backoff, Restart
from injector.kube.configmap import ConfigMapSource
from injector.kube.listwatch import classify
from tests.support.helpers import admission_fixture, wait_until
from tests.support.kube_api import NAME, NAMESPACE, KubeApi, event_version, recorded_events
from tests.support.servers import start_server
from tests.support.watch import REF, serve_api, watching

EVENTS = recorded_events()


async def test_initial_list_is_applied_with_its_resource_version() -> None:
    async with watching(KubeApi.from_recorded_list()) as w:
        await wait_until(lambda: w.version() == "1.6.3")
        assert w.results() == ["applied"]
        assert w.store.active is not None
        assert w.store.active.source == "configmap:mesher-system/mesher-sidecar-template@238"
        await wait_until(lambda: len(w.api.watches()) == 1)
        (first,) = w.api.watches()
        assert first.resource_version == "238"
        assert first.field_selector == "metadata.name=mesher-sidecar-template"
        assert first.bookmarks.lower() == "true"
        assert first.timeout_seconds


async def test_recorded_events_modify_reject_delete_and_re_add() -> None:
    async with watching(KubeApi.from_recorded_list()) as w:
        await wait_until(lambda: len(w.api.watches()) == 1)
        first = w.store.template

        await w.api.push(EVENTS[0])  # MODIFIED: 1.6.4
        await wait_until(lambda: w.version() == "1.6.4")
        assert w.results()[-1] == "applied"
        v164 = w.store.template
        assert v164 is not None
        assert v164.revision != first.revision  # type: ignore[union-attr]

        await w.api.push(EVENTS[1])  # MODIFIED: invalid YAML
        await wait_until(lambda: w.results()[-1] == "rejected")
        assert w.store.template is v164
        assert w.store.last_error is not None
        assert "not valid YAML" in w.store.last_error.error
        assert w.store.last_error.source.endswith("@241")

        await w.api.push(EVENTS[2])  # DELETED
        await wait_until(lambda: w.results()[-1] == "deleted")
        assert w.store.template is v164
        assert "deleted" in w.store.last_error.error

        await w.api.push(EVENTS[3])  # ADDED, new uid, 1.6.3 again
        await wait_until(lambda: w.version() == "1.6.3")
        assert w.results()[-1] == "applied"
        assert w.store.active.source.endswith("@243")  # type: ignore[union-attr]
        assert w.store.last_error is None
        assert w.restarts == []


async def test_bookmark_moves_the_version_the_next_watch_starts_from() -> None:
    async with watching(KubeApi.from_recorded_list()) as w:
        await wait_until(lambda: len(w.api.watches()) == 1)
        for line in EVENTS:
            await w.api.push(line)
        await wait_until(lambda: w.source.resource_version == "244")
        await w.api.end_watches()
        await wait_until(lambda: len(w.api.watches()) == 2)
        assert w.api.watches()[1].resource_version == str(event_version(EVENTS[-1])) == "244"
        assert [r.reason for r in w.restarts] == ["stream-ended"]
        assert len(w.api.lists()) == 1  # resumed, not listed again


async def test_server_ending_the_stream_resumes_from_the_last_version() -> None:
    async with watching(KubeApi.from_recorded_list()) as w:
        await wait_until(lambda: len(w.api.watches()) == 1)
        await w.api.push(EVENTS[0])
        await wait_until(lambda: w.version() == "1.6.4")
        await w.api.end_watches()
        await wait_until(lambda: len(w.api.watches()) == 2)
        assert w.api.watches()[1].resource_version == "239"
        assert w.results() == ["applied", "applied"]  # nothing replayed


async def test_expired_resource_version_lists_again() -> None:
    api = KubeApi.from_recorded_list()
    async with watching(api) as w:
        await wait_until(lambda: len(w.api.watches()) == 1)
        await api.push(EVENTS[0])
        await wait_until(lambda: w.version() == "1.6.4")
        api.compacted_below = 10_000  # etcd compacted: 239 is too old now
        await api.end_watches()
        await wait_until(lambda: len(api.lists()) == 2)
        await wait_until(lambda: len(w.results()) == 3)  # the second list's answer, offered
        assert "expired" in [r.reason for r in w.restarts]
        assert next(r for r in w.restarts if r.reason == "expired").relist
        assert w.version() == "1.6.4"
        assert w.results()[-1] == "unchanged"


async def test_forbidden_is_retried_with_backoff_and_never_ready() -> None:
    api = KubeApi.from_recorded_list()
    api.forbidden = True
    async with watching(api) as w:
        await wait_until(lambda: len(api.lists()) >= 3)
        assert w.store.template is None
        assert {r.reason for r in w.restarts} == {"forbidden"}
        assert all(r.relist and r.failed for r in w.restarts)
        assert "forbidden" in w.restarts[0].detail
        api.forbidden = False  # RBAC fixed: the next retry loads it
        await wait_until(lambda: w.version() == "1.6.3")


async def test_missing_configmap_leaves_no_template_and_reports_it() -> None:
    api = KubeApi()
    async with watching(api) as w:
        await wait_until(lambda: len(w.reloads) == 1)
        assert w.results() == ["deleted"]
        assert w.store.template is None
        assert "not found" in w.store.last_error.error  # type: ignore[union-attr]


async def test_silent_server_trips_the_read_timeout_and_reconnects() -> None:
    api = KubeApi.from_recorded_list()
    api.silent = True
    async with watching(api, read_timeout=0.2) as w:
        await wait_until(lambda: len(api.watches()) >= 2)
        assert w.restarts[0].reason == "read-timeout"
        assert not w.restarts[0].relist
        assert api.watches()[1].resource_version == "238"


async def test_unreachable_api_server_is_retried_with_backoff(unused_tcp_port: int) -> None:
    api_client = client.ApiClient(
        configuration=client.Configuration(host=f"http://127.0.0.1:{unused_tcp_port}")
    )
    restarts: list[Restart] = []
    source = ConfigMapSource(
        api=api_client,
        ref=REF,
        store=TemplateSet(),
        report=lambda r: None,
        on_restart=lambda r, _d: restarts.append(r),
        backoff=Backoff(base=0.01, cap=0.02),
    )
    task = asyncio.create_task(source.run())
    try:
        await wait_until(lambda: len(restarts) >= 3)
        assert {r.reason for r in restarts} == {"disconnected"}
        assert all(r.relist for r in restarts)  # nothing listed yet: each retry lists
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api_client.close()


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    backoff = Backoff(base=0.25, cap=30.0)
    assert backoff.delay(0, 0.9) == 0.0
    assert backoff.delay(1, 0.0) == pytest.approx(0.125)
    assert backoff.delay(1, 0.999) == pytest.approx(0.25, rel=1e-2)
    assert backoff.delay(4, 0.0) == pytest.approx(1.0)
    assert backoff.delay(50, 0.999) <= 30.0
    assert backoff.delay(50, 0.0) == pytest.approx(15.0)


@pytest.mark.parametrize(
    ("exc", "reason", "relist", "failed"),
    [
        (client.ApiException(status=410, reason="Expired"), "expired", True, False),
        (client.ApiException(status=403, reason="Forbidden"), "forbidden", True, True),
        (client.ApiException(status=500, reason="boom"), "api-error", True, True),
        (TimeoutError(), "read-timeout", False, True),
        (
            aiohttp.ClientPayloadError("Response payload is not completed"),
            "disconnected",
            False,
            True,
        ),
        (ValueError("garbage"), "protocol-error", True, True),
    ],
)
def test_restart_policy(exc: BaseException, reason: str, relist: bool, failed: bool) -> None:
    restart = classify(exc)
    assert (restart.reason, restart.relist, restart.failed) == (reason, relist, failed)


def test_configmap_ref_defaults() -> None:
    assert ConfigMapRef.parse("ns/name", default_namespace="own") == ConfigMapRef("ns", "name")
    assert ConfigMapRef.parse("", default_namespace="own") == ConfigMapRef(
        "own", "mesher-sidecar-template"
    )
    assert ConfigMapRef.parse("other", default_namespace="own") == ConfigMapRef("own", "other")
    with pytest.raises(ValueError, match="POD_NAMESPACE"):
        ConfigMapRef.parse("", default_namespace="")


# --- the whole server on the configmap source -----------------------------------------


async def post_review(session: aiohttp.ClientSession, url: str, name: str) -> dict[str, Any]:
    async with session.post(url + "/mutate", json=admission_fixture(name)) as resp:
        assert resp.status == 200
        answer: dict[str, Any] = await resp.json()
        return answer


@contextlib.asynccontextmanager
async def injector_on(
    api: KubeApi, tmp_path: Path
) -> AsyncIterator[tuple[Any, aiohttp.ClientSession]]:
    server = await serve_api(api)
    injector, _ = await start_server(
        tmp_path,
        template_source="configmap",
        configmap=f"{NAMESPACE}/{NAME}",
        kube_api_server=str(server.make_url("")).rstrip("/"),
    )
    import ssl

    ctx = ssl.create_default_context(cafile=str(injector.ca_file))
    async with aiohttp.ClientSession(
        base_url=f"https://localhost:{injector.port}", connector=aiohttp.TCPConnector(ssl=ctx)
    ) as session:
        try:
            yield injector, session
        finally:
            await injector.stop()
            await server.close()


async def test_server_without_a_loadable_template_is_not_ready_and_denies(tmp_path: Path) -> None:
    api = KubeApi.from_recorded_list()
    api.forbidden = True
    async with injector_on(api, tmp_path) as (injector, session):
        await wait_until(lambda: len(api.lists()) >= 2)
        async with session.get(f"http://127.0.0.1:{injector.admin_port}/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["reason"] == "no template loaded"
        async with session.post("/mutate", json=admission_fixture("server-mesher")) as resp:
            answer = await resp.json()
        assert answer["response"]["allowed"] is False
        assert "no sidecar template loaded" in answer["response"]["status"]["message"]
        text = injector.injector.metrics.registry.get_sample_value(
            "mesher_injector_watch_restarts_total", {"reason": "forbidden"}
        )
        assert text is not None
        assert text >= 1


async def test_server_serves_the_configmap_template_and_swaps_on_modified(tmp_path: Path) -> None:
    api = KubeApi.from_recorded_list()
    async with injector_on(api, tmp_path) as (injector, session):
        await wait_until(lambda: injector.injector.ready and len(api.watches()) == 1)
        answer = await post_review(session, "", "server-mesher-7d9f8b6c5")
        ops = json.loads(__import__("base64").b64decode(answer["response"]["patch"]))
        assert [op["value"]["image"] for op in ops if op["path"] == "/spec/containers/-"] == [
            "servicecomb/mesher-sidecar:1.6.3"
        ]
        await api.push(EVENTS[0])
        await wait_until(lambda: injector.injector.store.template.version == "1.6.4")
        answer = await post_review(session, "", "server-mesher-7d9f8b6c5")
        ops = json.loads(__import__("base64").b64decode(answer["response"]["patch"]))
        assert [op["value"]["image"] for op in ops if op["path"] == "/spec/containers/-"] == [
            "servicecomb/mesher-sidecar:1.6.4"
        ]
        async with session.get(f"http://127.0.0.1:{injector.admin_port}/template") as resp:
            info = await resp.json()
        assert info["source"] == "configmap:mesher-system/mesher-sidecar-template@239"
        assert info["version"] == "1.6.4"
