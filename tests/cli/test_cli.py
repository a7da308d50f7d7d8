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

from injector.core.template import load_template
from tests.support.cli import cli
from tests.support.helpers import ADMISSION, DEFAULT_TEMPLATE, MANIFESTS, ROOT, SHIPPED_IMAGE


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


def test_check_template_without_a_file_checks_the_embedded_default() -> None:
    result = cli("check-template", cwd=MANIFESTS)  # from any directory
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"# template {DEFAULT_TEMPLATE}: valid\n")
    assert result.stderr == ""  # the default pins its images


def test_check_template_warns_about_a_floating_image(tmp_path: Path) -> None:
    floating = tmp_path / "t.yaml"
    floating.write_text(
        DEFAULT_TEMPLATE.read_text().replace(f"image: {SHIPPED_IMAGE}", "image: mesher:latest")
    )
    result = cli("check-template", str(floating))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: {floating}: container mesher: image 'mesher:latest' is tagged latest; pin a "
        "version so a template revision names what runs"
    ]


def test_check_template_checks_every_template_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(DEFAULT_TEMPLATE.read_text())
    (tmp_path / "canary.yaml").write_text(DEFAULT_TEMPLATE.read_text().replace("1.6.3", "1.7.0"))
    (tmp_path / "broken.yaml").write_text("containers: []\n")
    result = cli("check-template", str(tmp_path))
    assert result.returncode == 1
    assert f"# template {tmp_path / 'template.yaml'}: valid" in result.stdout
    assert f"# template {tmp_path / 'canary.yaml'}: valid" in result.stdout
    assert result.stderr.splitlines() == [
        f"mesher-injector check-template: error: {tmp_path / 'broken.yaml'}: invalid template: "
        "containers must be a non-empty list"
    ]


def test_a_broken_named_template_denies_only_the_pods_that_ask_for_it(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(DEFAULT_TEMPLATE.read_text())
    (tmp_path / "canary.yaml").write_text("containers: []\n")
    folder = ["--template-file", str(tmp_path)]
    result = cli("inject", "-f", str(MANIFESTS / "deployment.yaml"), *folder)
    assert result.returncode == 0, result.stderr
    assert "name: mesher" in result.stdout
    assert result.stderr.splitlines()[0] == (
        f"warning: {tmp_path / 'canary.yaml'}: invalid template: containers must be a non-empty "
        "list; pods that ask for it are denied"
    )
    canary = (
        (MANIFESTS / "deployment.yaml")
        .read_text()
        .replace(
            'sidecar.mesher.io/inject: "yes"',
            'sidecar.mesher.io/inject: "yes"\n        sidecar.mesher.io/template: canary',
        )
    )
    asking = cli("inject", "-f", "-", *folder, stdin=canary)
    assert asking.returncode == 1
    assert "denied (unknown-template)" in asking.stderr


def test_inject_names_the_file_and_the_place_of_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "app.yaml"
    broken.write_text("kind: Pod\nmetadata: [\n")
    result = cli("inject", "-f", str(broken))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        f"mesher-injector inject: error: {broken}:3:1: not valid YAML"
    )
    shapeless = (
        (MANIFESTS / "deployment.yaml")
        .read_text()
        .replace("      containers:\n", "      containers: nope\n      x:\n")
    )
    result = cli("inject", "-f", "-", stdin=shapeless)
    assert result.stderr.splitlines()[-1] == (
        "mesher-injector inject: error: document 1 (Deployment/server-mesher): its pod template "
        "is not valid: spec.containers must be a non-empty list of objects"
    )


def test_inject_says_which_template_it_uses(tmp_path: Path) -> None:
    deployment = str(MANIFESTS / "deployment.yaml")
    revision = load_template(DEFAULT_TEMPLATE.read_text()).revision
    no_cluster = cli("inject", "-f", deployment)
    assert no_cluster.stderr.splitlines()[0] == (
        f"template: the embedded default, {DEFAULT_TEMPLATE} (no kubeconfig: "
        f"KUBECONFIG={ROOT / '.no-kubeconfig'} does not exist), revision {revision}"
    )
    named = cli("inject", "-f", deployment, "--template-file", str(DEFAULT_TEMPLATE))
    assert named.stderr.splitlines()[0] == f"template: file {DEFAULT_TEMPLATE}, revision {revision}"
    assert named.stdout == no_cluster.stdout
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    result = cli("inject", "-f", deployment, env={"KUBECONFIG": str(unreachable)})
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0].startswith(
        f"template: the embedded default, {DEFAULT_TEMPLATE} (cannot reach the API server: "
    )
    assert result.stdout == no_cluster.stdout
