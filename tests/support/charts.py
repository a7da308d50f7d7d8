"""The Helm chart's tools: helm (scripts/helm/build.sh builds it), kubectl for `kustomize`,
rendering the chart and kustomize folders, and the README's Helm commands."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.helpers import ROOT

Json = dict[str, Any]

CHART = ROOT / "deploy" / "helm" / "mesher-injector"
RELEASE = "mesher-injector"
README = ROOT / "README.md"
README_HELM_SECTION = "### Installing with Helm"
HELM_BUILD = ROOT / "scripts" / "helm" / "build.sh"
CONTROLPLANE_BUILD = ROOT / "scripts" / "controlplane" / "build.sh"
# The labels every object of the chart carries (Helm's recommended ones); deploy/'s
# objects carry some of them (app.kubernetes.io/name and part-of), and other labels of their own.
CHART_LABELS = frozenset(
    {
        "app.kubernetes.io/name",
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
        "helm.sh/chart",
    }
)
# The kinds deploy/ and the chart install cluster-wide (no namespace): one install per cluster.
CLUSTER_SCOPED = frozenset(
    {
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "ClusterRole",
        "ClusterRoleBinding",
    }
)


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """A command as the tests run them: output captured as text, bounded, never raising."""
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def _built(script: Path, name: str) -> Path | None:
    where = run(["bash", str(script), "--where"])
    found = Path(where.stdout.strip())
    path = found if found.name == name else found / name
    return path if where.returncode == 0 and path.is_file() else None


def helm_binary() -> Path | None:
    """The helm of scripts/helm/build.sh (`make helm`), or None when it is not built."""
    return _built(HELM_BUILD, "helm")


def kubectl_binary() -> Path | None:
    """The control plane's kubectl (the pinned one, `make controlplane`), else kubectl on
    PATH, else None."""
    pinned = _built(CONTROLPLANE_BUILD, "kubectl")
    on_path = shutil.which("kubectl")
    return pinned or (Path(on_path) if on_path else None)


def documents(text: str) -> list[Json]:
    return [d for d in yaml.safe_load_all(text) if d]


def kustomize(folder: Path) -> list[Json]:
    kubectl = kubectl_binary()
    assert kubectl is not None, "no kubectl"
    result = run([str(kubectl), "kustomize", str(folder)], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def readme_overlay(tmp_path: Path, first_line: str) -> Path:
    """The README's kustomization that starts with `first_line` (`# NAME/kustomization.yaml`),
    written to tmp_path/NAME with its `../deploy/` made this checkout's deploy/."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (block,) = [b for b in blocks if b.startswith(first_line)]
    folder = tmp_path / first_line.removeprefix("# ").split("/")[0]
    folder.mkdir()
    deploy = os.path.relpath(ROOT / "deploy", folder)
    (folder / "kustomization.yaml").write_text(block.replace("../deploy/", f"{deploy}/"))
    return folder


def helm_template(helm: Path, *args: str, namespace: str = "mesher-system") -> list[Json]:
    """`helm template` of the chart, as `helm install --namespace NAMESPACE ARGS` would
    install it (hooks included)."""
    result = run(
        [str(helm), "template", RELEASE, str(CHART), "--namespace", namespace, *args], cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def key(obj: Json) -> tuple[str, str, str]:
    """An object's kind, namespace and name: what identifies it in a cluster."""
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def by_key(objects: list[Json]) -> dict[tuple[str, str, str], Json]:
    found = {key(o): o for o in objects}
    assert len(found) == len(objects), "two objects of one kind and name"
    return found


def readme_helm_commands() -> dict[str, list[str]]:
    """The README's Helm commands (the first ```sh block of its "Installing with Helm"
    section), by helm subcommand: {"install": ["helm", "install", ...], ...}."""
    section = README.read_text().split(f"\n{README_HELM_SECTION}\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert block, f"no ```sh block under {README_HELM_SECTION!r}"
    commands: dict[str, list[str]] = {}
    for line in block.group(1).replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["helm"]:
            assert words[1] not in commands, f"two `helm {words[1]}` commands"
            commands[words[1]] = words
    return commands


def run_helm(
    helm: Path, command: list[str], kubeconfig: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`command` (["helm", ...], as the README writes it, from the repository's root) with
    our helm, on the cluster of `kubeconfig`, with `extra` arguments after it."""
    assert command[0] == "helm"
    return subprocess.run(
        [str(helm), *command[1:], *extra],
        cwd=ROOT,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
