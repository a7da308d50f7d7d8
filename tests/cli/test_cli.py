"""The command line as a user runs it: a real process, real files, exit codes."""

from __future__ import annotations

import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from tests.support.cli import cli
from tests.support.helpers import ADMISSION, DEFAULT_TEMPLATE, MANIFESTS, ROOT


def test_inject_prints_the_deployment_with_the_sidecar() -> None:
    result = cli("inject", "-f", str(MANIFESTS / "deployment.yaml"))
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    assert [c["name"] for c in doc["spec"]["template"]["spec"]["containers"]] == [
        "server",
        "mesher",
    ]
    assert "injected (requested)" in result.stderr


def test_inject_reads_stdin_and_is_idempotent() -> None:
    once = cli("inject", "-f", "-", stdin=(MANIFESTS / "deployment.yaml").read_text())
    twice = cli("inject", "-f", "-", stdin=once.stdout)
    assert twice.returncode == 0
    assert twice.stdout == once.stdout
    assert "already-injected" in twice.stderr


def test_inject_denied_document_exits_non_zero_with_the_reason() -> None:
    result = cli("inject", "-f", str(MANIFESTS / "denied.yaml"))
    assert result.returncode == 1
    assert "invalid-service-ports" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_inject_missing_file_and_bad_template_are_clear_errors(tmp_path: Path) -> None:
    missing = cli("inject", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = tmp_path / "t.yaml"
    bad.write_text("containers: [")
    result = cli("inject", "-f", str(MANIFESTS / "deployment.yaml"), "--template-file", str(bad))
    assert result.returncode == 1
    assert "not valid YAML" in result.stderr


def test_inject_from_a_template_folder_without_template_yaml_says_it_cannot_read_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "canary.yaml").write_text(DEFAULT_TEMPLATE.read_text())
    result = cli(
        "inject", "-f", str(MANIFESTS / "deployment.yaml"), "--template-file", str(tmp_path)
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"mesher-injector inject: error: cannot read template {tmp_path / 'template.yaml'}: "
    )


def test_check_template_shows_each_discovery_type() -> None:
    result = cli("check-template", str(DEFAULT_TEMPLATE))
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [d["discoveryType"] for d in rendered] == ["sc", "pilot"]
    assert "valid" in result.stdout


def test_check_template_rejects_an_invalid_template(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("containers:\n- name: m\n  image: '{{ oops }}'\n")
    result = cli("check-template", str(bad))
    assert result.returncode == 1
    assert "unknown variable {{ oops }}" in result.stderr


def test_check_template_refuses_integer_and_mixed_keys_without_a_traceback(
    tmp_path: Path,
) -> None:
    for limits in ("{1: 256Mi}", "{memory: 256Mi, 1: 2}"):
        bad = tmp_path / "t.yaml"
        text = DEFAULT_TEMPLATE.read_text().replace(
            "      limits:\n        memory: 256Mi", f"      limits: {limits}"
        )
        assert text != DEFAULT_TEMPLATE.read_text()
        bad.write_text(text)
        result = cli("check-template", str(bad))
        assert result.returncode == 1
        assert "key 1 at containers[0].resources.limits must be a string" in result.stderr
        assert "Traceback" not in result.stderr


def test_serve_without_tls_material_says_what_to_pass() -> None:
    result = cli("serve")
    assert result.returncode == 1
    assert "--self-signed" in result.stderr


def test_serve_answers_over_https_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "MESHER_INJECTOR_ADMIN_PORT": "0", "MESHER_INJECTOR_PORT": "0"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "injector",
            "serve",
            "--self-signed",
            "--host",
            "127.0.0.1",
            "--self-signed-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout = proc.stdout
        assert stdout is not None
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            for line in iter(stdout.readline, ""):
                lines.put(line)

        reader = threading.Thread(target=pump)
        reader.start()
        serving = None
        seen = []
        deadline = time.monotonic() + 30
        while serving is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)  # never block past the deadline
            except queue.Empty:
                continue
            seen.append(line)
            if line.startswith("{") and json.loads(line)["event"] == "serving":
                serving = json.loads(line)
        assert serving is not None, seen
        assert serving["ready"] is True
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        body = (ADMISSION / "server-mesher.json").read_bytes()
        request = urllib.request.Request(
            f"https://localhost:{serving['port']}/mutate",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as resp:
            answer = json.loads(resp.read())
        assert answer["response"]["patchType"] == "JSONPatch"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=10)
        assert proc.returncode == 0
        while not lines.empty():
            seen.append(lines.get())
        events = [json.loads(line)["event"] for line in seen if line.startswith("{")]
        assert "admission" in events
        assert events[-2:] == ["shutting_down", "stopped"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serving_and_injecting_never_import_the_kubernetes_client() -> None:
    """kubernetes_asyncio is a third of the start-up time: only the ConfigMap watch and
    the cluster commands (status, restart) import it."""
    code = (
        "import sys\n"
        "from injector.cli import main\n"
        "from injector.web import server\n"
        "main.build_parser()\n"
        "assert 'kubernetes_asyncio' not in sys.modules, 'imported at start-up'\n"
        "from injector.kube import configmap\n"
        "assert 'kubernetes_asyncio' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
