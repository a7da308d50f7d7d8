"""deploy/monitoring/: the alert rules pass promtool's checks and unit tests, and every
PromQL expression of the rules and of the dashboard runs without error against a real
Prometheus server that scrapes a real injector (the decision panels returning data).

promtool and prometheus come from Debian's `prometheus` package, which .ci/run installs;
where they are absent these tests skip, saying so."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.helpers import ROOT, admission_fixture
from tests.support.servers import start_server

MONITORING = ROOT / "deploy" / "monitoring"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus; .ci/run does)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus; .ci/run does)"
)


def rule_groups() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())["spec"]
    return spec


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups()["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's spec as a plain rule file, beside the promtool unit tests."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    shutil.copy(MONITORING / "alerts-test.yaml", tmp_path / "alerts-test.yaml")
    return tmp_path


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_promtool_checks_the_rules(rules_dir: Path) -> None:
    result = promtool("check", "rules", "rules.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@needs_promtool
def test_every_alert_has_a_promtool_unit_test_and_they_pass(rules_dir: Path) -> None:
    tests = yaml.safe_load((MONITORING / "alerts-test.yaml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in rules()}
    for test in tests:  # each alert is seen firing somewhere
        assert (
            any(case["exp_alerts"] for case in test["alert_rule_test"]) or "never" in test["name"]
        )
    result = promtool("test", "rules", "alerts-test.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alerts_cover_what_an_admin_must_know() -> None:
    alerts = {rule["alert"]: rule for rule in rules()}
    assert set(alerts) == {
        "MesherInjectorCertificateExpiresSoon",
        "MesherInjectorTemplateReloadFailing",
        "MesherInjectorWatchRestarting",
        "MesherInjectorDenyingPods",
        "MesherInjectorSlowAdmissions",
        "MesherInjectorTooFewReplicas",
        "MesherInjectorSidecarsStale",
        "MesherInjectorSidecarsMissing",
        "MesherInjectorNoRolloutLeader",
    }
    assert "14 * 24 * 3600" in alerts["MesherInjectorCertificateExpiresSoon"]["expr"]
    assert "no-template|internal-error" in alerts["MesherInjectorDenyingPods"]["expr"]
    assert "< 2" in alerts["MesherInjectorTooFewReplicas"]["expr"]
    assert "> 1" in alerts["MesherInjectorSlowAdmissions"]["expr"]
    # a day by default; the chart's monitoring.alerts.staleSidecarsAfter replaces the number
    assert alerts["MesherInjectorSidecarsStale"]["expr"].endswith("> 86400")
    assert 'state="missing"' in alerts["MesherInjectorSidecarsMissing"]["expr"]
    # max: only whether any replica leads counts; no series at all counts as none leading
    assert (
        "max(mesher_injector_rollout_leader) or vector(0)"
        in (alerts["MesherInjectorNoRolloutLeader"]["expr"])
    )


def test_the_rollout_alerts_are_a_group_of_their_own_to_leave_out_with_the_watch() -> None:
    groups = {g["name"]: {r["alert"] for r in g["rules"]} for g in rule_groups()["groups"]}
    assert list(groups) == ["mesher-injector", "mesher-injector-rollout"]
    assert groups["mesher-injector-rollout"] == {
        "MesherInjectorSidecarsStale",
        "MesherInjectorSidecarsMissing",
        "MesherInjectorNoRolloutLeader",
    }


def test_the_monitoring_kustomization_scrapes_the_metrics_service() -> None:
    monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    services = list(yaml.safe_load_all((ROOT / "deploy" / "base" / "service.yaml").read_text()))
    (metrics,) = [s for s in services if s["metadata"]["name"] == "mesher-injector-metrics"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in metrics["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # mesher_injector_pods's namespace label is the pods', not the scraped target's
    assert endpoint["honorLabels"] is True


# --- a real Prometheus scraping a real injector ------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        answer: dict[str, Any] = json.load(resp)
        return answer


def query(base: str, expr: str) -> dict[str, Any]:
    return get_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def start_prometheus(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    assert PROMETHEUS is not None
    with (tmp_path / "prometheus.log").open("wb") as log:
        return subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@needs_prometheus
async def test_every_expression_runs_against_a_live_prometheus_scraping_the_injector(
    tmp_path: Path,
) -> None:
    server, _ = await start_server(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(tmp_path / "rules.yaml")],
                "scrape_configs": [
                    {
                        "job_name": "mesher-injector",
                        "static_configs": [{"targets": [f"127.0.0.1:{server.admin_port}"]}],
                    }
                ],
            }
        )
    )
    proc = start_prometheus(tmp_path, port)
    try:
        ctx = ssl.create_default_context(cafile=str(server.ca_file))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:

            async def admit_some() -> None:
                for name in ("server-mesher", "bad-ports", "plain-no-annotations"):
                    url = f"https://localhost:{server.port}/mutate"
                    async with session.post(url, json=admission_fixture(name)) as resp:
                        assert resp.status == 200

            await admit_some()
            await wait_for_samples(base, "mesher_injector_decisions_total", samples=3)
            await admit_some()
            await wait_for_samples(base, "mesher_injector_decisions_total", samples=6)

        for expr in [rule["expr"] for rule in rules()] + dashboard_exprs():
            answer = await asyncio.to_thread(query, base, expr)
            assert answer["status"] == "success", (expr, answer)
        for expr in dashboard_exprs():
            if "mesher_injector_decisions_total" in expr or "duration_seconds" in expr:
                answer = await asyncio.to_thread(query, base, expr)
                assert answer["data"]["result"], f"no data for {expr}"
        ready = await asyncio.to_thread(query, base, "sum(mesher_injector_ready)")
        assert ready["data"]["result"][0]["value"][1] == "1"
        groups = (await asyncio.to_thread(get_json, f"{base}/api/v1/rules"))["data"]["groups"]
        evaluated = [rule for group in groups for rule in group["rules"]]
        assert len(evaluated) == len(rules())
        for rule in evaluated:
            assert rule["health"] in ("ok", "unknown"), rule
        assert any(rule["health"] == "ok" for rule in evaluated)
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
        await server.stop()


async def wait_for_samples(base: str, metric: str, *, samples: int, limit: float = 30) -> None:
    """Until Prometheus holds `samples` scrapes of `metric` (a bound, not a timing)."""
    deadline = time.monotonic() + limit
    expr = f"count_over_time({metric}{{reason='requested'}}[1m])"
    while True:
        try:
            answer = await asyncio.to_thread(query, base, expr)
            result = answer["data"]["result"]
            if result and int(result[0]["value"][1]) >= samples:
                return
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"Prometheus did not scrape {metric} in time"
        await asyncio.sleep(0.2)
