"""`mesher-injector`: serve, inject, check-template.

Bad input gets a one-line error on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from injector import __version__
from injector.cli import cluster
from injector.core import limits
from injector.core.manual import ManualInjectionError, inject_documents
from injector.core.names import INJECTOR_NAMESPACE, TEMPLATE_KEY
from injector.core.settings import DEFAULT_TEMPLATE_FILE, Settings, env_name
from injector.core.sidecar import sample_context
from injector.core.template import Template, TemplateError, load_template
from injector.obs import logs

EXIT_USAGE = 2
EXIT_INVALID = 1
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# A SAN: a DNS name, optionally a wildcard's first label.
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)


class CliError(Exception):
    """A clear message for the user; exits non-zero."""


def _env_default(flag: str, default: Any) -> Any:
    return os.environ.get(env_name(flag), default)


def port_number(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def _seconds(text: str, *, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise argparse.ArgumentTypeError(
            f"{text} seconds: give a number {'>= 0' if zero else '> 0'}"
        )
    return value


def positive_seconds(text: str) -> float:
    """A timeout: more than 0 seconds (0 would close every keep-alive connection at once,
    or time every request out)."""
    return _seconds(text, zero=False)


def seconds(text: str) -> float:
    """A wait that may be none: 0 seconds or more."""
    return _seconds(text, zero=True)


def positive_bytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} bytes: give a number > 0")
    return value


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the admission webhook",
        description="Serve POST /mutate and /validate-template over TLS, and /metrics, "
        "/healthz, /readyz and /template on the plain admin port. Every flag can also be "
        "set as MESHER_INJECTOR_<FLAG>.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = Settings()

    def opt(flag: str, **kwargs: Any) -> None:
        kwargs["default"] = _env_default(flag, kwargs.get("default"))
        kwargs["help"] = f"{kwargs.get('help', '')} (env {env_name(flag)})".strip()
        p.add_argument(flag, **kwargs)

    opt("--host", default=d.host, help="address to listen on")
    opt("--port", type=port_number, default=d.port, help="TLS port for POST /mutate")
    opt(
        "--admin-port",
        type=port_number,
        default=d.admin_port,
        help="plain HTTP port for /metrics etc.",
    )
    opt("--tls-cert", type=Path, help="serving certificate (PEM)")
    opt("--tls-key", type=Path, help="serving key (PEM)")
    p.add_argument(
        "--self-signed",
        action="store_true",
        default=_env_default("--self-signed", "") not in ("", "0", "false", "no"),
        help=f"generate a CA and a serving cert for local use (env {env_name('--self-signed')})",
    )
    opt(
        "--self-signed-dir",
        type=Path,
        help="where --self-signed writes ca.crt (default: a temp dir)",
    )
    opt(
        "--template-source",
        choices=["file", "configmap"],
        default=d.template_source,
        help="where the sidecar template comes from",
    )
    opt("--template-file", type=Path, default=d.template_file, help="template YAML for source file")
    opt(
        "--configmap",
        default=d.configmap,
        help="NAMESPACE/NAME of the template ConfigMap for source configmap "
        "(namespace: the pod's own; name: mesher-sidecar-template)",
    )
    opt(
        "--kube-api-server",
        default=d.kube_api_server,
        help="API server URL (e.g. http://127.0.0.1:8001 from kubectl proxy); "
        "default: in-cluster config, else the kubeconfig",
    )
    opt(
        "--watch-read-timeout",
        type=positive_seconds,
        default=d.watch_read_timeout,
        help="seconds of silence before the ConfigMap watch reconnects",
    )
    opt("--log-format", choices=["json", "console"], default=d.log_format, help="log lines as")
    opt(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=d.log_level,
        help="the lowest level logged",
    )
    opt(
        "--max-body-bytes",
        type=positive_bytes,
        default=d.max_body_bytes,
        help="largest request body accepted",
    )
    opt(
        "--max-body-bytes-in-flight",
        type=positive_bytes,
        default=d.max_body_bytes_in_flight,
        help="request body bytes held at once across all connections; a body past it "
        "gets 429 with Retry-After (at least 4/3 of --max-body-bytes: bodies over 64 KiB "
        "may fill only three quarters)",
    )
    opt(
        "--read-timeout",
        type=positive_seconds,
        default=d.read_timeout,
        help="seconds a client has for a whole request, from its first byte to its last",
    )
    opt(
        "--keepalive-timeout",
        type=positive_seconds,
        default=d.keepalive_timeout,
        help="seconds an idle keep-alive connection stays open",
    )
    opt(
        "--shutdown-timeout",
        type=seconds,
        default=d.shutdown_timeout,
        help="seconds to finish in-flight requests",
    )
    opt(
        "--drain-seconds",
        type=seconds,
        default=d.drain_seconds,
        help="seconds not-ready before closing on SIGTERM",
    )


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers only there
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mesher-injector",
        description="Inject the ServiceComb mesher sidecar into Kubernetes pods.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
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
        default=DEFAULT_TEMPLATE_FILE,
        help="the template, or a folder of NAME.yaml templates",
    )
    inject.add_argument("-o", "--output", help="write here instead of stdout")
    check = sub.add_parser(
        "check-template",
        help="validate a template and show what it renders",
        description="Validate a template exactly as a reload does and print what each "
        "discovery type renders for a sample pod. FILE - reads standard input (e.g. kubectl "
        "get configmap ... -o jsonpath='{.data.template\\.yaml}' | mesher-injector "
        "check-template -).",
    )
    check.add_argument("file", help="the template file, or - for standard input")
    certs = sub.add_parser(
        "certs",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Write ca.crt, tls.crt, tls.key, secret.yaml (mode 0600) and cabundle "
        "for the webhook Service into --output-dir.",
        help="create a CA and a serving cert for the webhook Service, the TLS Secret and caBundle",
    )
    certs.add_argument("--service", default="mesher-injector", help="the webhook Service")
    certs.add_argument("--namespace", default=INJECTOR_NAMESPACE, help="the Service's namespace")
    certs.add_argument("--secret-name", default="mesher-injector-tls", help="the TLS Secret")
    certs.add_argument("--dns", action="append", default=[], help="an extra DNS SAN (repeatable)")
    certs.add_argument("--ip", action="append", default=[], help="an extra IP SAN (repeatable)")
    certs.add_argument("--days", type=int, default=365, help="validity of the CA and the cert")
    certs.add_argument("-o", "--output-dir", type=Path, required=True)
    certs.add_argument("--force", action="store_true", help="overwrite files already there")
    cluster.add_parsers(sub)
    return parser


def _read_template(path: Path) -> Template:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read template {path}: {exc}") from exc
    try:
        return load_template(text)
    except TemplateError as exc:
        raise CliError(f"{path}: {exc}") from exc


def _read_templates(path: Path) -> tuple[Template, Mapping[str, Template]]:
    """A template file, or a folder of NAME.yaml files (template.yaml the default): every
    template must be valid."""
    if not path.is_dir():
        return _read_template(path), {}
    named = {}
    for file in sorted(path.glob("*.yaml")):
        if file.name != TEMPLATE_KEY:
            named[file.name[: -len(".yaml")]] = _read_template(file)
    return _read_template(path / TEMPLATE_KEY), named


def run_inject(args: argparse.Namespace) -> int:
    template, named = _read_templates(args.template_file)
    try:
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {args.filename}: {exc}") from exc
    try:
        output, reports = inject_documents(text, template, named=named)
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
    if args.file == "-":
        try:
            template = load_template(sys.stdin.read())
        except TemplateError as exc:
            raise CliError(f"<stdin>: {exc}") from exc
    else:
        template = _read_template(Path(args.file))
    print(f"# template {args.file}: valid")
    print(f"# revision {template.revision}, version {template.version or '(none)'}")
    print(
        f"# discovery types: {', '.join(template.discovery_types) or '(none)'}; "
        f"default {template.default_discovery or '(none)'}"
    )
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
    return 0


def run_certs(args: argparse.Namespace) -> int:
    """Write ca.crt, tls.crt, tls.key, secret.yaml and cabundle (base64 CA, for the
    MutatingWebhookConfiguration's clientConfig.caBundle) into --output-dir."""
    from injector.web.tls import issue_certificates, service_dns_names, tls_secret_manifest

    if args.days < 1:
        raise CliError("--days must be at least 1")
    for flag, value in (("--service", args.service), ("--namespace", args.namespace)):
        if not _DNS_LABEL.match(value):
            raise CliError(f"{flag} {value!r} is not a DNS label (lowercase letters, digits, -)")
    if not _DNS_SUBDOMAIN.match(args.secret_name):
        raise CliError(f"--secret-name {args.secret_name!r} is not a valid Secret name")
    for name in args.dns:
        if not _DNS_NAME.match(name):
            raise CliError(f"--dns {name!r} is not a DNS name")
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


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (a few per cent per request), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_serve(args: argparse.Namespace) -> int:
    from injector.web.server import serve  # aiohttp only when serving

    settings = Settings(
        host=args.host,
        port=int(args.port),
        admin_port=int(args.admin_port),
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        self_signed=bool(args.self_signed),
        self_signed_dir=Path(args.self_signed_dir) if args.self_signed_dir else None,
        template_source=args.template_source,
        template_file=Path(args.template_file),
        configmap=args.configmap,
        kube_api_server=args.kube_api_server,
        watch_read_timeout=float(args.watch_read_timeout),
        log_format=args.log_format,
        log_level=args.log_level,
        max_body_bytes=int(args.max_body_bytes),
        max_body_bytes_in_flight=int(args.max_body_bytes_in_flight),
        read_timeout=float(args.read_timeout),
        keepalive_timeout=float(args.keepalive_timeout),
        shutdown_timeout=float(args.shutdown_timeout),
        drain_seconds=float(args.drain_seconds),
    )
    large_share = int(settings.max_body_bytes_in_flight * limits.LARGE_BODIES_SHARE)
    if settings.max_body_bytes > large_share:
        raise CliError(
            f"--max-body-bytes-in-flight ({settings.max_body_bytes_in_flight}) leaves "
            f"{large_share} bytes for large bodies (a share is kept for ordinary ones), "
            f"less than --max-body-bytes ({settings.max_body_bytes}): the largest body "
            "could never be read"
        )
    if not settings.self_signed and not (settings.tls_cert and settings.tls_key):
        raise CliError("serve needs --tls-cert and --tls-key, or --self-signed for local use")
    logs.configure(log_format=settings.log_format, level=settings.log_level)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(settings))
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot serve: {exc}") from exc
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # say it with the subcommand's usage, not the top-level one
        sub = _subparsers(parser).get(args.command, parser)
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    handlers = {
        "serve": run_serve,
        "inject": run_inject,
        "check-template": run_check_template,
        "certs": run_certs,
        "status": cluster.run_status,
        "restart": cluster.run_restart,
    }
    try:
        return handlers[args.command](args)
    except CliError as exc:
        print(f"mesher-injector {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except cluster.ClusterError as exc:
        print(f"mesher-injector {args.command}: error: {exc}", file=sys.stderr)
        return cluster.EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head` closed the pipe: not an error of ours
        sys.stderr.close()
        return 0
