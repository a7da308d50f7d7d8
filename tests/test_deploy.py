"""deploy/: the manifests parse, agree with each other and with the code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from injector.cli import build_parser
from injector.manual import inject_documents
from injector.server import Injector, webhook_app
from injector.template import Template
from injector.tls import service_dns_names
from tests.helpers import DEFAULT_TEMPLATE, ROOT

DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """A command as the tests run them: output captured as text, bounded, never raising."""
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one(path: Path, kind: str) -> dict[str, Any]:
    found = [d for d in docs(path) if d["kind"] == kind]
    assert len(found) == 1, (path, kind)
    return found[0]


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return one(BASE / "deployment.yaml", "Deployment")


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = c
    return result


@pytest.fixture(scope="module")
def serve_args(container: dict[str, Any]) -> Any:
    assert container["args"][0] == "serve"
    return build_parser().parse_args(container["args"])


def test_every_kustomization_resource_exists() -> None:
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for resource in spec.get("resources", []):
            assert (kustomization.parent / resource).exists(), (kustomization, resource)
        for generator in spec.get("configMapGenerator", []):
            for file in generator["files"]:
                assert (kustomization.parent / file.split("=")[-1]).exists()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        (
            "deploy",
            {
                "Namespace",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "ConfigMap",
                "Service",
                "Deployment",
                "PodDisruptionBudget",
                "MutatingWebhookConfiguration",
            },
        ),
        ("deploy/cert-manager", {"Issuer", "Certificate", "MutatingWebhookConfiguration"}),
        ("deploy/examples", {"Namespace", "Deployment", "Service"}),
    ],
)
def test_kustomize_builds(folder: str, expected: set[str]) -> None:
    result = run(["kubectl", "kustomize", folder], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert expected <= {d["kind"] for d in built}
    configmaps = [d for d in built if d["kind"] == "ConfigMap"]
    for configmap in configmaps:  # generated without a name hash, holding config/'s template
        assert configmap["metadata"]["name"] == "mesher-sidecar-template"
        assert configmap["data"]["template.yaml"] == DEFAULT_TEMPLATE.read_text()


def test_the_template_configmap_equals_config() -> None:
    assert (BASE / "template.yaml").read_text() == DEFAULT_TEMPLATE.read_text()
    spec = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    (generator,) = spec["configMapGenerator"]
    assert generator["name"] == "mesher-sidecar-template"
    assert generator["files"] == ["template.yaml"]
    assert spec["generatorOptions"]["disableNameSuffixHash"] is True
    assert spec["namespace"] == "mesher-system"


def test_rbac_allows_only_reading_the_template_configmap(
    serve_args: Any, deployment: dict[str, Any]
) -> None:
    role = one(BASE / "rbac.yaml", "Role")
    (rule,) = role["rules"]
    assert rule["resources"] == ["configmaps"]
    assert sorted(rule["verbs"]) == ["get", "list", "watch"]
    namespace, name = serve_args.configmap.split("/")
    assert rule["resourceNames"] == [name]
    assert namespace == role["metadata"]["namespace"] == "mesher-system"
    binding = one(BASE / "rbac.yaml", "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (subject,) = binding["subjects"]
    assert subject["name"] == deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert (
        subject["name"] == one(BASE / "serviceaccount.yaml", "ServiceAccount")["metadata"]["name"]
    )


def test_deployment_is_highly_available_and_locked_down(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] >= 2
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    pdb = one(BASE / "pdb.yaml", "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_probes_hit_the_admin_port_the_server_listens_on(
    container: dict[str, Any], serve_args: Any
) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == serve_args.admin_port
    assert ports["https"] == serve_args.port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}


def test_grace_period_covers_drain_and_in_flight_requests(
    deployment: dict[str, Any], serve_args: Any
) -> None:
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > serve_args.drain_seconds + serve_args.shutdown_timeout


def test_tls_files_come_from_the_mounted_secret(
    container: dict[str, Any], deployment: dict[str, Any], serve_args: Any
) -> None:
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert str(serve_args.tls_cert) == f"{mounts['tls']}/tls.crt"
    assert str(serve_args.tls_key) == f"{mounts['tls']}/tls.key"
    assert volumes["tls"]["secret"]["secretName"] == "mesher-injector-tls"
    assert build_parser().parse_args(["certs", "-o", "x"]).secret_name == "mesher-injector-tls"
    assert serve_args.template_source == "configmap"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_service_maps_443_to_the_webhook_port(deployment: dict[str, Any]) -> None:
    service = one(BASE / "service.yaml", "Service")
    https = next(p for p in service["spec"]["ports"] if p["name"] == "https")
    assert https["port"] == 443
    assert https["targetPort"] == "https"
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_webhook_configuration_matches_the_service_and_the_server() -> None:
    config = one(BASE / "webhook.yaml", "MutatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    service = one(BASE / "service.yaml", "Service")
    client = hook["clientConfig"]["service"]
    assert client["name"] == service["metadata"]["name"]
    assert client["namespace"] == service["metadata"]["namespace"]
    assert client["port"] == 443
    app = webhook_app(Injector(excluded_namespaces=frozenset()), max_body_bytes=1)
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert client["path"] in paths
    assert hook["admissionReviewVersions"] == ["v1", "v1beta1"]
    assert hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == "Fail"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["matchPolicy"] == "Equivalent"
    assert 1 <= hook["timeoutSeconds"] <= 10
    (rule,) = hook["rules"]
    assert rule["operations"] == ["CREATE"]
    assert rule["resources"] == ["pods"]
    assert hook["namespaceSelector"] == {"matchLabels": {"sidecar-injector": "enabled"}}


def test_cert_manager_overlay_issues_the_secret_the_deployment_mounts() -> None:
    certs = docs(DEPLOY / "cert-manager" / "certificates.yaml")
    serving = next(
        d
        for d in certs
        if d["kind"] == "Certificate" and d["metadata"]["name"] == "mesher-injector-serving"
    )
    assert serving["spec"]["secretName"] == "mesher-injector-tls"
    assert serving["spec"]["dnsNames"] == service_dns_names("mesher-injector", "mesher-system")
    kustomization = yaml.safe_load((DEPLOY / "cert-manager" / "kustomization.yaml").read_text())
    (patch,) = kustomization["patches"]
    ops = yaml.safe_load(patch["patch"])
    assert (
        ops[0]["value"]["cert-manager.io/inject-ca-from"] == "mesher-system/mesher-injector-serving"
    )


def test_examples_are_injected_with_their_discovery_type(template: Template) -> None:
    namespace = one(DEPLOY / "examples" / "namespace.yaml", "Namespace")
    assert namespace["metadata"]["labels"] == {"sidecar-injector": "enabled"}
    expected = {"sc": "sc", "pilot": "pilot"}
    for folder, discovery in expected.items():
        for name in ("server.yaml", "client.yaml"):
            text = (DEPLOY / "examples" / folder / name).read_text()
            _, reports = inject_documents(text, template)
            (report,) = reports
            assert report.outcome.decision == "injected", (folder, name, report)
            assert report.outcome.discovery_type == discovery
            if name == "server.yaml":
                assert report.outcome.service_ports == "rest:9999"
            assert all(
                d["metadata"].get("namespace") == "chassis"
                for d in docs(DEPLOY / "examples" / folder / name)
            )


@pytest.mark.parametrize("script", ["install.sh", "e2e.sh"])
def test_deploy_scripts_are_valid_bash(script: str) -> None:
    result = run(["bash", "-n", str(DEPLOY / script)])
    assert result.returncode == 0, result.stderr


def test_e2e_skips_cleanly_without_a_cluster(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = run(["bash", str(DEPLOY / "e2e.sh")], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("skipped: no cluster")


def test_dockerfile_runs_as_a_numeric_non_root_user_from_the_lock_file() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt" in text
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["mesher-injector"]' in text
    assert "EXPOSE 8443 8080" in text
    assert text.count("FROM ") == 2


def fake_kubectl(tmp_path: Path, *, secret_ca: str | None) -> tuple[Path, Path]:
    """A kubectl that records its arguments (and the files it is given) and answers the
    one query install.sh makes: the existing TLS Secret's ca.crt, if any."""
    log = tmp_path / "kubectl.log"
    script = tmp_path / "kubectl"
    answer = f'echo -n "{secret_ca}"; exit 0' if secret_ca else "exit 1"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'printf "%s\\n" "$*" >> "{log}"\n'
        'for a in "$@"; do if [ -f "$a" ] && [ "${a##*.}" = yaml ]; then cp "$a" "'
        + str(tmp_path)
        + '/applied-$(basename "$a")"; fi; done\n'
        'case "$*" in *"get secret"*"-o jsonpath"*) ' + answer + ";; esac\n"
        'case "$*" in *"get secret"*) exit ' + ("0" if secret_ca else "1") + ";; esac\n"
        "exit 0\n"
    )
    script.chmod(0o755)
    cli = tmp_path / "mesher-injector"
    cli.write_text(f'#!/usr/bin/env bash\nexec "{sys.executable}" -m injector "$@"\n')
    cli.chmod(0o755)
    return script, log


def run_install(
    tmp_path: Path, kubectl: Path, cli: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return run(
        ["bash", str(DEPLOY / "install.sh")],
        env={**os.environ, "KUBECTL": str(kubectl), "MESHER_INJECTOR": str(cli), **env},
        cwd=ROOT,
    )


def test_install_issues_a_certificate_applies_everything_and_sets_the_ca_bundle(
    tmp_path: Path,
) -> None:
    kubectl, log = fake_kubectl(tmp_path, secret_ca=None)
    result = run_install(tmp_path, kubectl, tmp_path / "mesher-injector")
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == f"apply -f {BASE}/namespace.yaml"
    secret = yaml.safe_load((tmp_path / "applied-secret.yaml").read_text())
    assert secret["metadata"]["name"] == "mesher-injector-tls"
    assert f"apply -k {DEPLOY}" in calls
    patch_call = next(
        c for c in calls if c.startswith("patch mutatingwebhookconfiguration mesher-injector")
    )
    patch = json.loads(patch_call.split(" -p ", 1)[1])
    assert patch == [
        {
            "op": "add",
            "path": "/webhooks/0/clientConfig/caBundle",
            "value": secret["data"]["ca.crt"],
        }
    ]
    assert calls[-1].startswith("-n mesher-system rollout status deployment/mesher-injector")


def test_install_reuses_an_existing_secret_unless_asked_to_rotate(tmp_path: Path) -> None:
    kubectl, log = fake_kubectl(tmp_path, secret_ca="Q0EtRlJPTS1TRUNSRVQ=")
    result = run_install(tmp_path, kubectl, tmp_path / "mesher-injector")
    assert result.returncode == 0, result.stderr
    assert "reusing Secret" in result.stdout
    assert not (tmp_path / "applied-secret.yaml").exists()
    assert '"value":"Q0EtRlJPTS1TRUNSRVQ="' in log.read_text()
    rotated = run_install(tmp_path, kubectl, tmp_path / "mesher-injector", ROTATE="1")
    assert rotated.returncode == 0, rotated.stderr
    assert (tmp_path / "applied-secret.yaml").exists()
