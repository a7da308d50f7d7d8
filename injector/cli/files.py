"""The commands on local files, with no server and no cluster: `inject` (manual
injection), `check-template` and `certs`."""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from injector.cli import cluster
from injector.cli.flags import CliError, check_dns_label, check_dns_name, check_secret_name
from injector.core.manual import ManualInjectionError, inject_documents
from injector.core.names import (
    DEFAULT_CONFIGMAP,
    DEFAULT_TEMPLATE_NAME,
    INJECTOR_NAMESPACE,
    INJECTOR_SERVICE,
    TEMPLATE_KEY,
    TEMPLATE_SUFFIX,
    TLS_SECRET,
)
from injector.core.settings import DEFAULT_TEMPLATE_FILE
from injector.core.sidecar import sample_context
from injector.core.store import TemplateSet
from injector.core.template import Template, TemplateError, load_template
from injector.core.template_review import risky_images
from injector.web.template_file import template_files


def add_parsers(sub: Any) -> None:
    inject = sub.add_parser(
        "inject",
        help="inject the sidecar into manifests (manual injection)",
        description="Inject the mesher sidecar into the Pods and pod templates (Deployment, "
        "StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, List) of a YAML text, with the "
        "webhook's own decision; other documents pass through. One line per pod on stderr; "
        "a denial exits 1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    inject.add_argument("-f", "--filename", required=True, help="manifest file, or - for stdin")
    inject.add_argument(
        "--template-file",
        type=Path,
        help="the template, or a folder of NAME.yaml templates (default: the live template "
        "ConfigMap of the current context when the cluster answers, else the embedded "
        "default; stderr says which)",
    )
    inject.add_argument(
        "--configmap",
        default=DEFAULT_CONFIGMAP,
        help="NAMESPACE/NAME of the live template ConfigMap",
    )
    inject.add_argument(
        "--kube-api-server", default="", help="API server URL (default: the kubeconfig)"
    )
    inject.add_argument("-o", "--output", help="write here instead of stdout")
    check = sub.add_parser(
        "check-template",
        help="validate a template and show what it renders",
        description="Validate a template exactly as a reload does and print what each "
        "discovery type renders for a sample pod, and warn about images that float "
        "(latest, or no tag). FILE - reads standard input (e.g. kubectl "
        "get configmap ... -o jsonpath='{.data.template\\.yaml}' | mesher-injector "
        "check-template -).",
    )
    check.add_argument(
        "file",
        nargs="?",
        help="the template file, a folder of NAME.yaml templates, or - for standard input "
        "(default: the embedded template)",
    )
    certs = sub.add_parser(
        "certs",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Write ca.crt, tls.crt, tls.key, secret.yaml (mode 0600) and cabundle "
        "for the webhook Service into --output-dir.",
        help="create a CA and a serving cert for the webhook Service, the TLS Secret and caBundle",
    )
    certs.add_argument("--service", default=INJECTOR_SERVICE, help="the webhook Service")
    certs.add_argument("--namespace", default=INJECTOR_NAMESPACE, help="the Service's namespace")
    certs.add_argument("--secret-name", default=TLS_SECRET, help="the TLS Secret")
    certs.add_argument("--dns", action="append", default=[], help="an extra DNS SAN (repeatable)")
    certs.add_argument("--ip", action="append", default=[], help="an extra IP SAN (repeatable)")
    certs.add_argument("--days", type=int, default=365, help="validity of the CA and the cert")
    certs.add_argument("-o", "--output-dir", type=Path, required=True)
    certs.add_argument("--force", action="store_true", help="overwrite files already there")


def read_template_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read template {path}: {exc}") from exc


class Templates(NamedTuple):
    default: Template | None
    named: Mapping[str, Template]
    problems: dict[str, str]  # each invalid template (its file or key), and why


def templates_of(
    data: Mapping[str, object], *, source: str, key: str, where: Callable[[str], str]
) -> Templates:
    """A ConfigMap's data or a folder's files, checked as a reload checks them; `where`
    names the file or key of an invalid one."""
    templates = TemplateSet()
    problems: dict[str, str] = {}
    for reload in templates.offer_data(data, source=source, default_key=key):
        if reload.result == "rejected":
            default = reload.template == DEFAULT_TEMPLATE_NAME
            problems[where(key if default else reload.template + TEMPLATE_SUFFIX)] = reload.error
    return Templates(templates.template, templates.named, problems)


def read_templates(path: Path) -> Templates:
    """A template file, or a folder of NAME.yaml files (template.yaml the default), found,
    named and checked as `serve --template-source file` finds, names and checks them."""
    files = template_files(path)
    files.setdefault(TEMPLATE_KEY, path / TEMPLATE_KEY)  # none in the folder: reading says so
    texts = {key: read_template_text(file) for key, file in files.items()}
    return templates_of(texts, source=str(path), key=TEMPLATE_KEY, where=lambda k: str(files[k]))


def _inject_templates(args: argparse.Namespace) -> tuple[Templates, str]:
    """The templates `inject` uses, and where they come from: --template-file; else the
    live ConfigMap of the current context when the cluster answers; else the embedded
    default."""
    if args.template_file is not None:
        return read_templates(args.template_file), f"file {args.template_file}"
    try:
        data, ref = cluster.live_configmap_data(args.configmap, args.kube_api_server)
    except cluster.NoLiveTemplate as exc:
        default = read_templates(DEFAULT_TEMPLATE_FILE)
        return default, f"the embedded default, {DEFAULT_TEMPLATE_FILE} ({exc})"
    configmap = f"configmap {ref.namespace}/{ref.name}"
    live = templates_of(
        data if isinstance(data, dict) else {},
        source=configmap,
        key=ref.key,
        where=lambda key: f"{configmap} key {key}",
    )
    return live, f"{configmap} (the cluster's)"


def run_inject(args: argparse.Namespace) -> int:
    templates, where = _inject_templates(args)
    for file, problem in templates.problems.items():
        if templates.default is None:
            raise CliError(f"{file}: {problem}")
        print(  # a broken named template denies only the pods that ask for it
            f"warning: {file}: {problem}; pods that ask for it are denied", file=sys.stderr
        )
    assert templates.default is not None  # offered first: applied, or a problem above
    print(f"template: {where}, revision {templates.default.revision}", file=sys.stderr)
    source = "<stdin>" if args.filename == "-" else args.filename
    try:
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {args.filename}: {exc}") from exc
    try:
        output, reports = inject_documents(
            text, templates.default, named=templates.named, source=source
        )
    except ManualInjectionError as exc:
        raise CliError(str(exc)) from exc
    for report in reports:
        o = report.outcome
        print(f"{report.where}: {o.decision} ({o.reason})", file=sys.stderr)
        for warning in o.warnings:
            print(f"  warning: {warning}", file=sys.stderr)
    if args.output:
        try:
            Path(args.output).write_text(output)
        except OSError as exc:
            raise CliError(f"cannot write {args.output}: {exc}") from exc
    else:
        sys.stdout.write(output)
    return 0


def run_check_template(args: argparse.Namespace) -> int:
    """Every template named (stdin, a file, or each of a folder's): what it renders, its
    warnings on stderr; exit 1 if any is invalid."""
    if args.file == "-":
        try:
            checked = {"<stdin>": load_template(sys.stdin.read())}
        except TemplateError as exc:
            raise CliError(f"<stdin>: {exc}") from exc
        problems: dict[str, str] = {}
    else:
        path = Path(args.file) if args.file else DEFAULT_TEMPLATE_FILE
        files = template_files(path)
        templates = read_templates(path)
        found = {
            TEMPLATE_KEY: templates.default,
            **{f"{n}.yaml": t for n, t in templates.named.items()},
        }
        checked = {str(files.get(key, path)): t for key, t in found.items() if t is not None}
        problems = templates.problems
    for name, template in checked.items():
        _show(name, template)
    for file, problem in problems.items():
        print(f"mesher-injector check-template: error: {file}: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _show(name: str, template: Template) -> None:
    """A valid template: its facts and each discovery type's render on stdout, its
    floating images on stderr (as the validating webhook warns)."""
    print(f"# template {name}: valid")
    print(f"# revision {template.revision}, version {template.version or '(none)'}")
    print(
        f"# discovery types: {', '.join(template.discovery_types) or '(none)'}; "
        f"default {template.default_discovery or '(none)'}"
    )
    for warning in risky_images(template):
        print(f"warning: {name}: {warning}", file=sys.stderr)
    for discovery_type in template.discovery_types or ("",):
        sidecar = template.render(sample_context(discovery_type))
        rendered = {
            "discoveryType": discovery_type or None,
            "containers": sidecar.containers,
            "initContainers": sidecar.init_containers,
            "volumes": sidecar.volumes,
            "imagePullSecrets": sidecar.image_pull_secrets,
            "appEnv": sidecar.app_env,
        }
        print("---")
        print(yaml.safe_dump(rendered, sort_keys=False), end="")


def run_certs(args: argparse.Namespace) -> int:
    """Write ca.crt, tls.crt, tls.key, secret.yaml and cabundle (base64 CA, for the
    MutatingWebhookConfiguration's clientConfig.caBundle) into --output-dir."""
    from injector.web.tls import issue_certificates, service_dns_names, tls_secret_manifest

    if args.days < 1:
        raise CliError("--days must be at least 1")
    check_dns_label("--service", args.service)
    check_dns_label("--namespace", args.namespace)
    check_secret_name("--secret-name", args.secret_name)
    for name in args.dns:
        check_dns_name("--dns", name)
    out: Path = args.output_dir
    written = [out / n for n in ("ca.crt", "tls.crt", "tls.key", "secret.yaml", "cabundle")]
    existing = [p.name for p in written if p.exists()]
    if existing and not args.force:
        raise CliError(f"{out} already holds {', '.join(existing)}: pass --force to overwrite them")
    try:
        bundle = issue_certificates(
            dns_names=service_dns_names(args.service, args.namespace) + list(args.dns),
            ip_addresses=list(args.ip),
            days=args.days,
        )
    except ValueError as exc:
        raise CliError(f"cannot issue the certificate: {exc}") from exc
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "ca.crt").write_bytes(bundle.ca_cert)
        (out / "tls.crt").write_bytes(bundle.cert)
        secret = tls_secret_manifest(name=args.secret_name, namespace=args.namespace, bundle=bundle)
        _write_private(out / "tls.key", bundle.key)  # both hold the private key
        _write_private(out / "secret.yaml", yaml.safe_dump(secret, sort_keys=False).encode())
        (out / "cabundle").write_text(base64.b64encode(bundle.ca_cert).decode() + "\n")
    except OSError as exc:
        raise CliError(f"cannot write to {out}: {exc}") from exc
    print(
        f"wrote ca.crt, tls.crt, tls.key, secret.yaml and cabundle to {out} "
        f"for {args.service}.{args.namespace}.svc",
        file=sys.stderr,
    )
    return 0


def _write_private(path: Path, data: bytes) -> None:
    """Written with mode 0600 from the start (an existing file is made 0600 first)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
