"""`mesher-injector serve`: its flags (each also MESHER_INJECTOR_<FLAG>) and the run."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from injector.cli.flags import (
    CliError,
    boolean,
    env_checked,
    env_default,
    one_of,
    port_number,
    positive_bytes,
    positive_seconds,
    seconds,
)
from injector.core import limits
from injector.core.names import TEMPLATE_CONFIGMAP
from injector.core.settings import Settings, env_name
from injector.obs import logs

if TYPE_CHECKING:
    from injector.web.server import OpenRollout, OpenWatch


def add_parser(sub: Any) -> None:
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
        """A flag whose default MESHER_INJECTOR_<FLAG> may set, checked alike."""
        kwargs["default"] = env_default(flag, kwargs.get("default"))
        kwargs["help"] = f"{kwargs.get('help', '')} (env {env_name(flag)})".strip()
        choices = kwargs.pop("choices", None)
        if choices is not None:  # argparse never checks a default against choices
            kwargs["type"] = one_of(*choices)
            kwargs["metavar"] = "{" + ",".join(choices) + "}"
        kwargs["type"] = env_checked(flag, kwargs.get("type", str))
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
    opt(
        "--self-signed",
        nargs="?",
        const="true",
        type=boolean,
        default="false",
        metavar="BOOL",
        help="generate a CA and a serving cert for local use",
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
        f"(namespace: the pod's own; name: {TEMPLATE_CONFIGMAP})",
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
    opt(
        "--rollout-watch",
        type=boolean,
        default="true" if d.rollout_watch else "false",
        metavar="BOOL",
        help="with --template-source configmap: run for the rollout Lease and, while "
        "leading, watch every pod's metadata to export mesher_injector_pods (needs list "
        "and watch on pods cluster-wide, and leases in the ConfigMap's namespace)",
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


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (a few per cent per request), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _open_watch(settings: Settings) -> OpenWatch | None:
    """The ConfigMap watch for --template-source configmap (kubernetes_asyncio, a third
    of the start-up, only then)."""
    if settings.template_source != "configmap":
        return None
    from injector.kube.configmap import open_configmap_source

    return open_configmap_source


def _open_rollout(settings: Settings) -> OpenRollout | None:
    """The rollout watch beside the ConfigMap watch, unless --rollout-watch=false."""
    if settings.template_source != "configmap" or not settings.rollout_watch:
        return None
    from injector.kube.rollout import open_rollout_watch

    return open_rollout_watch


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
        rollout_watch=bool(args.rollout_watch),
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
            runner.run(
                serve(
                    settings,
                    open_watch=_open_watch(settings),
                    open_rollout=_open_rollout(settings),
                )
            )
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot serve: {exc}") from exc
    return 0
