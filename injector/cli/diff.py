"""`mesher-injector diff --template-file NEW`: before a template edit is applied, what it
would change in the sidecar of every meshed workload `status` finds, rendered with the
webhook's own code (injector.core.template_diff) under the live template and the new one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

from injector.cli import cluster
from injector.cli.files import Templates, read_template_text, read_templates, templates_of
from injector.cli.flags import CliError
from injector.core.manual import POD_KINDS, decider_for
from injector.core.names import DEFAULT_TEMPLATE_NAME, TEMPLATE_KEY
from injector.core.restart import Unhealthy
from injector.core.settings import ConfigMapRef
from injector.core.template import Template
from injector.core.template_diff import Preview, preview, render_block, summary, verdicts
from injector.core.workloads import Workload

if TYPE_CHECKING:
    from injector.kube.cluster import Cluster


def add_parser(sub: Any) -> None:
    diff = sub.add_parser(
        "diff",
        help="preview what a template edit would change in each meshed workload's sidecar",
        description="Render the pod template of every workload that asks for mesher (a bare "
        "pod: the pod, less what injection added) with the webhook's own code under the live "
        "template and under --template-file, and show what would change in what injection "
        "adds (image, command, env, ports, resources, files, volumes, app env). Exit 0: no "
        "workload would be denied; 1: the new template would deny one; 2: an error (an "
        "invalid new template, no cluster, forbidden, an invalid live template).",
    )
    diff.add_argument(
        "--template-file",
        type=Path,
        required=True,
        help="the new template: a template file (the default template; the live named ones "
        "stay), a folder of NAME.yaml templates or a manifest of the template ConfigMap "
        "(every template: a named one it lacks is gone)",
    )
    cluster.scope_arguments(diff)
    diff.add_argument("-o", "--output", choices=["text", "json"], default="text")


class NewTemplates(NamedTuple):
    templates: Templates
    whole: bool  # every template (a folder, a ConfigMap manifest), else the default only
    source: str


def read_new(path: Path, *, key: str) -> NewTemplates:
    """--template-file, checked as a reload checks it: a folder as `serve --template-file`
    reads it, a ConfigMap manifest's data as the injectors read the ConfigMap, any other
    file as the default template."""
    if path.is_dir():
        return NewTemplates(read_templates(path), True, f"folder {path}")
    text = read_template_text(path)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        document = None  # not YAML: the template's own check says where
    if isinstance(document, dict) and document.get("kind") == "ConfigMap":
        data = document.get("data")
        templates = templates_of(
            data if isinstance(data, dict) else {},
            source=str(path),
            key=key,
            where=lambda k: f"{path} key {k}",
        )
        return NewTemplates(templates, True, f"configmap manifest {path}")
    templates = templates_of({key: text}, source=str(path), key=key, where=lambda _: str(path))
    return NewTemplates(templates, False, f"file {path}")


def run_diff(args: argparse.Namespace) -> int:
    try:
        new = read_new(args.template_file, key=TEMPLATE_KEY)
    except CliError as exc:
        raise cluster.ClusterError(str(exc)) from exc
    if new.templates.problems or new.templates.default is None:
        for file, problem in new.templates.problems.items():
            print(f"mesher-injector diff: error: {file}: {problem}", file=sys.stderr)
        return cluster.EXIT_ERROR
    default = new.templates.default

    async def body(kube: Cluster, ref: ConfigMapRef) -> int:
        try:
            live = await cluster.survey(kube, args, ref)
        except Unhealthy as exc:
            raise cluster.ClusterError(str(exc)) from exc
        named = new.templates.named if new.whole else live.named
        excluded = live.excluded_namespaces
        live_decider = decider_for(live.template, named=live.named, excluded_namespaces=excluded)
        new_decider = decider_for(default, named=named, excluded_namespaces=excluded)
        previews: list[tuple[Workload, Preview]] = []
        for workload in live.found:
            doc = await _read(kube, workload)
            found = (
                preview(
                    doc,
                    live=live_decider,
                    new=new_decider,
                    sidecar_names=live.sidecar_names,
                    label=workload.kubectl_name,
                )
                if doc is not None
                else Preview("not-compared", "", why="it is gone (deleted since it was listed)")
            )
            previews.append((workload, found))
        configmap = f"{ref.namespace}/{ref.name}"
        if args.output == "json":
            report = _report(configmap, live.template, default, new.source, previews)
            print(json.dumps(report, indent=2))
        else:
            _print(configmap, live.template, default, new.source, previews)
        denied = any(p.verdict == "denied" for _, p in previews)
        return cluster.EXIT_ATTENTION if denied else cluster.EXIT_OK

    return cluster.run(args, body)


async def _read(kube: Cluster, workload: Workload) -> Mapping[str, Any] | None:
    """The workload's object (a kind whose pods are not previewed: its kind alone); None
    when it is gone."""
    from kubernetes_asyncio.client.exceptions import ApiException

    if workload.kind not in POD_KINDS:
        return {"kind": workload.kind}
    try:
        return await kube.read(workload)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _heading(workload: Workload, found: Preview) -> str:
    named = found.template and found.template != DEFAULT_TEMPLATE_NAME
    return workload.kubectl_name + (f" (template {found.template})" if named else "")


def _print(
    configmap: str,
    live: Template,
    new: Template,
    source: str,
    previews: list[tuple[Workload, Preview]],
) -> None:
    print(f"live: configmap {configmap}, revision {live.revision}, version {_version(live)}")
    print(f"new:  {source}, revision {new.revision}, version {_version(new)}")
    for workload, found in previews:
        sys.stdout.write(render_block(_heading(workload, found), found))
    if not previews:
        print("no pod asks for mesher here")
    print(summary(p for _, p in previews))


def _version(template: Template) -> str:
    return template.version or "(none)"


def _report(
    configmap: str,
    live: Template,
    new: Template,
    source: str,
    previews: list[tuple[Workload, Preview]],
) -> dict[str, Any]:
    return {
        "template": {
            "configmap": configmap,
            "live": {"revision": live.revision, "version": live.version},
            "new": {"source": source, "revision": new.revision, "version": new.version},
        },
        "workloads": [
            {"namespace": w.namespace, "kind": w.kind, "name": w.name, **p.as_json()}
            for w, p in previews
        ],
        "summary": verdicts(p for _, p in previews),
    }
