"""The serving process's lifecycle: the TLS webhook port (injector/web/webhook.py) and
the plain admin port (injector/web/admin.py) over one shared state, the template and
certificate watchers; `start`, then `stop` (drain, then close)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from injector import __version__
from injector.core import limits
from injector.core.names import TEMPLATE_CONFIGMAP
from injector.core.rollout import LiveTemplate, live_templates
from injector.core.settings import ConfigMapRef, Settings
from injector.core.store import Reload, TemplateSet
from injector.core.watching import Restart
from injector.obs.metrics import Metrics
from injector.web.admin import admin_app
from injector.web.guard import listen
from injector.web.state import Injector
from injector.web.template_file import FileSource
from injector.web.tls import CertificateRefused, ReloadingTls, write_self_signed
from injector.web.webhook import webhook_server


class TemplateWatch(Protocol):
    """A watch keeping the store current (kube/configmap.py's ConfigMapSource)."""

    async def run(self) -> None: ...

    async def close(self) -> None: ...


class OpenWatch(Protocol):
    """Opens the ConfigMap watch (kube/configmap.open_configmap_source): `serve` hands
    it over, so the serving process never imports the cluster client itself."""

    async def __call__(
        self,
        *,
        kube_api_server: str,
        ref: ConfigMapRef,
        store: TemplateSet,
        report: Callable[[Reload], None],
        on_restart: Callable[[Restart, float], None],
        read_timeout: float,
        watch_timeout: int,
    ) -> TemplateWatch: ...


class OpenRollout(Protocol):
    """Opens the rollout watch (kube/rollout.open_rollout_watch) in the template
    ConfigMap's namespace, where its Lease lives."""

    async def __call__(
        self,
        *,
        kube_api_server: str,
        namespace: str,
        live: Callable[[], Mapping[str, LiveTemplate]],
        metrics: Metrics,
        on_restart: Callable[[Restart, float], None],
        read_timeout: float,
        watch_timeout: int,
    ) -> TemplateWatch: ...


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace() -> str:
    """The injector's namespace: POD_NAMESPACE, else the service-account file, else ''."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return ""


def _template_ref(settings: Settings, namespace: str) -> ConfigMapRef:
    """The ConfigMap /validate-template judges: the watched one; else the default name in
    the pod's `namespace`, or in any namespace while that is unknown."""
    if settings.template_source == "configmap":
        return ConfigMapRef.parse(settings.configmap, default_namespace=namespace)
    if namespace:
        return ConfigMapRef.parse("", default_namespace=namespace)
    return ConfigMapRef(namespace="", name=TEMPLATE_CONFIGMAP)


async def _every(interval: float, step: Callable[[], None], log: Any) -> None:
    """Run `step` every `interval` seconds; a failing step is logged, never fatal."""
    while True:
        await asyncio.sleep(interval)
        try:
            step()
        except Exception:
            log.exception("background_step_failed", step=getattr(step, "__name__", repr(step)))


class Server:
    """Both listeners and the background watchers; `start` then `stop`."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        open_watch: OpenWatch | None = None,
        open_rollout: OpenRollout | None = None,
    ) -> None:
        """`open_watch` opens the ConfigMap watch for --template-source configmap, and
        `open_rollout` the rollout watch beside it (unless --rollout-watch=false)."""
        self.settings = settings
        self._open_watch = open_watch
        self._open_rollout = open_rollout
        excluded = settings.excluded_namespaces
        namespace = own_namespace()
        if namespace:
            excluded = excluded | {namespace}
        self.injector = Injector(
            excluded_namespaces=excluded,
            template_ref=_template_ref(settings, namespace),
            metrics=metrics,
        )
        self.tls: ReloadingTls | None = None
        self.ca_file: Path | None = None
        self._temp_dir: Path | None = None
        self._runners: list[web.BaseRunner] = []
        self._listener: asyncio.Server | None = None
        self._watch: TemplateWatch | None = None
        self._rollout: TemplateWatch | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0
        self.admin_port = 0

    def _tls_files(self) -> tuple[Path, Path]:
        s = self.settings
        if s.self_signed:
            directory = s.self_signed_dir
            if directory is None:  # a private key: removed again when the server stops
                directory = self._temp_dir = Path(tempfile.mkdtemp(prefix="mesher-injector-"))
            pair = write_self_signed(
                directory,
                dns_names=["localhost"],
                ip_addresses=["127.0.0.1", "::1"],
                now=time.time(),
            )
            self.ca_file = pair.ca
            self.injector.log.info(
                "self_signed_certificate",
                ca_file=str(pair.ca),
                cert_file=str(pair.cert),
                reused=pair.reused,
            )
            return pair.cert, pair.key
        if s.tls_cert is None or s.tls_key is None:
            raise ValueError("TLS needs --tls-cert and --tls-key, or --self-signed")
        return s.tls_cert, s.tls_key

    def _check_tls(self) -> None:
        assert self.tls is not None
        self.injector.report_tls(self.tls.check())

    async def _open_template_source(self) -> Callable[[], Coroutine[Any, Any, None]]:
        """Open the template source (a file is read before `start` returns, so the server
        is ready at once; the ConfigMap's API client is made) and return the loop that
        keeps the template current, for a task to run until `stop`."""
        s = self.settings
        injector = self.injector
        if s.template_source == "file":
            source = FileSource(s.template_file)

            def poll_template_file() -> None:
                for reload in source.poll(injector.store):
                    injector.report_reload(reload)

            poll_template_file()  # two reads of the same bytes before a first load
            if source.read_error is not None:  # never readable: a typo, not an outage
                raise ValueError(f"--template-file {s.template_file}: {source.read_error}")
            await asyncio.sleep(min(s.reload_interval, 0.05))
            poll_template_file()
            return lambda: _every(s.reload_interval, poll_template_file, injector.log)
        if s.template_source == "configmap":
            if self._open_watch is None:
                raise ValueError("--template-source configmap needs the cluster client")
            ref = injector.template_ref
            watcher = self._watch = await self._open_watch(
                kube_api_server=s.kube_api_server,
                ref=ref,
                store=injector.store,
                report=injector.report_reload,
                on_restart=injector.report_restart,
                read_timeout=s.watch_read_timeout,
                watch_timeout=s.watch_timeout,
            )
            injector.log.info("watching_configmap", configmap=ref.describe(), key=ref.key)
            if s.rollout_watch and self._open_rollout is not None:
                store = injector.store
                rollout = self._rollout = await self._open_rollout(
                    kube_api_server=s.kube_api_server,
                    namespace=ref.namespace,
                    live=lambda: live_templates(store),
                    metrics=injector.metrics,
                    on_restart=functools.partial(injector.report_restart, watch="pods"),
                    read_timeout=s.watch_read_timeout,
                    watch_timeout=s.watch_timeout,
                )
                self._tasks.append(asyncio.create_task(rollout.run()))
            return watcher.run
        raise ValueError(f"unknown template source {s.template_source!r}")

    async def start(self) -> None:
        """Listen on both ports with the template loaded; on failure, undo what was done
        (a self-signed folder of our own is removed) and raise."""
        try:
            await self._start()
        except BaseException:
            await self._close()
            raise

    async def _start(self) -> None:
        s = self.settings
        cert, key = self._tls_files()
        try:
            self.tls = ReloadingTls(cert, key)
        except CertificateRefused as exc:
            raise ValueError(f"{cert}: {exc}") from exc
        self.injector.tls = self.tls
        self.injector.metrics.observe_cert_expiry(self.tls.serving.not_after)
        watch_template = await self._open_template_source()
        self._tasks.append(asyncio.create_task(watch_template()))
        log = self.injector.log
        self._tasks.append(asyncio.create_task(_every(s.reload_interval, self._check_tls, log)))

        admin = web.AppRunner(admin_app(self.injector), access_log=None)
        await admin.setup()
        self._runners.append(admin)
        await web.TCPSite(admin, s.host, s.admin_port).start()
        webhooks = web.ServerRunner(
            webhook_server(
                self.injector,
                max_body_bytes=s.max_body_bytes,
                max_body_bytes_in_flight=s.max_body_bytes_in_flight,
                read_timeout=s.read_timeout,
                keepalive_timeout=s.keepalive_timeout,
            ),
            shutdown_timeout=s.shutdown_timeout,
        )
        await webhooks.setup()
        self._runners.append(webhooks)
        assert webhooks.server is not None
        self._listener = await listen(
            webhooks.server,
            host=s.host,
            port=s.port,
            ssl_context=self.tls.listening,
            read_timeout=s.read_timeout,
            handshake_timeout=limits.TLS_HANDSHAKE_TIMEOUT_S,
        )
        self.admin_port = admin.addresses[0][1]
        self.port = self._listener.sockets[0].getsockname()[1]
        self.injector.log.info(
            "serving",
            version=__version__,
            port=self.port,
            admin_port=self.admin_port,
            template_source=s.template_source,
            ready=self.injector.ready,
        )

    async def stop(self) -> None:
        """Not ready first, then drain, then finish in-flight requests and close."""
        self.injector.shutting_down = True
        if self.settings.drain_seconds:
            await asyncio.sleep(self.settings.drain_seconds)
        await self._close()
        self.injector.log.info("stopped")

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._rollout is not None:  # hand the Lease over before the long part
            await self._rollout.close()
        if self._listener is not None:
            self._listener.close()  # no new connections; the runner finishes the open ones
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self._watch is not None:
            await self._watch.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


async def serve(
    settings: Settings,
    *,
    open_watch: OpenWatch | None = None,
    open_rollout: OpenRollout | None = None,
) -> None:
    server = Server(settings, open_watch=open_watch, open_rollout=open_rollout)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.injector.log.info("shutting_down", drain_seconds=settings.drain_seconds)
    await server.stop()
