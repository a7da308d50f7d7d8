"""Reload propagation: how long from a ConfigMap change at the API server to the new
template being active, and to the first admission that uses it.

Runs the real injector (configmap source, TLS) against the local list/watch protocol
server used by the tests, on loopback. Prints a Markdown table.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from injector.core.settings import Settings
from injector.kube.configmap import open_configmap_source
from injector.obs import logs
from injector.web.server import Server
from tests.support.helpers import ADMISSION
from tests.support.kube_api import NAME, NAMESPACE, KubeApi


def modified_event(version: int, tag: str) -> bytes:
    listing = json.loads(
        (Path(__file__).parent.parent / "tests/fixtures/kube-api/list.json").read_text()
    )
    obj = listing["items"][0]
    obj["metadata"]["resourceVersion"] = str(version)
    obj["data"]["template.yaml"] = (
        f'version: "{tag}"\ncontainers:\n- name: mesher\n  image: servicecomb/mesher-sidecar:{tag}\n'
    )
    return json.dumps({"type": "MODIFIED", "object": obj}).encode()


def image_in(answer: dict[str, Any]) -> str:
    ops = json.loads(base64.b64decode(answer["response"]["patch"]))
    return str(next(op["value"]["image"] for op in ops if op["path"] == "/spec/containers/-"))


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"{statistics.median(ms):.2f} | {p95:.2f} | {ms[-1]:.2f}"


async def run(rounds: int = 50) -> str:
    api = KubeApi.from_recorded_list()
    api_server = TestServer(api.app(), host="127.0.0.1")
    await api_server.start_server()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(
            Settings(
                host="127.0.0.1",
                port=0,
                admin_port=0,
                self_signed=True,
                self_signed_dir=Path(tmp),
                template_source="configmap",
                configmap=f"{NAMESPACE}/{NAME}",
                kube_api_server=str(api_server.make_url("")).rstrip("/"),
            ),
            open_watch=open_configmap_source,
        )
        await server.start()
        store = server.injector.store
        while store.template is None or not api.watches():
            await asyncio.sleep(0.005)
        ctx = ssl.create_default_context(cafile=str(server.ca_file))
        body = (ADMISSION / "server-mesher-7d9f8b6c5.json").read_bytes()
        to_active: list[float] = []
        to_admission: list[float] = []
        validate: list[float] = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            url = f"https://localhost:{server.port}/mutate"
            for n in range(rounds):
                tag = f"bench-{n}"
                line = modified_event(1000 + n, tag)
                before = store.template
                started = time.perf_counter()
                await api.push(line)
                while store.template is before:
                    await asyncio.sleep(0)
                to_active.append(time.perf_counter() - started)
                while True:
                    async with session.post(
                        url, data=body, headers={"Content-Type": "application/json"}
                    ) as resp:
                        answer = await resp.json()
                    if image_in(answer) == f"servicecomb/mesher-sidecar:{tag}":
                        break
                to_admission.append(time.perf_counter() - started)
                text = json.loads(line)["object"]["data"]["template.yaml"]
                t0 = time.perf_counter()
                store.offer(text + "# again\n", source="bench")  # same content: parse+validate cost
                validate.append(time.perf_counter() - t0)
        await server.stop()
    await api_server.close()
    return "\n".join(
        [
            f"Reload propagation, {rounds} ConfigMap edits (ms) | median | p95 | max",
            "---|---|---|---",
            f"API server writes the event -> new template active | {summary(to_active)}",
            f"API server writes the event -> first admission using it (HTTPS) | {summary(to_admission)}",
            f"parse + validate + render-check of one template (in-process) | {summary(validate)}",
        ]
    )


def main() -> None:
    logs.configure(log_format="console", level="warning")
    print(asyncio.run(run()))


if __name__ == "__main__":
    main()
