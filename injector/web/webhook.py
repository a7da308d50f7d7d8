"""The TLS port: POST /mutate and /validate-template on aiohttp's low-level server
(guarded by injector/web/guard.py). Each webhook turns a body into the pure core's
answer, then counts and logs it; no decision logic lives here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from injector.core import limits
from injector.core.limits import clip
from injector.core.outcomes import Outcome
from injector.core.pods import pod_facts
from injector.core.responses import Answer, answer
from injector.core.reviews import Review
from injector.core.template_review import review_template
from injector.web.body import ClientGone, Refusal, check_head, read_body
from injector.web.guard import BodyBudget, ConnectionGuard, quiet_server_logger
from injector.web.state import Injector


def _refuse(
    injector: Injector, refusal: Refusal, *, headers: dict[str, str] | None = None
) -> web.Response:
    """An HTTP error answer (not an admission decision): counted, one short log line."""
    status, reason = refusal.status, refusal.reason
    message = clip(refusal.message, limits.MAX_MESSAGE_CHARS)  # as responses.py clips
    injector.metrics.bad_requests.labels(reason=reason).inc()
    injector.log.warning("bad_request", status=status, reason=reason, error=message)
    return web.json_response({"error": message}, status=status, headers=headers)


def _client_gone(injector: Injector, error: str) -> None:
    injector.metrics.bad_requests.labels(reason="client-disconnected").inc()
    injector.log.warning("client_disconnected", error=clip(error, limits.MAX_ECHO_CHARS))


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
                {"error": f"no webhook at {clip(request.path, limits.MAX_ECHOED_CHARS)}"},
                status=404,
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
