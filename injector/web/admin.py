"""The plain admin port: /healthz, /readyz, /metrics and /template, read from the shared
state."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from injector.core.names import DEFAULT_TEMPLATE_NAME
from injector.core.store import TemplateStore
from injector.web.state import Injector, iso

INJECTOR = web.AppKey("injector", Injector)


async def healthz(request: web.Request) -> web.StreamResponse:
    """Alive; and, for humans checking a rotation, the serving certificate in use."""
    tls = request.app[INJECTOR].tls
    serving = tls.serving if tls is not None else None
    body: dict[str, Any] = {"status": "ok"}
    if serving is not None:
        body["tls"] = {
            "not_before": iso(serving.not_before),
            "not_after": iso(serving.not_after),
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
        "loaded_at": iso(active.loaded_at) if active else None,
        "discovery_types": list(active.template.discovery_types) if active else [],
        "default_discovery_type": active.template.default_discovery if active else None,
        "native_sidecars": active.template.native_sidecars if active else None,
        "last_error": (
            {"source": error.source, "error": error.error, "at": iso(error.at)} if error else None
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
