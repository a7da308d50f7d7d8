"""deploy/: the manifests parse, agree with each other and with the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from injector.cli.main import build_parser
from injector.core.decide import decide
from injector.core.manual import inject_documents
from injector.core.names import ROLLOUT_LEASE
from injector.core.settings import ConfigMapRef
from injector.core.template import Template, load_template
from injector.web.tls import service_dns_names
from injector.web.webhook import WEBHOOKS
from tests.support.charts import CLUSTER_SCOPED, kubectl_binary, kustomize, readme_overlay, run
from tests.support.helpers import (
    DEFAULT_TEMPLATE,
    ROOT,
    admission_fixture,
    admission_fixture_names,
)

TEMPLATE = load_template(DEFAULT_TEMPLATE.read_text())

DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"


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


KUBECTL = pytest.mark.skipif(kubectl_binary() is None, reason="kubectl not installed")


@KUBECTL
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
                "ClusterRole",
                "ClusterRoleBinding",
                "Service",
                "Deployment",
                "PodDisruptionBudget",
                "NetworkPolicy",
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration",
            },
        ),
        ("deploy/cert-manager", {"Issuer", "Certificate", "MutatingWebhookConfiguration"}),
        ("deploy/template", {"ConfigMap"}),
        ("deploy/examples", {"Namespace", "Deployment", "Service", "Job"}),
        ("deploy/examples/pilot", {"Deployment", "Service"}),
    ],
)
def test_kustomize_builds(folder: str, expected: set[str]) -> None:
    built = kustomize(ROOT / folder)
    assert expected <= {d["kind"] for d in built}
    configmaps = [d for d in built if d["kind"] == "ConfigMap"]
    assert bool(configmaps) == (folder == "deploy/template")  # only there: the admin's
    for configmap in configmaps:  # generated without a name hash, holding config/'s template
        assert configmap["metadata"]["name"] == "mesher-sidecar-template"
        assert configmap["metadata"]["namespace"] == "mesher-system"
        assert configmap["data"]["template.yaml"] == DEFAULT_TEMPLATE.read_text()


@KUBECTL
def test_the_readmes_cert_manager_overlay_moves_everything_to_another_namespace(
    tmp_path: Path,
) -> None:
    """The README's overlay of deploy/cert-manager/ into mesh-tools: every object lands
    there, the webhooks call the Service there and exclude (or, for the template, select)
    mesh-tools instead of mesher-system, cert-manager issues the certificate for the
    Service's names there and injects its CA, and the injector finds its ConfigMap there."""
    built = kustomize(readme_overlay(tmp_path, "# my-install/kustomization.yaml"))
    for doc in built:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == "mesh-tools"
        elif doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == "mesh-tools", doc["kind"]
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        (binding,) = [d for d in built if d["kind"] == kind]
        assert binding["subjects"][0]["namespace"] == "mesh-tools", kind
    (webhook,) = [d for d in built if d["kind"] == "MutatingWebhookConfiguration"]
    (validating,) = [d for d in built if d["kind"] == "ValidatingWebhookConfiguration"]
    for configuration in (webhook, validating):
        for hook in configuration["webhooks"]:
            assert hook["clientConfig"]["service"]["namespace"] == "mesh-tools"
        annotations = configuration["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == "mesh-tools/mesher-injector-serving"
    assert len(webhook["webhooks"]) == 2  # fail-closed and fail-open pods
    for hook in webhook["webhooks"]:
        (excluded,) = hook["namespaceSelector"]["matchExpressions"]
        assert excluded["values"] == ["kube-system", "kube-public", "mesh-tools"]
    (selected,) = validating["webhooks"][0]["namespaceSelector"]["matchExpressions"]
    assert selected["values"] == ["mesh-tools"]
    (serving,) = [
        d
        for d in built
        if d["kind"] == "Certificate" and d["metadata"]["name"] == "mesher-injector-serving"
    ]
    assert serving["spec"]["dnsNames"] == service_dns_names("mesher-injector", "mesh-tools")
    (deployment,) = [d for d in built if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == serving["spec"]["secretName"]
    (container,) = pod["containers"]
    assert container["image"] == "REGISTRY/mesher-injector:0.1.0"
    args = build_parser().parse_args(container["args"])
    assert args.configmap == ""  # the ConfigMap is looked up in the pod's own namespace
    ref = ConfigMapRef.parse(args.configmap, default_namespace="mesh-tools")
    assert (ref.namespace, ref.name) == ("mesh-tools", "mesher-sidecar-template")
    assert "mesher-system" not in yaml.safe_dump(built)
    (template,) = kustomize(readme_overlay(tmp_path, "# my-template/kustomization.yaml"))
    assert template["metadata"] == {
        "name": "mesher-sidecar-template",
        "namespace": "mesh-tools",
        "labels": {"app.kubernetes.io/part-of": "mesher-injector"},
    }


@KUBECTL
def test_the_readmes_monitoring_overlay_labels_what_kube_prometheus_stack_selects(
    tmp_path: Path,
) -> None:
    built = kustomize(readme_overlay(tmp_path, "# my-monitoring/kustomization.yaml"))
    selected = [d for d in built if d["kind"] in ("ServiceMonitor", "PrometheusRule")]
    assert {d["kind"] for d in selected} == {"ServiceMonitor", "PrometheusRule"}
    for doc in selected:
        assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (monitor,) = [d for d in selected if d["kind"] == "ServiceMonitor"]
    (metrics,) = [
        d for d in docs(BASE / "service.yaml") if d["metadata"]["name"] == "mesher-injector-metrics"
    ]
    assert monitor["spec"]["selector"]["matchLabels"] == metrics["metadata"]["labels"]


def test_install_sh_refuses_a_namespace_name_before_touching_the_cluster(tmp_path: Path) -> None:
    touched = tmp_path / "touched"
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f"#!/bin/sh\ntouch {touched}\nexit 1\n")
    kubectl.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "KUBECTL": str(kubectl), "NAMESPACE": "Mesh_Tools"}

    result = run(["bash", str(DEPLOY / "install.sh")], env=env)

    assert result.returncode == 2
    assert "NAMESPACE=Mesh_Tools is not a namespace name" in result.stderr
    assert not touched.exists()


def test_the_template_configmap_equals_config() -> None:
    assert (DEPLOY / "template" / "template.yaml").read_text() == DEFAULT_TEMPLATE.read_text()
    spec = yaml.safe_load((DEPLOY / "template" / "kustomization.yaml").read_text())
    (generator,) = spec["configMapGenerator"]
    assert generator["name"] == "mesher-sidecar-template"
    assert generator["files"] == ["template.yaml"]
    assert spec["generatorOptions"]["disableNameSuffixHash"] is True
    assert spec["namespace"] == "mesher-system"


# The Lease the rollout watch's replicas elect their leader with (serve --rollout-watch).


def test_rbac_allows_reading_the_template_and_holding_the_rollout_lease_only(
    serve_args: Any, deployment: dict[str, Any]
) -> None:
    role = one(BASE / "rbac.yaml", "Role")
    template, lease, create_lease = role["rules"]
    assert template["resources"] == ["configmaps"]
    assert sorted(template["verbs"]) == ["get", "list", "watch"]
    ref = ConfigMapRef.parse(serve_args.configmap, default_namespace="mesher-system")
    assert template["resourceNames"] == [ref.name]
    assert ref.namespace == role["metadata"]["namespace"] == "mesher-system"
    for rule in (lease, create_lease):
        assert (rule["apiGroups"], rule["resources"]) == (["coordination.k8s.io"], ["leases"])
    assert (sorted(lease["verbs"]), lease["resourceNames"]) == (["get", "update"], [ROLLOUT_LEASE])
    # RBAC cannot limit create by name: the only verb on leases without one
    assert create_lease["verbs"] == ["create"]
    assert "resourceNames" not in create_lease
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert account == one(BASE / "serviceaccount.yaml", "ServiceAccount")["metadata"]["name"]
    for kind, role_kind in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
        binding = one(BASE / "rbac.yaml", kind)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": one(BASE / "rbac.yaml", role_kind)["metadata"]["name"],
        }
        (subject,) = binding["subjects"]
        assert subject == {"kind": "ServiceAccount", "name": account, "namespace": "mesher-system"}


def test_the_cluster_role_lists_and_watches_pods_and_nothing_else() -> None:
    """The rollout watch: pods' metadata in every namespace. Never get (it lists), never
    another resource, never a write."""
    cluster_role = one(BASE / "rbac.yaml", "ClusterRole")
    assert cluster_role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}
    ]


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


def test_each_replica_knows_its_own_pod_name_for_the_rollout_lease(
    container: dict[str, Any],
) -> None:
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"] == {
        "name": "POD_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    # the watch is on by default: nothing in deploy/ turns it off
    assert "MESHER_INJECTOR_ROLLOUT_WATCH" not in env


def webhook_service() -> dict[str, Any]:
    (service,) = [
        d for d in docs(BASE / "service.yaml") if d["metadata"]["name"] == "mesher-injector"
    ]
    return service


def test_service_maps_443_to_the_webhook_port_and_nothing_else(
    deployment: dict[str, Any],
) -> None:
    service = webhook_service()
    assert [p["name"] for p in service["spec"]["ports"]] == ["https"]
    https = next(p for p in service["spec"]["ports"] if p["name"] == "https")
    assert https["port"] == 443
    assert https["targetPort"] == "https"
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_webhook_configuration_matches_the_service_and_the_server() -> None:
    config = one(BASE / "webhook.yaml", "MutatingWebhookConfiguration")
    hook, _ = config["webhooks"]  # the fail-open entry equals it but for three fields (below)
    assert hook["name"] == "sidecar.mesher.io"
    service = webhook_service()
    client = hook["clientConfig"]["service"]
    assert client["name"] == service["metadata"]["name"]
    assert client["namespace"] == service["metadata"]["namespace"]
    assert client["port"] == 443
    assert client["path"] in WEBHOOKS
    assert hook["admissionReviewVersions"] == ["v1", "v1beta1"]
    assert hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == "Fail"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["matchPolicy"] == "Equivalent"
    assert 1 <= hook["timeoutSeconds"] <= 10
    (rule,) = hook["rules"]
    assert rule["operations"] == ["CREATE"]
    assert rule["resources"] == ["pods"]


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
    patched = {p["target"]["kind"] for p in kustomization["patches"]}
    assert patched == {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    for patch in kustomization["patches"]:
        ops = yaml.safe_load(patch["patch"])
        assert (
            ops[0]["value"]["cert-manager.io/inject-ca-from"]
            == "mesher-system/mesher-injector-serving"
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


@KUBECTL
@pytest.mark.parametrize(
    ("folder", "image"),
    [("deploy/examples", "image"), ("deploy/examples/pilot", "pilotImage")],
)
def test_examples_run_mesher_from_the_template_value_they_need(
    template: Template, folder: str, image: str
) -> None:
    """`kubectl apply -k deploy/examples/` needs only the published mesher image
    (values.image); the Pilot pair, which needs an image you build (values.pilotImage),
    is applied on its own."""
    values = yaml.safe_load(DEFAULT_TEMPLATE.read_text())["values"]
    built = yaml.safe_dump_all(kustomize(ROOT / folder))
    out, reports = inject_documents(built, template)
    assert reports
    assert all(r.outcome.decision == "injected" for r in reports)
    workloads = [d for d in yaml.safe_load_all(out) if d and d["kind"] in ("Deployment", "Job")]
    assert len(workloads) == len(reports)
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        (mesher,) = [
            c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == "mesher"
        ]
        assert mesher["image"] == values[image], workload["metadata"]["name"]


def test_the_example_job_gets_a_native_sidecar(template: Template) -> None:
    text = (DEPLOY / "examples" / "job" / "nightly.yaml").read_text()
    out, (report,) = inject_documents(text, template)
    assert report.outcome.decision == "injected"
    assert not report.outcome.warnings
    (job,) = [d for d in yaml.safe_load_all(out) if d]
    first = job["spec"]["template"]["spec"]["initContainers"][0]
    assert (first["name"], first["restartPolicy"]) == ("mesher", "Always")


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


def test_the_base_never_applies_the_template_configmap() -> None:
    for kustomization in (BASE, DEPLOY, DEPLOY / "cert-manager"):
        spec = yaml.safe_load((kustomization / "kustomization.yaml").read_text())
        assert "configMapGenerator" not in spec
    assert not (BASE / "template.yaml").exists()


ASKS_FOR_MESHER = (
    "has(object.metadata.annotations) && 'sidecar.mesher.io/inject' in object.metadata.annotations"
)
FAILS_OPEN = (
    "has(object.metadata.annotations) && "
    "'sidecar.mesher.io/failurePolicy' in object.metadata.annotations && "
    "object.metadata.annotations['sidecar.mesher.io/failurePolicy'] == 'Ignore'"
)


def test_pods_that_fail_open_go_to_a_second_entry_equal_to_the_first_but_for_its_policy() -> None:
    """The strict entry takes the pods that ask, less those annotated failurePolicy:
    Ignore, which only the fail-open entry takes: each pod that asks is sent once (the
    API server evaluates the conditions: tests/e2e/test_fail_open.py)."""
    config = one(BASE / "webhook.yaml", "MutatingWebhookConfiguration")
    strict, fail_open = config["webhooks"]

    conditions = {
        hook["name"]: {c["name"]: c["expression"] for c in hook["matchConditions"]}
        for hook in (strict, fail_open)
    }
    assert conditions == {
        "sidecar.mesher.io": {
            "asks-for-mesher": ASKS_FOR_MESHER,
            "fails-closed": f"!({FAILS_OPEN})",
        },
        "fail-open.sidecar.mesher.io": {
            "asks-for-mesher": ASKS_FOR_MESHER,
            "fails-open": FAILS_OPEN,
        },
    }
    assert (strict["failurePolicy"], fail_open["failurePolicy"]) == ("Fail", "Ignore")
    differing = ("name", "failurePolicy", "matchConditions")
    assert {k: v for k, v in strict.items() if k not in differing} == {
        k: v for k, v in fail_open.items() if k not in differing
    }


def test_a_pod_that_does_not_carry_the_inject_annotation_needs_no_webhook_call() -> None:
    """deploy/'s matchConditions send only pods carrying the inject annotation (the API
    server evaluates them: tests/e2e/test_outage.py). So every recorded pod without it
    must be one the injector leaves alone, without even a warning."""
    config = one(BASE / "webhook.yaml", "MutatingWebhookConfiguration")
    for hook in config["webhooks"]:
        assert hook["matchConditions"][0]["expression"] == ASKS_FOR_MESHER
    for name in admission_fixture_names():
        request = admission_fixture(name)["request"]
        if request["kind"]["kind"] != "Pod":
            continue
        if "sidecar.mesher.io/inject" in (request["object"]["metadata"].get("annotations") or {}):
            continue
        outcome = decide(request, TEMPLATE)
        assert outcome.reason == "not-requested", name
        assert not outcome.warnings, name


def test_the_template_configmap_is_validated_at_apply_and_never_blocked_by_an_outage() -> None:
    config = one(BASE / "webhook.yaml", "ValidatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    assert hook["failurePolicy"] == "Ignore"  # an outage never stops a fix
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] <= 5
    assert hook["admissionReviewVersions"] == ["v1", "v1beta1"]
    (rule,) = hook["rules"]
    assert rule["resources"] == ["configmaps"]
    assert rule["operations"] == ["CREATE", "UPDATE", "DELETE"]
    client = hook["clientConfig"]["service"]
    assert (client["name"], client["namespace"], client["port"]) == (
        "mesher-injector",
        "mesher-system",
        443,
    )
    assert client["path"] == "/validate-template"
    assert client["path"] in WEBHOOKS
    # Its namespaceSelector and matchConditions (the template by name, oldObject's on
    # DELETE) are evaluated by a real API server in tests/e2e/test_template_review.py.
