"""What a new user trips over (issue 13): each fix, as the user meets it."""

from __future__ import annotations

import io
import json
import re
import socket
import stat
from pathlib import Path

import pytest
import structlog

from injector.core.store import TemplateStore
from injector.obs import logs
from tests.support.cli import cli
from tests.support.helpers import DEFAULT_TEMPLATE, MANIFESTS, ROOT, admission_fixture
from tests.support.servers import start_server


def test_the_readmes_log_grep_matches_a_real_admission_line() -> None:
    readme = (ROOT / "README.md").read_text()
    (pattern,) = re.findall(r"logs deploy/mesher-injector \| grep '([^']+)'", readme)
    stream = io.BytesIO()
    logs.configure(log_format="json", stream=stream)
    try:
        logs.get_logger("mesher_injector").info("admission", uid="u", decision="injected")
    finally:
        structlog.reset_defaults()
    assert pattern in stream.getvalue().decode()


def test_the_one_template_people_edit_ships_in_the_package_and_deploy_has_its_copy() -> None:
    from injector.core.settings import DEFAULT_TEMPLATE_FILE

    assert DEFAULT_TEMPLATE_FILE == DEFAULT_TEMPLATE == ROOT / "injector" / "default_template.yaml"
    assert not (ROOT / "config").exists()
    copy = (ROOT / "deploy" / "template" / "template.yaml").read_text()
    assert copy == DEFAULT_TEMPLATE.read_text(), (
        "deploy/template/ differs: run make deploy-template"
    )
    makefile = (ROOT / "Makefile").read_text()
    assert "--template-file injector/default_template.yaml" in makefile  # what make run serves
    assert "cp injector/default_template.yaml deploy/template/template.yaml" in makefile


def test_inject_works_from_any_directory(tmp_path: Path) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {sidecar.mesher.io/inject: 'yes'}\n"
        "spec:\n  containers: [{name: a, image: x}]\n"
    )
    result = cli("inject", "-f", str(pod), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "name: mesher" in result.stdout


def test_an_unwritable_output_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    pod = MANIFESTS / "deployment.yaml"
    result = cli("inject", "-f", str(pod), "-o", str(tmp_path / "missing" / "dir" / "out.yaml"))
    assert result.returncode == 1
    assert "mesher-injector inject: error: cannot write " in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unquoted_yes_says_to_quote_it() -> None:
    manifest = (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    sidecar.mesher.io/inject: yes\n"
        "spec:\n  containers: [{name: a, image: x}]\n"
    )
    result = cli("inject", "-f", "-", stdin=manifest)
    assert result.returncode == 1
    assert (
        'sidecar.mesher.io/inject is the YAML bool true, not text: quote it, e.g. sidecar.mesher.io/inject: "yes"'
        in result.stderr
    )


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_serve_refuses_a_port_outside_0_65535(port: str) -> None:
    result = cli("serve", "--self-signed", "--port", port)
    assert result.returncode == 2
    assert "usage: mesher-injector serve" in result.stderr
    assert "--port" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--keepalive-timeout", "0"),
        ("--read-timeout", "-1"),
        ("--watch-read-timeout", "nan"),
        ("--read-timeout", "soon"),
        ("--drain-seconds", "-5"),
        ("--shutdown-timeout", "inf"),
        ("--max-body-bytes", "0"),
    ],
)
def test_serve_refuses_a_timeout_or_size_that_cannot_work(flag: str, value: str) -> None:
    """0 s of keep-alive would close every connection after its first answer; a negative
    or infinite wait, or a 0-byte body limit, would never work either."""
    result = cli("serve", "--self-signed", flag, value)
    assert result.returncode == 2
    assert "usage: mesher-injector serve" in result.stderr
    assert flag in result.stderr
    assert "Traceback" not in result.stderr


def test_the_waits_may_be_zero() -> None:
    result = cli("serve", "--drain-seconds", "0", "--shutdown-timeout", "0")
    assert result.returncode == 1  # past the flags: no TLS material given
    assert "--self-signed" in result.stderr


def test_check_template_reads_stdin_refuses_duplicate_keys_and_says_where(tmp_path: Path) -> None:
    assert cli("check-template", "-", stdin=DEFAULT_TEMPLATE.read_text()).returncode == 0
    duplicated = "containers:\n- name: m\n  image: x\n  image: y\n"
    result = cli("check-template", "-", stdin=duplicated)
    assert result.returncode == 1
    assert "key 'image' is given twice" in result.stderr
    assert "<unicode string>" not in result.stderr
    unknown = tmp_path / "t.yaml"
    unknown.write_text(
        "containers:\n- name: m\n  image: x\n  env:\n  - name: A\n    value: '{{ nope }}'\n"
    )
    result = cli("check-template", str(unknown))
    assert (
        f"{unknown}: invalid template: unknown variable {{{{ nope }}}} at containers[0].env[0].value"
        in result.stderr
    )


def test_certs_protects_the_key_refuses_to_overwrite_and_validates_names(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert cli("certs", "-o", str(out)).returncode == 0
    for name in ("tls.key", "secret.yaml"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    again = cli("certs", "-o", str(out))
    assert again.returncode == 1
    assert "pass --force to overwrite them" in again.stderr
    assert cli("certs", "-o", str(out), "--force").returncode == 0
    for args, needle in (
        (["--dns", "not a name!"], "--dns 'not a name!' is not a DNS name"),
        (["--namespace", "Bad_NS"], "--namespace 'Bad_NS' is not a DNS label"),
    ):
        result = cli("certs", "-o", str(tmp_path / "other"), *args)
        assert result.returncode == 1
        assert needle in result.stderr
        assert not (tmp_path / "other").exists()


def test_help_shows_defaults_and_a_bad_flag_gets_the_subcommands_usage() -> None:
    text = cli("serve", "--help").stdout
    assert "(default: 8443)" in text
    assert "(default: 10.0)" in text  # --read-timeout
    assert "pod templates" in cli("inject", "--help").stdout  # a description, not just flags
    result = cli("check-template", "injector/default_template.yaml", "--bogus")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: mesher-injector check-template")
    assert "unrecognized arguments: --bogus" in result.stderr


def test_a_failed_self_signed_start_leaves_no_folder_behind(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = cli(
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--admin-port",
            "0",
            "--self-signed",
            env={"TMPDIR": str(tmp_path)},
        )
    assert result.returncode != 0
    assert "address already in use" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # the key's folder went with the failed start


async def test_a_kept_self_signed_folder_keeps_its_ca_across_restarts(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    first, _ = await start_server(tmp_path, self_signed_dir=folder)
    ca = (folder / "ca.crt").read_bytes()
    await first.stop()
    second, _ = await start_server(tmp_path, self_signed_dir=folder)
    await second.stop()
    assert (folder / "ca.crt").read_bytes() == ca  # trusted once, trusted after a restart


async def test_the_self_signed_folder_is_removed_when_the_server_stops(tmp_path: Path) -> None:
    server, _ = await start_server(tmp_path, self_signed_dir=None)
    assert server.ca_file is not None
    folder = server.ca_file.parent
    assert (folder / "tls.key").exists()
    await server.stop()
    assert not folder.exists()


async def test_a_denial_is_logged_at_warning_and_serving_names_the_version(tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as captured:
        server, _ = await start_server(tmp_path)
        try:
            import ssl

            import aiohttp

            ctx = ssl.create_default_context(cafile=str(server.ca_file))
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
                for name in ("bad-ports", "server-mesher"):
                    url = f"https://localhost:{server.port}/mutate"
                    async with session.post(url, json=admission_fixture(name)) as resp:
                        assert resp.status == 200
        finally:
            await server.stop()
    (serving,) = [e for e in captured if e["event"] == "serving"]
    assert serving["version"] == "0.1.0"
    levels = {e["decision"]: e["log_level"] for e in captured if e["event"] == "admission"}
    assert levels == {"denied": "warning", "injected": "info"}


def test_reverting_a_bad_edit_clears_last_error() -> None:
    store = TemplateStore()
    good = DEFAULT_TEMPLATE.read_text()
    store.offer(good, source="s")
    assert store.offer("version: [broken\n", source="s").result == "rejected"
    assert store.last_error is not None
    assert store.offer(good, source="s").result == "unchanged"
    assert store.last_error is None


def test_running_help_for_every_command_exits_0() -> None:
    for command in ("serve", "inject", "check-template", "certs", "status", "restart", "diff"):
        result = cli(command, "--help")
        assert result.returncode == 0, command
        assert json.dumps(result.stdout)  # printable text


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        (["restart", "--timeout", "soon"], {}, "argument --timeout: 'soon' is not a duration"),
        (["restart", "--timeout", "0s"], {}, "argument --timeout: '0s': give a duration > 0"),
        (["restart", "--parallel", "0"], {}, "argument --parallel: 0: give a number >= 1"),
        (
            ["serve", "--self-signed"],
            {"MESHER_INJECTOR_LOG_LEVEL": "verbose"},
            "argument --log-level: 'verbose' is not one of debug, info, warning, error "
            "(from MESHER_INJECTOR_LOG_LEVEL)",
        ),
        (
            ["serve", "--self-signed"],
            {"MESHER_INJECTOR_LOG_FORMAT": "text"},
            "'text' is not one of json, console (from MESHER_INJECTOR_LOG_FORMAT)",
        ),
        (
            ["serve"],
            {"MESHER_INJECTOR_SELF_SIGNED": "maybe"},
            "argument --self-signed: 'maybe' is not true or false",
        ),
        (
            ["serve", "--self-signed"],
            {"MESHER_INJECTOR_PORT": "http"},
            "argument --port: 'http' is not a port number (from MESHER_INJECTOR_PORT)",
        ),
        (["serve", "--self-signed", "--log-format", "text"], {}, "'text' is not one of json"),
    ],
)
def test_a_bad_flag_or_variable_is_one_usage_error_line_and_exit_2(
    args: list[str], env: dict[str, str], error: str
) -> None:
    result = cli(*args, env=env)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mesher-injector {args[0]}: error: "), result.stderr
    assert error in last
    assert "Traceback" not in result.stderr


def test_a_switch_reads_true_and_false_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from injector.cli.main import build_parser

    assert build_parser().parse_args(["serve"]).self_signed is False
    assert build_parser().parse_args(["serve", "--self-signed"]).self_signed is True
    for text, value in (("1", True), ("Yes", True), ("off", False), ("0", False)):
        monkeypatch.setenv("MESHER_INJECTOR_SELF_SIGNED", text)
        assert build_parser().parse_args(["serve"]).self_signed is value, text


@pytest.mark.parametrize("command", ["status", "restart"])
def test_no_kubeconfig_says_the_file_is_missing_and_how_to_point_at_a_cluster(
    command: str, tmp_path: Path
) -> None:
    missing = tmp_path / "kubeconfig"
    result = cli(command, env={"KUBECONFIG": str(missing), "KUBERNETES_SERVICE_HOST": ""})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"mesher-injector {command}: error: no kubeconfig: KUBECONFIG={missing} does not "
        "exist. Point at a cluster with KUBECONFIG=FILE, or --kube-api-server URL (e.g. "
        "http://127.0.0.1:8001 from kubectl proxy), or run inside the cluster"
    ]


def test_serve_refuses_to_start_on_a_template_file_that_was_never_readable(tmp_path: Path) -> None:
    result = cli(
        "serve",
        "--self-signed",
        "--port",
        "0",
        "--admin-port",
        "0",
        "--template-file",
        str(tmp_path / "nope.yaml"),
        env={"TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"mesher-injector serve: error: cannot serve: --template-file {tmp_path / 'nope.yaml'}: "
        f"cannot read template: [Errno 2] No such file or directory: '{tmp_path / 'nope.yaml'}'"
    )
    assert [p.name for p in tmp_path.iterdir()] == []  # nor left its key folder behind
