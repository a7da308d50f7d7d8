"""The webhook over real HTTPS, with the AdmissionReviews a real kube-apiserver sent."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.support.expectations import EXPECTED, check_answer
from tests.support.helpers import (
    ADMISSION,
    SHIPPED_IMAGE,
    SHIPPED_VERSION,
    admission_fixture,
    admission_fixture_names,
    bump,
    decode_patch,
    wait_until,
)
from tests.support.servers import Running, start_server

RECORDED = json.loads((ADMISSION / "_request-line-and-headers.json").read_text())
HEADERS = {k: v for k, v in RECORDED["headers"].items() if k not in ("Host", "Content-Length")}


async def post(
    running: Running, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with running.session.post(
        running.url + RECORDED["path"], data=body, headers=headers or HEADERS
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def admit(running: Running, review: dict[str, Any]) -> dict[str, Any]:
    status, answer = await post(running, json.dumps(review).encode())
    assert status == 200, answer
    result: dict[str, Any] = answer
    return result


def test_every_recorded_request_has_an_expectation() -> None:
    assert set(admission_fixture_names()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_recorded_request_gets_the_expected_answer(running: Running, name: str) -> None:
    review = admission_fixture(name)
    answer = await admit(running, review)
    template = running.server.injector.store.template
    assert template is not None
    check_answer(name, review, answer, decode_patch(answer["response"]), template.revision)


async def test_v1beta1_request_is_answered_as_v1beta1(running: Running) -> None:
    answer = await admit(running, admission_fixture("server-v1beta1"))
    assert answer["apiVersion"] == "admission.k8s.io/v1beta1"


async def test_one_log_line_and_one_count_per_decision(running: Running) -> None:
    metrics = running.server.injector.metrics
    before = metrics.decided("unknown-discovery-type")
    with structlog.testing.capture_logs() as logs:
        await admit(running, admission_fixture("bad-discovery"))
    lines = [entry for entry in logs if entry["event"] == "admission"]
    assert len(lines) == 1
    line = lines[0]
    assert line["decision"] == "denied"
    assert line["reason"] == "unknown-discovery-type"
    assert line["namespace"] == "chassis"
    assert line["pod"] == "bad-discovery"
    assert line["uid"] == admission_fixture("bad-discovery")["request"]["uid"]
    assert "object" not in line
    assert "spec" not in json.dumps(line)
    after = metrics.decided("unknown-discovery-type")
    assert after == before + 1


async def test_metrics_expose_decisions_latency_and_template(running: Running) -> None:
    await admit(running, admission_fixture("server-mesher"))
    async with running.session.get(running.admin + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert 'mesher_injector_decisions_total{decision="injected",reason="requested"} 1.0' in text
    assert 'mesher_injector_admission_duration_seconds_bucket{le="0.0001"}' in text
    revision = running.server.injector.store.template.revision  # type: ignore[union-attr]
    assert f'mesher_injector_template_info{{revision="{revision}"' in text
    assert "mesher_injector_tls_cert_expiry_timestamp_seconds" in text


async def test_admin_port_reports_health_readiness_and_template(running: Running) -> None:
    async with running.session.get(running.admin + "/healthz") as resp:
        assert resp.status == 200
        health = await resp.json()
    # the serving certificate in use, for a human checking a rotation
    assert running.server.ca_file is not None
    served = x509.load_pem_x509_certificate(
        (running.server.ca_file.parent / "tls.crt").read_bytes()
    )
    assert health["tls"] == {
        "not_before": served.not_valid_before_utc.isoformat(),
        "not_after": served.not_valid_after_utc.isoformat(),
        "sha256_fingerprint": served.fingerprint(hashes.SHA256()).hex(),
    }
    async with running.session.get(running.admin + "/readyz") as resp:
        assert resp.status == 200
    async with running.session.get(running.admin + "/template") as resp:
        info = await resp.json()
    assert info["revision"] == running.server.injector.store.template.revision  # type: ignore[union-attr]
    assert info["version"] == SHIPPED_VERSION
    assert info["source"] == f"file:{running.template_file}"
    assert info["loaded_at"]
    assert info["last_error"] is None


@pytest.mark.parametrize(
    ("body", "headers", "needle"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"kind": "Pod", "apiVersion": "v1"}', None, "kind must be AdmissionReview"),
        (
            b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v2", "request": {}}',
            None,
            "apiVersion must be one of",
        ),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}', None, "no request"),
        (
            b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}',
            None,
            "uid is missing",
        ),
        (b"{}", {"Content-Type": "text/plain"}, "Content-Type must be application/json"),
        (b"\xff\xfe", None, "not valid JSON"),
    ],
)
async def test_bad_requests_get_400_with_a_clear_message(
    running: Running, body: bytes, headers: dict[str, str] | None, needle: str
) -> None:
    status, answer = await post(running, body, headers)
    assert status == 400
    assert needle in answer["error"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON"],
)
async def test_json_in_any_spelling_of_its_content_type_is_admitted(
    running: Running, content_type: str
) -> None:
    raw = json.dumps(admission_fixture("server-mesher")).encode()
    status, answer = await post(running, raw, {"Content-Type": content_type})
    assert status == 200
    assert answer["response"]["patchType"] == "JSONPatch"


@pytest.mark.parametrize("encoding", ["identity", " Identity ", ""])
async def test_an_identity_content_encoding_is_no_encoding(running: Running, encoding: str) -> None:
    raw = json.dumps(admission_fixture("server-mesher")).encode()
    status, answer = await post(running, raw, {**HEADERS, "Content-Encoding": encoding})
    assert status == 200
    assert answer["response"]["allowed"] is True


async def test_oversized_body_gets_413_and_the_server_keeps_serving(running: Running) -> None:
    review = admission_fixture("server-mesher")
    review["request"]["object"]["metadata"]["annotations"]["padding"] = "x" * (9 * 1024 * 1024)
    with structlog.testing.capture_logs() as logs:
        async with running.session.post(
            running.url + "/mutate", data=json.dumps(review).encode(), headers=HEADERS
        ) as resp:
            assert resp.status == 413
    (line,) = [e for e in logs if e["event"] == "bad_request"]  # a 413 leaves a line too
    assert (line["status"], line["reason"], line["log_level"]) == (413, "too-large", "warning")
    answer = await admit(running, admission_fixture("server-mesher"))
    assert answer["response"]["allowed"] is True


async def test_large_pod_within_the_limit_is_injected(running: Running) -> None:
    review = admission_fixture("server-mesher")
    review["request"]["object"]["metadata"]["annotations"]["big"] = "x" * (2 * 1024 * 1024)
    answer = await admit(running, review)
    assert answer["response"]["patchType"] == "JSONPatch"


async def test_a_compressed_body_gets_415_and_is_never_inflated(running: Running) -> None:
    # 64 MiB of zeros in 64 KiB: inflated, it would be 8 times the body limit.
    bomb = gzip.compress(b"0" * (64 * 1024 * 1024), compresslevel=1)
    for encoding in ("gzip", "deflate", "br"):
        headers = {**HEADERS, "Content-Encoding": encoding}
        status, answer = await post(running, bomb, headers)
        assert status == 415
        assert answer["error"] == (
            f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed"
        )
    answer = await admit(running, admission_fixture("server-mesher"))
    assert answer["response"]["allowed"] is True


async def test_template_file_edit_changes_the_next_answer(running: Running) -> None:
    store = running.server.injector.store
    old = store.template
    assert old is not None
    text = bump(running.template_file.read_text(), "9.9.9")
    running.template_file.write_text(text)
    await wait_until(lambda: store.template is not old)
    answer = await admit(running, admission_fixture("server-mesher"))
    ops = decode_patch(answer["response"])
    images = [op["value"]["image"] for op in ops if op["path"] == "/spec/containers/-"]
    assert images == [bump(SHIPPED_IMAGE, "9.9.9")]
    assert store.template.version == "9.9.9"  # type: ignore[union-attr]


async def test_broken_template_edit_is_refused_and_the_old_one_keeps_serving(
    running: Running,
) -> None:
    store = running.server.injector.store
    good = store.template
    assert good is not None
    running.template_file.write_text("containers: [broken\n")
    await wait_until(lambda: store.last_error is not None)
    assert store.template is good
    answer = await admit(running, admission_fixture("server-mesher"))
    check_answer(
        "server-mesher",
        admission_fixture("server-mesher"),
        answer,
        decode_patch(answer["response"]),
        good.revision,
    )
    async with running.session.get(running.admin + "/template") as resp:
        info = await resp.json()
    assert "not valid YAML" in info["last_error"]["error"]
    assert info["revision"] == good.revision
    rejected = running.server.injector.metrics.registry.get_sample_value(
        "mesher_injector_template_reloads_total", {"result": "rejected"}
    )
    assert rejected == 1


async def test_template_with_unknown_variable_is_refused(running: Running) -> None:
    store = running.server.injector.store
    good = store.template
    running.template_file.write_text(
        running.template_file.read_text().replace("{{ service.name }}", "{{ service.nme }}")
    )
    await wait_until(lambda: store.last_error is not None)
    assert store.template is good
    assert "unknown variable {{ service.nme }}" in store.last_error.error  # type: ignore[union-attr]


async def test_stop_makes_readyz_fail_first(running: Running) -> None:
    running.server.injector.shutting_down = True
    async with running.session.get(running.admin + "/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["reason"] == "shutting down"


async def test_concurrent_admissions_each_see_exactly_one_revision(running: Running) -> None:
    store = running.server.injector.store
    base = running.template_file.read_text()
    texts = [base.replace(SHIPPED_IMAGE, f"servicecomb/mesher-sidecar:{tag}") for tag in ("a", "b")]
    image_of = {}
    for tag, text in zip(("a", "b"), texts, strict=True):
        store.offer(text, source="test")
        image_of[store.template.revision] = f"servicecomb/mesher-sidecar:{tag}"  # type: ignore[union-attr]
    stop = asyncio.Event()

    async def swap() -> None:
        n = 0
        while not stop.is_set():
            store.offer(texts[n % 2], source="test")
            n += 1
            await asyncio.sleep(0)

    swapper = asyncio.create_task(swap())
    body = json.dumps(admission_fixture("server-mesher")).encode()
    seen: set[str] = set()

    async def one() -> None:
        status, answer = await post(running, body)
        assert status == 200
        ops = decode_patch(answer["response"])
        revisions = {
            op["value"]
            for op in ops
            if op["path"] == "/metadata/annotations/sidecar.mesher.io~1template-revision"
        }
        images = {op["value"]["image"] for op in ops if op["path"] == "/spec/containers/-"}
        assert len(revisions) == 1
        (revision,) = revisions
        assert images == {image_of[revision]}
        seen.add(revision)

    try:
        for _ in range(10):
            await asyncio.gather(*(one() for _ in range(30)))
    finally:
        stop.set()
        await swapper
    assert seen == set(image_of)


async def test_shutdown_turns_not_ready_and_keeps_answering_while_it_drains(tmp_path: Path) -> None:
    """SIGTERM's path: /readyz fails at once, admissions are still answered for
    --drain-seconds (while the endpoint is removed), then the port closes."""
    server, _ = await start_server(tmp_path, drain_seconds=0.5)
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    body = json.dumps(admission_fixture("server-mesher")).encode()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        url = f"https://localhost:{server.port}/mutate"
        stopping = asyncio.create_task(server.stop())
        await wait_until(lambda: server.injector.shutting_down)
        async with session.get(f"http://127.0.0.1:{server.admin_port}/readyz") as resp:
            assert resp.status == 503
        async with session.post(url, data=body, headers=HEADERS) as resp:
            assert resp.status == 200
            assert (await resp.json())["response"]["allowed"] is True
        assert not stopping.done()
        await stopping
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.post(url, data=body, headers=HEADERS):
                pass


async def test_the_injectors_own_namespace_is_excluded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "chassis")  # as if the injector ran in chassis
    server, _ = await start_server(tmp_path)
    try:
        assert "chassis" in server.injector.excluded_namespaces
        ctx = ssl.create_default_context(cafile=str(server.ca_file))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            url = f"https://localhost:{server.port}/mutate"
            async with session.post(url, json=admission_fixture("server-mesher")) as resp:
                answer = await resp.json()
        assert "patch" not in answer["response"]
        counted = server.injector.metrics.registry.get_sample_value(
            "mesher_injector_decisions_total",
            {"decision": "skipped", "reason": "excluded-namespace"},
        )
        assert counted == 1
    finally:
        await server.stop()


async def test_a_pod_of_the_wrong_shape_gets_400_naming_the_field(running: Running) -> None:
    review = admission_fixture("server-mesher")
    review["request"]["object"]["spec"]["containers"] = {"server": {}}
    status, answer = await post(running, json.dumps(review).encode())
    assert status == 400
    assert answer["error"] == (
        "request.object is not a valid Pod: spec.containers must be a non-empty list of objects"
    )


async def test_replicas_of_one_pod_get_the_same_patch_each_under_its_own_uid(
    running: Running,
) -> None:
    review = admission_fixture("server-mesher")
    answers = []
    with structlog.testing.capture_logs() as logs:
        for n in range(4):
            review["request"]["uid"] = f"replica-{n}"
            compact = json.dumps(review, separators=(",", ":")).encode()
            status, answer = await post(running, compact)
            assert status == 200, answer
            answers.append(answer["response"])
    assert [a["uid"] for a in answers] == [f"replica-{n}" for n in range(4)]
    assert len({a["patch"] for a in answers}) == 1
    lines = [entry for entry in logs if entry["event"] == "admission"]
    assert [line["uid"] for line in lines] == [f"replica-{n}" for n in range(4)]
    assert {line["decision"] for line in lines} == {"injected"}
    assert {line["pod"] for line in lines} == {"server-mesher"}
