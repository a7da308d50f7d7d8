"""The state both ports share (the template store, metrics, readiness, the serving
certificate) and how its changes are reported: a metric and one log line each."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from injector.core import limits
from injector.core.limits import clip
from injector.core.settings import ConfigMapRef
from injector.core.store import Reload, TemplateSet
from injector.core.watching import Restart
from injector.obs import logs
from injector.obs.metrics import Metrics

if TYPE_CHECKING:
    from injector.web.tls import ReloadingTls, TlsReload


def iso(timestamp: float) -> str:
    """A time as the admin port's answers and the log lines show it (UTC, ISO 8601)."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()


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
        self,
        *,
        excluded_namespaces: frozenset[str],
        template_ref: ConfigMapRef,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = TemplateSet()
        self.metrics = metrics or Metrics()
        self.log = logs.get_logger("mesher_injector")
        self.excluded_namespaces = excluded_namespaces
        self.template_ref = template_ref  # the ConfigMap /validate-template judges
        self.shutting_down = False
        self.tls: ReloadingTls | None = None
        self.metrics.ready.set_function(lambda: 1.0 if self.ready else 0.0)

    @property
    def ready(self) -> bool:
        return self.store.template is not None and not self.shutting_down

    def report_restart(self, restart: Restart, delay: float, *, watch: str = "configmap") -> None:
        """A restart of the template ConfigMap's watch, or (`watch="pods"`) of the rollout
        leader's pod watch."""
        counter = (
            self.metrics.watch_restarts if watch == "configmap" else self.metrics.pod_watch_restarts
        )
        counter.labels(reason=restart.reason).inc()
        log = self.log.info if restart.reason == "stream-ended" else self.log.warning
        log(
            "watch_restart",
            watch=watch,
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

    def report_tls(self, result: TlsReload) -> None:
        """A check of the serving cert and key: reported when it changed or was refused."""
        if result.changed and result.serving is not None:
            self.metrics.tls_reloads.labels(result="applied").inc()
            self.metrics.observe_cert_expiry(result.serving.not_after)
            self.log.info(
                "tls_reload",
                result="applied",
                not_after=iso(result.serving.not_after),
                fingerprint=result.serving.fingerprint,
            )
        elif result.error:
            self.metrics.tls_reloads.labels(result="rejected").inc()
            self.log.warning("tls_reload", result="rejected", error=result.error)
