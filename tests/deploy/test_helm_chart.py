"""deploy/helm/mesher-injector: `helm lint`, and `helm template` object by object against
`kubectl kustomize` of deploy/ (and of its cert-manager, monitoring and template folders).
helm comes from scripts/helm/build.sh (`make helm`, which `make test` runs first)."""

from __future__ import annotations

import base64
import copy
import datetime
from pathlib import Path

import pytest
from cryptography import x509

from injector.cli.main import build_parser
from injector.web.tls import service_dns_names
from tests.support.charts import (
    CHART,
    CHART_LABELS,
    CLUSTER_SCOPED,
    Json,
    by_key,
    helm_binary,
    helm_template,
    key,
    kubectl_binary,
    kustomize,
    readme_overlay,
    run,
)
from tests.support.helpers import DEFAULT_TEMPLATE, ROOT

DEPLOY = ROOT / "deploy"
HELM = helm_binary()
pytestmark = [
    pytest.mark.skipif(HELM is None, reason="helm not built: `make helm` (needs Go)"),
    pytest.mark.skipif(kubectl_binary() is None, reason="no kubectl (`make controlplane`)"),
]
TEMPLATE_KEY = ("ConfigMap", "mesher-system", "mesher-sidecar-template")
SELF_SIGNED_SECRETS = {
    ("Secret", "mesher-system", "mesher-injector-ca"),
    ("Secret", "mesher-system", "mesher-injector-tls"),
}
WEBHOOKS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
A_CA_BUNDLE = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n...").decode()


def helm() -> Path:
    assert HELM is not None
    return HELM


def render(*args: str, namespace: str = "mesher-system") -> dict[tuple[str, str, str], Json]:
    return by_key(helm_template(helm(), *args, namespace=namespace))


def every_webhook(charted: dict[tuple[str, str, str], Json]) -> list[Json]:
    """The entries of both webhook configurations (the mutating one has two)."""
    found = [w for kind in WEBHOOKS for w in charted[(kind, "", "mesher-injector")]["webhooks"]]
    assert len(found) == 3
    return found


def comparable(obj: Json) -> tuple[Json, dict[str, str]]:
    """The object less its labels (returned apart) and its webhooks' caBundle: what kustomize
    and helm must render alike."""
    obj = copy.deepcopy(obj)
    labels: dict[str, str] = obj["metadata"].pop("labels", {})
    for webhook in obj.get("webhooks", []):
        webhook["clientConfig"].pop("caBundle", None)
    return obj, labels


def assert_same_objects(kustomized: list[Json], charted: dict[tuple[str, str, str], Json]) -> None:
    """Every object kustomize renders, but the Namespace (helm --create-namespace makes it),
    the chart renders equal, with deploy/'s labels and Helm's recommended ones."""
    for obj in kustomized:
        if obj["kind"] == "Namespace":
            continue
        assert key(obj) in charted, f"the chart has no {key(obj)}"
        expected, labels = comparable(obj)
        actual, chart_labels = comparable(charted[key(obj)])
        assert actual == expected, key(obj)
        assert chart_labels.items() >= labels.items(), key(obj)
        assert set(chart_labels) - set(labels) <= CHART_LABELS, key(obj)


@pytest.fixture(scope="module")
def default() -> dict[tuple[str, str, str], Json]:
    return render()


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "certificates.source=certManager", "--set", "monitoring.enabled=true"],
        [
            "--set",
            "certificates.source=provided",
            "--set",
            f"certificates.provided.caBundle={A_CA_BUNDLE}",
        ],
        ["--set", "rolloutWatch.enabled=false", "--set", "monitoring.enabled=true"],
    ],
    ids=["default", "cert-manager-and-monitoring", "provided", "no-rollout-watch"],
)
def test_helm_lint_passes_strict(values: list[str]) -> None:
    linted = run([str(helm()), "lint", "--strict", str(CHART), *values])

    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "0 chart(s) failed" in linted.stdout


def test_the_chart_installs_what_deploy_installs(default: dict[tuple[str, str, str], Json]) -> None:
    """kinds and names, webhook rules, matchConditions, namespaceSelector, the Deployment's
    probes, security context and args, RBAC, PDB, Services, NetworkPolicy: all equal."""
    kustomized = kustomize(DEPLOY)

    assert_same_objects(kustomized, default)
    extra = set(default) - {key(o) for o in kustomized}
    assert extra == SELF_SIGNED_SECRETS | {TEMPLATE_KEY}
    # the strict entry, then the one pods annotated failurePolicy: Ignore go to
    mutating = default[("MutatingWebhookConfiguration", "", "mesher-injector")]["webhooks"]
    assert [(w["name"], w["failurePolicy"]) for w in mutating] == [
        ("sidecar.mesher.io", "Fail"),
        ("fail-open.sidecar.mesher.io", "Ignore"),
    ]


def test_the_chart_with_cert_manager_installs_what_deploy_cert_manager_installs() -> None:
    charted = render("--set", "certificates.source=certManager")
    kustomized = kustomize(DEPLOY / "cert-manager")

    assert_same_objects(kustomized, charted)
    assert set(charted) - {key(o) for o in kustomized} == {TEMPLATE_KEY}
    for webhook in every_webhook(charted):
        assert "caBundle" not in webhook["clientConfig"]  # cert-manager's cainjector fills it


def test_the_monitoring_pack_is_off_by_default_and_deploy_monitoring_when_on(
    default: dict[tuple[str, str, str], Json],
) -> None:
    monitoring = {"ServiceMonitor", "PrometheusRule"}
    assert not monitoring & {kind for kind, _, _ in default}
    charted = render("--set", "monitoring.enabled=true")
    kustomized = kustomize(DEPLOY / "monitoring")

    assert_same_objects(kustomized, charted)
    # kube-prometheus-stack selects them by its release's name
    labelled = render("--set", "monitoring.enabled=true", "--set", "monitoring.labels.release=kps")
    for kind in monitoring:
        labels = labelled[(kind, "mesher-system", "mesher-injector")]["metadata"]["labels"]
        assert labels["release"] == "kps"


def test_the_template_configmap_is_deploy_templates_made_once_by_a_pre_install_hook(
    default: dict[tuple[str, str, str], Json],
) -> None:
    (kustomized,) = kustomize(DEPLOY / "template")
    configmap = default[TEMPLATE_KEY]

    assert (
        configmap["data"] == kustomized["data"] == {"template.yaml": DEFAULT_TEMPLATE.read_text()}
    )
    assert configmap["metadata"]["annotations"] == {
        # a hook: never in the release's manifest, so never reverted by an upgrade nor
        # deleted by an uninstall
        "helm.sh/hook": "pre-install",
        # a delete policy that never applies to a ConfigMap, in place of the default
        # before-hook-creation
        "helm.sh/hook-delete-policy": "hook-failed",
        "helm.sh/resource-policy": "keep",
    }


@pytest.mark.parametrize(
    ("copy_in_chart", "source"),
    [
        ("template.yaml", DEFAULT_TEMPLATE),
        ("prometheusrule.yaml", DEPLOY / "monitoring" / "prometheusrule.yaml"),
        ("dashboard.json", DEPLOY / "monitoring" / "dashboard.json"),
    ],
)
def test_the_charts_files_are_copies_of_their_sources(copy_in_chart: str, source: Path) -> None:
    assert (CHART / "files" / copy_in_chart).read_text() == source.read_text(), (
        "run `make deploy-template`"
    )


def certificate(secret: Json, field: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"][field]))


def test_the_self_signed_default_serves_the_services_names_under_the_ca_the_webhooks_trust(
    default: dict[tuple[str, str, str], Json],
) -> None:
    tls = default[("Secret", "mesher-system", "mesher-injector-tls")]
    ca = default[("Secret", "mesher-system", "mesher-injector-ca")]
    serving = certificate(tls, "tls.crt")

    serving.verify_directly_issued_by(certificate(ca, "tls.crt"))
    assert tls["data"]["ca.crt"] == ca["data"]["tls.crt"]
    assert "tls.key" in tls["data"]
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == service_dns_names(
        "mesher-injector", "mesher-system"
    )
    for webhook in every_webhook(default):
        assert webhook["clientConfig"]["caBundle"] == ca["data"]["tls.crt"]
    # the expiry an upgrade renews by, written beside the certificate
    not_after = datetime.datetime.fromisoformat(
        tls["metadata"]["annotations"]["sidecar.mesher.io/not-after"]
    )
    assert abs((not_after - serving.not_valid_after_utc).total_seconds()) < 60


def test_provided_certificates_mount_the_users_secret_and_trust_the_users_ca() -> None:
    charted = render(
        "--set",
        "certificates.source=provided",
        "--set",
        "certificates.provided.secretName=my-tls",
        "--set",
        f"certificates.provided.caBundle={A_CA_BUNDLE}",
    )

    assert "Secret" not in {kind for kind, _, _ in charted}
    pod = charted[("Deployment", "mesher-system", "mesher-injector")]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "my-tls"
    for webhook in every_webhook(charted):
        assert webhook["clientConfig"]["caBundle"] == A_CA_BUNDLE


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "certificates.source=provided"], "needs certificates.provided.caBundle"),
        (["--set", "certificates.source=vault"], "certificates/source"),
        (["--set", "webhook.failurePolicy=Never"], "webhook/failurePolicy"),
        (["--set", "replica=3"], "'replica' not allowed"),
        (["--set", "monitoring.alerts.staleSidecarsAfter=1d"], "staleSidecarsAfter"),
    ],
)
def test_a_wrong_value_is_refused_with_its_name(values: list[str], message: str) -> None:
    refused = run([str(helm()), "template", str(CHART), *values])

    assert refused.returncode != 0
    assert message in refused.stderr


def test_the_values_reach_the_objects() -> None:
    charted = render(
        "--set",
        "namespace=mesh-tools",
        "--set",
        "replicas=3",
        "--set",
        "resources.limits.memory=512Mi",
        "--set",
        "image.repository=registry.local:5000/mesher-injector",
        "--set",
        "image.digest=sha256:" + "0" * 64,
        "--set",
        "webhook.failurePolicy=Ignore",
        "--set",
        "webhook.timeoutSeconds=10",
        "--set",
        "webhook.excludedNamespaces={kube-system,legacy}",
    )

    for kind, namespace, name in charted:
        if kind not in CLUSTER_SCOPED:
            assert namespace == "mesh-tools", (kind, name)
    (subject,) = charted[("ClusterRoleBinding", "", "mesher-injector")]["subjects"]
    assert subject["namespace"] == "mesh-tools"
    deployment = charted[("Deployment", "mesh-tools", "mesher-injector")]["spec"]
    assert deployment["replicas"] == 3
    (container,) = deployment["template"]["spec"]["containers"]
    assert container["image"] == "registry.local:5000/mesher-injector@sha256:" + "0" * 64
    assert container["resources"]["limits"]["memory"] == "512Mi"
    args = build_parser().parse_args(container["args"])
    assert args.configmap == ""  # the ConfigMap is looked up in the pod's own namespace
    (binding,) = charted[("RoleBinding", "mesh-tools", "mesher-injector")]["subjects"]
    assert binding["namespace"] == "mesh-tools"
    strict, fail_open = charted[("MutatingWebhookConfiguration", "", "mesher-injector")]["webhooks"]
    (validating,) = charted[("ValidatingWebhookConfiguration", "", "mesher-injector")]["webhooks"]
    assert (strict["failurePolicy"], strict["timeoutSeconds"]) == ("Ignore", 10)
    assert validating["failurePolicy"] == "Ignore"  # always: an outage never blocks a fix
    assert (fail_open["failurePolicy"], fail_open["timeoutSeconds"]) == ("Ignore", 10)
    for hook in (strict, fail_open):
        (excluded,) = hook["namespaceSelector"]["matchExpressions"]
        assert excluded["values"] == ["kube-system", "legacy", "mesh-tools"]
    (selected,) = validating["namespaceSelector"]["matchExpressions"]
    assert selected["values"] == ["mesh-tools"]
    for hook in (strict, fail_open, validating):
        assert hook["clientConfig"]["service"]["namespace"] == "mesh-tools"
    tls = charted[("Secret", "mesh-tools", "mesher-injector-tls")]
    names = certificate(tls, "tls.crt").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert names.value.get_values_for_type(x509.DNSName) == service_dns_names(
        "mesher-injector", "mesh-tools"
    )


def test_the_release_namespace_is_the_injectors_by_default() -> None:
    charted = render(namespace="mesh-tools")

    assert {namespace for kind, namespace, _ in charted if kind not in CLUSTER_SCOPED} == {
        "mesh-tools"
    }


ROLLOUT_WATCH_OFF = ("--set", "rolloutWatch.enabled=false")
RULE_KEY = ("PrometheusRule", "mesher-system", "mesher-injector")
ROLLOUT_OBJECTS = {
    ("ClusterRole", "", "mesher-injector"),
    ("ClusterRoleBinding", "", "mesher-injector"),
}


def test_without_the_rollout_watch_the_chart_grants_no_pods_nor_leases_and_turns_it_off(
    default: dict[tuple[str, str, str], Json],
) -> None:
    charted = render(*ROLLOUT_WATCH_OFF, "--set", "monitoring.enabled=true")

    assert set(default) >= ROLLOUT_OBJECTS
    assert set(charted) == set(render("--set", "monitoring.enabled=true")) - ROLLOUT_OBJECTS
    (rule,) = charted[("Role", "mesher-system", "mesher-injector")]["rules"]
    assert rule["resources"] == ["configmaps"]
    deployment = charted[("Deployment", "mesher-system", "mesher-injector")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "MESHER_INJECTOR_ROLLOUT_WATCH", "value": "false"} in container["env"]
    groups = charted[RULE_KEY]["spec"]["groups"]
    assert [g["name"] for g in groups] == ["mesher-injector"]


def test_the_readmes_overlay_without_the_rollout_watch_is_the_charts(tmp_path: Path) -> None:
    kustomized = kustomize(readme_overlay(tmp_path, "# no-rollout-watch/kustomization.yaml"))

    assert_same_objects(kustomized, render(*ROLLOUT_WATCH_OFF))
    assert not ROLLOUT_OBJECTS & {key(o) for o in kustomized}


def stale_alert(prometheus_rule: Json) -> Json:
    groups = prometheus_rule["spec"]["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r["alert"] == "MesherInjectorSidecarsStale"]
    found: Json = rule
    return found


def test_stale_sidecars_after_sets_the_stale_alerts_threshold_and_nothing_else() -> None:
    on = ("--set", "monitoring.enabled=true")
    shipped = stale_alert(render(*on)[RULE_KEY])
    charted = stale_alert(
        render(*on, "--set", "monitoring.alerts.staleSidecarsAfter=3600")[RULE_KEY]
    )

    assert shipped["expr"].endswith(" > 86400")
    assert charted == {**shipped, "expr": shipped["expr"].removesuffix("86400") + "3600"}


def test_the_readmes_stale_threshold_overlay_is_the_charts_value(tmp_path: Path) -> None:
    kustomized = by_key(kustomize(readme_overlay(tmp_path, "# my-alerts/kustomization.yaml")))
    charted = render(
        "--set", "monitoring.enabled=true", "--set", "monitoring.alerts.staleSidecarsAfter=21600"
    )

    assert stale_alert(kustomized[RULE_KEY]) == stale_alert(charted[RULE_KEY])
