"""The aiohttp shell: POST /mutate on the TLS port; /metrics, /healthz, /readyz and
/template on the plain admin port. No decision logic lives here.

The API server's usual POST /mutate is answered on the fast path (`FastMutate`, called
by guard.ConnectionGuard for requests of the shape in fastpath.py), everything else by
aiohttp's handler (`WebhookHandler`); both decide with `_answer` and report with
`_record`, so an admission's answer, metrics and log line do not depend on the path."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from injector import __version__, limits, logs
from injector.admission import Answer, Outcome, Review, answer, pod_facts
from injector.fastpath import response as fast_response
from injector.guard import ConnectionGuard, GuardedSite, quiet_server_logger
from injector.limits import clip
from injector.metrics import Metrics
from injector.settings import DEFAULT_CONFIGMAP_NAME, ConfigMapRef, Settings, own_namespace
from injector.sources.file import FileSource
from injector.store import Reload, TemplateSet, TemplateStore
from injector.template import DEFAULT_TEMPLATE_NAME
from injector.template_review import review_template
from injector.tls import CertificateRefused, ReloadingTls, write_self_signed

if TYPE_CHECKING:  # kubernetes_asyncio is imported only to watch a ConfigMap
    from kubernetes_asyncio.client import ApiClient

    from injector.sources.configmap import Restart


class Injector:
    """The state both apps share: the template store, metrics, readiness."""

    __slots__ = (
        "excluded_namespaces",
        "log",
        "metrics",
        "shutting_down",
        "store",
        "template_ref",
        "tls",
    )

    def __init__(
        self, *, excluded_namespaces: frozenset[str], metrics: Metrics | None = None
    ) -> None:
        self.store = TemplateSet()
        self.metrics = metrics or Metrics()
        self.log = logs.get_logger("mesher_injector")
        self.excluded_namespaces = excluded_namespaces
        self.shutting_down = False
        self.tls: ReloadingTls | None = None
        # The ConfigMap /validate-template judges (any namespace until the server knows).
        self.template_ref = ConfigMapRef(namespace="", name=DEFAULT_CONFIGMAP_NAME)
        self.metrics.ready.set_function(lambda: 1.0 if self.ready else 0.0)

    @property
    def ready(self) -> bool:
        return self.store.template is not None and not self.shutting_down

    def report_restart(self, restart: Restart, delay: float) -> None:
        self.metrics.watch_restarts.labels(reason=restart.reason).inc()
        log = self.log.info if restart.reason == "stream-ended" else self.log.warning
        log(
            "watch_restart",
            reason=restart.reason,
            relist=restart.relist,
            retry_in_s=round(delay, 3),
            detail=clip(restart.detail, limits.MAX_LOG_FIELD_CHARS),
        )

    def report_reload(self, reload: Reload) -> None:
        store = self.store.stores().get(reload.template)
        self.metrics.observe_reload(reload, store.active if store else None)
        fields = {
            "template": reload.template,
            "result": reload.result,
            "source": reload.source,
            "revision": reload.revision,
            "version": reload.version,
            "previous_revision": reload.previous_revision,
        }
        if reload.result in ("rejected", "deleted"):
            self.log.warning("template_reload", error=reload.error, **fields)
        else:
            self.log.info("template_reload", **fields)


INJECTOR = web.AppKey("injector", Injector)


def _refuse(injector: Injector, status: int, reason: str, message: str) -> web.Response:
    """An HTTP error answer (not an admission decision): counted, one short log line."""
    message = clip(message, limits.MAX_MESSAGE_CHARS)  # the same cap as admission's refusals
    injector.metrics.bad_requests.labels(reason=reason).inc()
    injector.log.warning("bad_request", status=status, reason=reason, error=message)
    return web.json_response({"error": message}, status=status)


async def read_body(
    request: web.BaseRequest, injector: Injector, read_timeout: float
) -> bytes | web.Response:
    """The body of a POST to the webhook, or the HTTP error answer for it (bounded in
    size and time, never inflated)."""
    headers = request.headers
    encoding = (headers.get("Content-Encoding") or "").strip().lower()
    if encoding not in ("", "identity"):
        # Never inflated: the API server does not compress request bodies, and a small
        # compressed body can inflate to gigabytes.
        return _refuse(
            injector,
            415,
            "content-encoding",
            f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed",
        )
    # What the API server sends, compared as it is; anything else (parameters, case) is
    # parsed by aiohttp, which costs more than the rest of reading the body.
    if headers.get("Content-Type") != "application/json" and (
        request.content_type != "application/json"
    ):
        return _refuse(
            injector,
            400,
            "content-type",
            f"Content-Type must be application/json, got {request.content_type!r}",
        )
    try:
        if request.content.is_eof():  # all there (the usual case): no timer to arm
            return await request.read()
        async with asyncio.timeout(read_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        return _refuse(injector, 413, "too-large", exc.text or "request body too large")
    except TimeoutError:
        return _refuse(injector, 408, "body-timeout", "the request body did not arrive in time")
    except (ConnectionError, aiohttp.ClientError) as exc:
        _client_gone(injector, str(exc) or type(exc).__name__)
        raise web.HTTPBadRequest() from None  # nobody reads it: the connection is gone


def _client_gone(injector: Injector, error: str) -> None:
    injector.metrics.bad_requests.labels(reason="client-disconnected").inc()
    injector.log.warning("client_disconnected", error=clip(error, 200))


def _answer(raw: bytes, injector: Injector) -> Answer:
    store = injector.store
    return answer(
        raw,
        store.template,
        named=store.named,
        excluded_namespaces=injector.excluded_namespaces,
    )


async def mutate(raw: bytes, injector: Injector) -> web.StreamResponse:
    """The MutatingWebhook: one admission decision for a request body."""
    started = time.perf_counter()
    result = _answer(raw, injector)
    review, outcome = result.review, result.outcome
    if outcome is None or review is None:
        return _refuse(injector, result.status, result.refusal, result.error)
    _record(injector, review, outcome, result.failure, started)
    return web.Response(body=result.body, content_type="application/json")


class FastMutate:
    """The webhook's fast path (injector/fastpath.py, guard.FastPath)."""

    __slots__ = ("injector",)

    def __init__(self, injector: Injector) -> None:
        self.injector = injector

    def answer(self, request: bytes, body_start: int) -> bytes | None:
        """For one whole POST /mutate of the usual shape, the answer when its body gets a
        decision (counted and logged as `mutate` does); None for aiohttp to handle it (a
        refusal included: aiohttp's path answers, counts and logs it as before)."""
        injector = self.injector
        try:
            started = time.perf_counter()
            result = _answer(request[body_start:], injector)
            review, outcome = result.review, result.outcome
            if outcome is None or review is None:
                return None
            _record(injector, review, outcome, result.failure, started, fast=True)
            return fast_response(result.body)
        except Exception:  # never here by design; aiohttp's path then answers
            injector.log.exception("fast_path_failed")
            return None

    def abandoned(self) -> None:
        _client_gone(self.injector, "the connection closed before the request body was in")


def _record(
    injector: Injector,
    review: Review,
    outcome: Outcome,
    failure: Exception | None,
    started: float,
    *,
    fast: bool = False,
) -> None:
    """A decision's metrics and its one log line (`failure`: the bug behind an
    internal-error denial)."""
    if failure is not None:
        injector.log.error("decision_failed", uid=review.uid, exc_info=failure)
    elapsed = time.perf_counter() - started
    injector.metrics.observe_decision(outcome, elapsed, fast=fast)
    facts = pod_facts(review.request)
    fields = {
        "uid": review.uid,
        "namespace": facts.namespace,
        "pod": facts.name,
        "owner": facts.owner,
        "decision": outcome.decision,
        "reason": outcome.reason,
        "discovery_type": clip(outcome.discovery_type, limits.MAX_LOG_FIELD_CHARS),
        "ports": outcome.service_ports,
        "template": outcome.template,
        "template_revision": outcome.revision,
        "dry_run": review.request.get("dryRun") is True,
        "warnings": len(outcome.warnings),
        "duration_ms": int(elapsed * 1e6 + 0.5) / 1000,  # round(x, 3) costs 1 us here
    }
    level = "info"
    if outcome.decision == "denied":
        fields["message"] = outcome.message
        level = "warning"  # a pod was refused: someone must look
    logs.info(injector.log, "admission", fields, level=level)


async def validate_template(raw: bytes, injector: Injector) -> web.StreamResponse:
    """The ValidatingWebhook for the template ConfigMap: a reload's validation, at apply."""
    ref = injector.template_ref
    result = review_template(raw, name=ref.name, namespace=ref.namespace, key=ref.key)
    if result.status != 200:
        return _refuse(injector, result.status, "not-an-admission-review", result.error)
    injector.metrics.template_reviews.labels(allowed=str(result.allowed).lower()).inc()
    log = injector.log.info if result.allowed else injector.log.warning
    log(
        "template_review",
        uid=result.uid,
        operation=result.operation,
        allowed=result.allowed,
        problems=result.problems,
        warnings=result.warnings,
        revision=result.revision,
    )
    return web.Response(body=result.body, content_type="application/json")


Webhook = Callable[[bytes, Injector], Coroutine[Any, Any, web.StreamResponse]]
# The TLS port's whole surface: POST only, each path one webhook.
WEBHOOKS: dict[str, Webhook] = {"/mutate": mutate, "/validate-template": validate_template}


class WebhookHandler:
    """The TLS port's request handler, on aiohttp's low-level server: two fixed paths
    need no router, application or middleware chain (a few per cent of every
    admission's CPU, bench/RESULTS.md)."""

    __slots__ = ("injector", "read_timeout")

    def __init__(self, injector: Injector, *, read_timeout: float) -> None:
        self.injector = injector
        self.read_timeout = read_timeout

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        webhook = WEBHOOKS.get(request.path)
        if webhook is None:
            return web.json_response(
                {"error": f"no webhook at {clip(request.path, 100)}"}, status=404
            )
        if request.method != "POST":
            return web.json_response(
                {"error": f"{request.path} takes POST"}, status=405, headers={"Allow": "POST"}
            )
        guard = ConnectionGuard.of(request)
        if guard is not None:
            guard.headers_received()  # no header deadline while a webhook runs
        try:
            raw = await read_body(request, self.injector, self.read_timeout)
            if isinstance(raw, web.Response):
                return raw
            return await webhook(raw, self.injector)
        finally:
            if guard is not None:
                guard.request_done()


def webhook_server(
    injector: Injector,
    *,
    max_body_bytes: int = limits.MAX_BODY_BYTES,
    read_timeout: float = limits.READ_TIMEOUT_S,
    **handler_options: Any,
) -> web.Server:
    """aiohttp's low-level server for the TLS port (must be made in a running loop);
    `handler_options` go to each connection's aiohttp RequestHandler."""
    loop = asyncio.get_running_loop()

    def make_request(
        message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> web.BaseRequest:
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=max_body_bytes
        )

    return web.Server(
        WebhookHandler(injector, read_timeout=read_timeout),
        request_factory=make_request,
        **handler_options,
    )


async def healthz(request: web.Request) -> web.StreamResponse:
    """Alive; and, for humans checking a rotation, the serving certificate in use."""
    tls = request.app[INJECTOR].tls
    serving = tls.serving if tls is not None else None
    body: dict[str, Any] = {"status": "ok"}
    if serving is not None:
        body["tls"] = {
            "not_before": _iso(serving.not_before),
            "not_after": _iso(serving.not_after),
            "sha256_fingerprint": serving.fingerprint,
        }
    return web.json_response(body)


async def readyz(request: web.Request) -> web.StreamResponse:
    injector = request.app[INJECTOR]
    if injector.ready:
        return web.json_response({"status": "ready"})
    why = "shutting down" if injector.shutting_down else "no template loaded"
    return web.json_response({"status": "not ready", "reason": why}, status=503)


async def metrics_handler(request: web.Request) -> web.StreamResponse:
    injector = request.app[INJECTOR]
    return web.Response(
        body=generate_latest(injector.metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()


def template_status(injector: Injector) -> dict[str, Any]:
    """The default template's fields at the top level; `templates`: every template's."""
    templates = {name: _store_status(store) for name, store in injector.store.stores().items()}
    return {
        "ready": injector.ready,
        **templates[DEFAULT_TEMPLATE_NAME],
        "templates": templates,
    }


def _store_status(store: TemplateStore) -> dict[str, Any]:
    active = store.active
    error = store.last_error
    return {
        "revision": active.template.revision if active else None,
        "version": active.template.version if active else None,
        "source": active.source if active else None,
        "loaded_at": _iso(active.loaded_at) if active else None,
        "discovery_types": list(active.template.discovery_types) if active else [],
        "default_discovery_type": active.template.default_discovery if active else None,
        "native_sidecars": active.template.native_sidecars if active else None,
        "last_error": (
            {"source": error.source, "error": error.error, "at": _iso(error.at)} if error else None
        ),
    }


async def template_handler(request: web.Request) -> web.StreamResponse:
    return web.json_response(template_status(request.app[INJECTOR]))


def admin_app(injector: Injector) -> web.Application:
    app = web.Application()
    app[INJECTOR] = injector
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/template", template_handler)
    return app


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

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        excluded = settings.excluded_namespaces
        namespace = own_namespace()
        if namespace:
            excluded = excluded | {namespace}
        self.injector = Injector(excluded_namespaces=excluded, metrics=metrics)
        if settings.template_source == "configmap":
            self.injector.template_ref = ConfigMapRef.parse(settings.configmap)
        elif namespace:
            self.injector.template_ref = ConfigMapRef.parse("", default_namespace=namespace)
        self.tls: ReloadingTls | None = None
        self.ca_file: Path | None = None
        self._temp_dir: Path | None = None
        self._runners: list[web.BaseRunner] = []
        self._api: ApiClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0
        self.admin_port = 0

    def _tls_files(self) -> tuple[Path, Path]:
        s = self.settings
        if s.self_signed:
            directory = s.self_signed_dir
            if directory is None:  # a private key: removed again when the server stops
                directory = self._temp_dir = Path(tempfile.mkdtemp(prefix="mesher-injector-"))
            ca, cert, key = write_self_signed(
                directory, dns_names=["localhost"], ip_addresses=["127.0.0.1", "::1"]
            )
            self.ca_file = ca
            self.injector.log.info("self_signed_certificate", ca_file=str(ca), cert_file=str(cert))
            return cert, key
        if s.tls_cert is None or s.tls_key is None:
            raise ValueError("TLS needs --tls-cert and --tls-key, or --self-signed")
        return s.tls_cert, s.tls_key

    def _check_tls(self) -> None:
        assert self.tls is not None
        result = self.tls.check()
        if result.changed and result.serving is not None:
            self.injector.metrics.tls_reloads.labels(result="applied").inc()
            self.injector.metrics.observe_serving(result.serving)
            self.injector.log.info(
                "tls_reload",
                result="applied",
                not_after=_iso(result.serving.not_after),
                fingerprint=result.serving.fingerprint,
            )
        elif result.error:
            self.injector.metrics.tls_reloads.labels(result="rejected").inc()
            self.injector.log.warning("tls_reload", result="rejected", error=result.error)

    async def _template_watcher(self) -> Coroutine[Any, Any, None]:
        s = self.settings
        injector = self.injector
        if s.template_source == "file":
            source = FileSource(s.template_file)

            def poll_template_file() -> None:
                for reload in source.poll(injector.store):
                    injector.report_reload(reload)

            poll_template_file()  # two reads of the same bytes before a first load
            await asyncio.sleep(min(s.reload_interval, 0.05))
            poll_template_file()
            return _every(s.reload_interval, poll_template_file, injector.log)
        if s.template_source == "configmap":
            from injector.sources.configmap import ConfigMapSource, api_client_for

            ref = injector.template_ref
            self._api = await api_client_for(s.kube_api_server)
            watcher = ConfigMapSource(
                api=self._api,
                ref=ref,
                store=injector.store,
                report=injector.report_reload,
                on_restart=injector.report_restart,
                read_timeout=s.watch_read_timeout,
                watch_timeout=s.watch_timeout,
            )
            injector.log.info("watching_configmap", configmap=ref.describe(), key=ref.key)
            return watcher.run()
        raise ValueError(f"unknown template source {s.template_source!r}")

    async def start(self) -> None:
        s = self.settings
        cert, key = self._tls_files()
        try:
            self.tls = ReloadingTls(cert, key)
        except CertificateRefused as exc:
            raise ValueError(f"{cert}: {exc}") from exc
        self.injector.tls = self.tls
        self.injector.metrics.observe_serving(self.tls.serving)
        self._tasks.append(asyncio.create_task(await self._template_watcher()))
        log = self.injector.log
        self._tasks.append(asyncio.create_task(_every(s.reload_interval, self._check_tls, log)))
        self._tasks.append(asyncio.create_task(_every(0.2, logs.flush, log)))

        admin = web.AppRunner(admin_app(self.injector), access_log=None)
        hook = web.ServerRunner(
            webhook_server(
                self.injector,
                max_body_bytes=s.max_body_bytes,
                read_timeout=s.read_timeout,
                access_log=None,
                keepalive_timeout=s.keepalive_timeout,
                auto_decompress=False,  # never inflate a request body (415 instead)
                lingering_time=0,  # a body left unread (413, 415, 408) is not waited for: close
                logger=quiet_server_logger(),
            ),
            shutdown_timeout=s.shutdown_timeout,
        )
        for runner in (admin, hook):
            await runner.setup()
            self._runners.append(runner)
        await web.TCPSite(admin, s.host, s.admin_port).start()
        await GuardedSite(
            hook,
            s.host,
            s.port,
            ssl_context=self.tls.listening,
            header_timeout=s.read_timeout,
            handshake_timeout=limits.TLS_HANDSHAKE_TIMEOUT_S,
            fast=FastMutate(self.injector),
            max_body=s.max_body_bytes,
        ).start()
        self.admin_port = admin.addresses[0][1]
        self.port = hook.addresses[0][1]
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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self._api is not None:
            await self._api.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
        self.injector.log.info("stopped")
        logs.flush()


async def serve(settings: Settings) -> None:
    server = Server(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.injector.log.info("shutting_down", drain_seconds=settings.drain_seconds)
    await server.stop()
