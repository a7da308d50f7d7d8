"""`mesher-injector diff`: its arguments, how it reads --template-file, and the errors it
meets before any cluster (what it shows of a cluster: tests/e2e/test_diff.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from injector.cli.diff import read_new
from injector.core.names import TEMPLATE_KEY
from tests.support.cli import cli
from tests.support.helpers import DEFAULT_TEMPLATE, bump

GOOD = DEFAULT_TEMPLATE.read_text()


def configmap_manifest(data: dict[str, str]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "mesher-sidecar-template", "namespace": "mesher-system"},
            "data": data,
        }
    )


def test_a_template_file_stands_for_the_default_template_only(tmp_path: Path) -> None:
    file = tmp_path / "new.yaml"
    file.write_text(bump(GOOD, "1.6.4"))

    new = read_new(file, key=TEMPLATE_KEY)

    assert new.whole is False
    assert new.source == f"file {file}"
    assert new.templates.default is not None
    assert new.templates.default.version == "1.6.4"
    assert dict(new.templates.named) == {}
    assert new.templates.problems == {}


def test_a_configmap_manifest_stands_for_every_template_it_holds(tmp_path: Path) -> None:
    file = tmp_path / "configmap.yaml"
    file.write_text(configmap_manifest({"template.yaml": GOOD, "canary.yaml": bump(GOOD, "1.7.0")}))

    new = read_new(file, key=TEMPLATE_KEY)

    assert new.whole is True
    assert new.source == f"configmap manifest {file}"
    assert new.templates.default is not None
    assert sorted(new.templates.named) == ["canary"]
    assert new.templates.named["canary"].version == "1.7.0"


def test_a_folder_stands_for_every_template_it_holds(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(GOOD)
    (tmp_path / "canary.yaml").write_text(bump(GOOD, "1.7.0"))

    new = read_new(tmp_path, key=TEMPLATE_KEY)

    assert (new.whole, new.source, sorted(new.templates.named)) == (
        True,
        f"folder {tmp_path}",
        ["canary"],
    )


def test_an_invalid_new_template_is_exit_2_with_its_problems_before_any_cluster(
    tmp_path: Path,
) -> None:
    file = tmp_path / "new.yaml"
    file.write_text(GOOD.replace("{{ values.image }}", "{{ values.nope }}"))

    result = cli("diff", "--template-file", str(file))

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"mesher-injector diff: error: {file}: invalid template: unknown variable "
        "{{ values.nope }} at containers[0].image"
    ]


def test_a_configmap_manifest_is_checked_key_by_key(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(configmap_manifest({"template.yaml": GOOD, "canary.yaml": "version: ["}))
    no_default = tmp_path / "no-default.yaml"
    no_default.write_text(configmap_manifest({"canary.yaml": GOOD}))

    named = cli("diff", "--template-file", str(broken))
    default = cli("diff", "--template-file", str(no_default))

    assert named.returncode == 2
    [line] = named.stderr.splitlines()
    assert line.startswith(
        f"mesher-injector diff: error: {broken} key canary.yaml: invalid template: not valid YAML"
    )
    assert default.returncode == 2
    assert default.stderr.splitlines() == [
        f"mesher-injector diff: error: {no_default} key template.yaml: invalid template: "
        "the ConfigMap has no key 'template.yaml'"
    ]


def test_an_unreadable_template_file_and_no_cluster_are_one_line_errors_with_exit_2(
    tmp_path: Path,
) -> None:
    valid = tmp_path / "new.yaml"
    valid.write_text(GOOD)
    missing = tmp_path / "kubeconfig"

    unreadable = cli("diff", "--template-file", str(tmp_path / "nope.yaml"))
    no_cluster = cli(
        "diff",
        "--template-file",
        str(valid),
        env={"KUBECONFIG": str(missing), "KUBERNETES_SERVICE_HOST": ""},
    )

    assert unreadable.returncode == 2
    [line] = unreadable.stderr.splitlines()
    assert line.startswith(f"mesher-injector diff: error: cannot read template {tmp_path}")
    assert no_cluster.returncode == 2
    assert no_cluster.stderr.splitlines() == [
        f"mesher-injector diff: error: no kubeconfig: KUBECONFIG={missing} does not "
        "exist. Point at a cluster with KUBECONFIG=FILE, or --kube-api-server URL (e.g. "
        "http://127.0.0.1:8001 from kubectl proxy), or run inside the cluster"
    ]


def test_diff_needs_a_template_file_and_takes_one_scope() -> None:
    without = cli("diff")
    both = cli("diff", "--template-file", "t.yaml", "-n", "shop", "-A")
    helped = cli("diff", "--help")

    assert without.returncode == 2
    assert without.stderr.splitlines()[-1] == (
        "mesher-injector diff: error: the following arguments are required: --template-file"
    )
    assert both.returncode == 2
    assert "argument -A/--all-namespaces: not allowed with argument -n/--namespace" in (both.stderr)
    assert helped.returncode == 0
    assert "Exit 0: no workload would be denied; 1: the new template would deny one" in " ".join(
        helped.stdout.split()
    )
