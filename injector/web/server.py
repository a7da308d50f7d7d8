"""The aiohttp shell: POST /mutate and /validate-template on the TLS port (aiohttp's
low-level server, guarded by injector/guard.py); /metrics, /healthz, /readyz and
/template on the plain admin port. No decision logic lives here."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from injector import __version__
from injector.core import limits
from injector.core.limits import clip
from injector.core.names import DEFAULT_TEMPLATE_NAME, TEMPLATE_CONFIGMAP
from injector.core.outcomes import Outcome
from injector.core.pods import pod_facts
from injector.core.responses import Answer, answer
from injector.core.reviews import Review
from injector.core.settings import ConfigMapRef, Settings, own_namespace
from injector.core.store import Reload, TemplateSet, TemplateStore
from injector.core.template_review import review_template
from injector.obs import logs
from injector.obs.metrics import Metrics
from injector.web.guard import BodyBudget, ConnectionGuard, listen, quiet_server_logger
from injector.web.template_file import FileSource
from injector.web.tls import CertificateRefused, ReloadingTls, write_self_signed

if TYPE_CHECKING:  # kubernetes_asyncio is imported only to watch a ConfigMap
    from kubernetes_asyncio.client import ApiClient

    from injector.kube.configmap import Restart


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
        self.template_ref = ConfigMapRef(namespace="", name=TEMPLATE_CONFIGMAP)
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


@dataclass(frozen=True, slots=True)
class Refusal:
    """An HTTP error answer to a request (not an admission decision)."""

    status: int
    reason: str  # the bad_requests metric's label
    message: str


class ClientGone(Exception):
    """The client went away before its request was all in."""


def _refuse(
    injector: Injector, refusal: Refusal, *, headers: dict[str, str] | None = None
) -> web.Response:
    """An HTTP error answer (not an admission decision): counted, one short log line."""
    status, reason = refusal.status, refusal.reason
    message = clip(refusal.message, limits.MAX_MESSAGE_CHARS)  # as admission's refusals
    injector.metrics.bad_requests.labels(reason=reason).inc()
    injector.log.warning("bad_request", status=status, reason=reason, error=message)
    return web.json_response({"error": message}, status=status, headers=headers)


def check_head(request: web.BaseRequest, max_body_bytes: int) -> int | Refusal:
    """How many body bytes a POST to a webhook may bring (its Content-Length, or the
    limit when it is chunked), or the HTTP error answer for its head."""
    encoding = (request.headers.get("Content-Encoding") or "").strip().lower()
    if encoding not in ("", "identity"):
        # Never inflated: the API server does not compress request bodies, and a small
        # compressed body can inflate to gigabytes.
        return Refusal(
            415,
            "content-encoding",
            f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed",
        )
    if request.content_type != "application/json":
        return Refusal(
            400,
            "content-type",
            f"Content-Type must be application/json, got {request.content_type!r}",
        )
    length = request.content_length
    if length is not None and length > max_body_bytes:
        return Refusal(
            413,
            "too-large",
            f"the request body ({length} bytes) is over the limit of {max_body_bytes} bytes",
        )
    return max_body_bytes if length is None else length


async def read_body(request: web.BaseRequest, *, limit: int, deadline: float) -> bytes | Refusal:
    """The body of a POST to a webhook, read by the request's deadline (loop time) and
    never past `limit` bytes (never inflated), or the refusal for it."""
    content = request.content
    try:
        if content.is_eof():  # all of it is here (the usual case): nothing to wait for
            body = await _read_at_most(content, limit)
        else:
            async with asyncio.timeout_at(deadline):
                body = await _read_at_most(content, limit)
    except TimeoutError:
        return Refusal(408, "body-timeout", "the request body did not arrive in time")
    except (ConnectionError, aiohttp.ClientError) as exc:
        raise ClientGone(str(exc) or type(exc).__name__) from None
    if body is None:
        return Refusal(413, "too-large", f"the request body is over the limit of {limit} bytes")
    return body


async def _read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes | None:
    """All of `content`, or None once it is over `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


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
        return _refuse(injector, Refusal(result.status, result.refusal, result.error))
    _record(injector, review, outcome, result.failure, started)
    return web.Response(body=result.body, content_type="application/json")


def _record(
    injector: Injector,
    review: Review,
    outcome: Outcome,
    failure: Exception | None,
    started: float,
) -> None:
    """A decision's metrics and its one log line (`failure`: the bug behind an
    internal-error denial)."""
    if failure is not None:
        injector.log.error("decision_failed", uid=review.uid, exc_info=failure)
    elapsed = time.perf_counter() - started
    injector.metrics.observe_decision(outcome, elapsed)
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
        "duration_ms": round(elapsed * 1000, 3),
    }
    if outcome.decision == "denied":
        # a pod was refused: someone must look
        injector.log.warning("admission", **fields, message=outcome.message)
    else:
        injector.log.info("admission", **fields)


async def validate_template(raw: bytes, injector: Injector) -> web.StreamResponse:
    """The ValidatingWebhook for the template ConfigMap: a reload's validation, at apply."""
    ref = injector.template_ref
    result = review_template(raw, name=ref.name, namespace=ref.namespace, key=ref.key)
    if result.status != 200:
        return _refuse(injector, Refusal(result.status, "not-an-admission-review", result.error))
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
    """The TLS port's request handler, on aiohttp's low-level server (two fixed paths
    need no router or application): bounds the body, then runs the path's webhook."""

    __slots__ = ("budget", "injector", "max_body_bytes", "read_timeout")

    def __init__(
        self, injector: Injector, *, max_body_bytes: int, read_timeout: float, budget: BodyBudget
    ) -> None:
        self.injector = injector
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.budget = budget

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        guard = ConnectionGuard.of(request)
        if guard is not None:
            deadline = guard.headers_received()
        else:
            deadline = asyncio.get_running_loop().time() + self.read_timeout
        try:
            return await self._handle(request, deadline)
        except ClientGone as exc:
            _client_gone(self.injector, str(exc))
            raise web.HTTPBadRequest() from None  # nobody reads it: the connection is gone
        finally:
            if guard is not None:
                guard.request_done()

    async def _handle(self, request: web.BaseRequest, deadline: float) -> web.StreamResponse:
        webhook = WEBHOOKS.get(request.path)
        if webhook is None:
            return web.json_response(
                {"error": f"no webhook at {clip(request.path, 100)}"}, status=404
            )
        if request.method != "POST":
            return web.json_response(
                {"error": f"{request.path} takes POST"}, status=405, headers={"Allow": "POST"}
            )
        injector = self.injector
        size = check_head(request, self.max_body_bytes)
        if isinstance(size, Refusal):
            return _refuse(injector, size)
        if not self.budget.take(size):
            busy = Refusal(
                429,
                "over-budget",
                f"too many request bytes in flight (a {size}-byte body would take them past "
                f"{self.budget.limit}): try again",
            )
            return _refuse(injector, busy, headers={"Retry-After": str(limits.RETRY_AFTER_S)})
        try:
            raw = await read_body(request, limit=size, deadline=deadline)
            if isinstance(raw, Refusal):
                return _refuse(injector, raw)
            return await webhook(raw, injector)
        finally:
            self.budget.give_back(size)


def webhook_server(
    injector: Injector,
    *,
    max_body_bytes: int = limits.MAX_BODY_BYTES,
    max_body_bytes_in_flight: int = limits.MAX_BODY_BYTES_IN_FLIGHT,
    read_timeout: float = limits.READ_TIMEOUT_S,
    keepalive_timeout: float = limits.KEEPALIVE_TIMEOUT_S,
) -> web.Server:
    """aiohttp's low-level server for the TLS port (made in a running loop)."""
    budget = BodyBudget(
        max_body_bytes_in_flight,
        large=limits.LARGE_BODY_BYTES,
        large_share=limits.LARGE_BODIES_SHARE,
    )
    injector.metrics.body_bytes_in_flight.set_function(lambda: budget.in_flight)
    handler = WebhookHandler(
        injector, max_body_bytes=max_body_bytes, read_timeout=read_timeout, budget=budget
    )
    return web.Server(
        handler,
        access_log=None,
        keepalive_timeout=keepalive_timeout,
        auto_decompress=False,  # never inflate a request body (415 instead)
        # A body left unread (413, 415, 429) is read and dropped for up to this long before
        # the connection closes, so the client reads the answer (closing with its bytes
        # unread would reset the connection under the answer); it is never kept.
        lingering_time=limits.LINGER_S,
        read_bufsize=limits.READ_BUFFER_BYTES,
        logger=quiet_server_logger(),
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
        self._listener: asyncio.Server | None = None
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
            self.injector.metrics.observe_cert_expiry(result.serving.not_after)
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
            from injector.kube.configmap import ConfigMapSource, api_client_for

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
        self.injector.metrics.observe_cert_expiry(self.tls.serving.not_after)
        self._tasks.append(asyncio.create_task(await self._template_watcher()))
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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._listener is not None:
            self._listener.close()  # no new connections; the runner finishes the open ones
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self._api is not None:
            await self._api.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
        self.injector.log.info("stopped")


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
