"""Prometheus metrics, prefix mesher_injector_. Labels are bounded: never pod names; namespace
names only on the rollout leader's mesher_injector_pods (the namespaces with meshed pods)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from injector import __version__
from injector.core.names import DEFAULT_TEMPLATE_NAME
from injector.core.outcomes import REASONS, Outcome, Reason
from injector.core.rollout import Tally
from injector.core.store import Active, Reload

# Sub-millisecond first: the injector's own work is tens of microseconds; up to the
# webhook timeout (5 s) and beyond, so a p99 near it is visible.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    __slots__ = (
        "_decided",
        "_failing_shown",
        "_rollout_shown",
        "_template_labels",
        "admission_duration",
        "bad_requests",
        "body_bytes_in_flight",
        "decisions",
        "pod_watch_restarts",
        "ready",
        "registry",
        "reload_failing",
        "reloads",
        "rollout_leader",
        "rollout_pods",
        "stale_pod_oldest",
        "template_info",
        "template_loaded_at",
        "template_reviews",
        "tls_cert_expiry",
        "tls_reloads",
        "watch_restarts",
    )

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._template_labels: dict[str, tuple[str, str, str, str]] = {}
        self._failing_shown: set[str] = set()
        self._rollout_shown: tuple[set[tuple[str, str, str]], set[str]] = (set(), set())
        ProcessCollector(registry=r)  # process_*: memory, CPU, open fds, start time
        PlatformCollector(registry=r)  # python_info
        Gauge(
            "mesher_injector_build_info",
            "1, labelled with the running mesher-injector's version.",
            ["version"],
            registry=r,
        ).labels(version=__version__).set(1)
        self.ready = Gauge(
            "mesher_injector_ready",
            "1 while this injector is ready (a valid template, not shutting down).",
            registry=r,
        )
        self.reload_failing = Gauge(
            "mesher_injector_template_reload_failing",
            "1 while the last template reload attempt failed (rejected, or the source is "
            "gone): the last good template keeps serving.",
            ["template"],
            registry=r,
        )
        self.decisions = Counter(
            "mesher_injector_decisions",
            "Admission decisions by decision and reason.",
            ["decision", "reason"],
            registry=r,
        )
        # Every series from the start, at 0; each reason's child kept, as the Prometheus
        # client guidelines advise for a hot path (labels() is a locked lookup each time).
        self._decided = {
            reason: self.decisions.labels(decision=decision, reason=reason)
            for reason, decision in REASONS.items()
        }
        self.admission_duration = Histogram(
            "mesher_injector_admission_duration_seconds",
            "Time to decide and answer one AdmissionReview, in seconds.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bad_requests = Counter(
            "mesher_injector_bad_requests",
            "Requests to the webhook port answered with an HTTP 4xx (429 included), or whose "
            "client went away mid-request, by reason.",
            ["reason"],
            registry=r,
        )
        self.body_bytes_in_flight = Gauge(
            "mesher_injector_request_body_bytes_in_flight",
            "Request body bytes reserved now across all connections: each body's "
            "Content-Length (the limit for a chunked one) while its request is handled "
            "(the budget is --max-body-bytes-in-flight; past it, 429).",
            registry=r,
        )
        self.template_info = Gauge(
            "mesher_injector_template_info",
            "Each active template (the default is named template): 1 for its revision, "
            "version and source.",
            ["template", "revision", "version", "source"],
            registry=r,
        )
        self.template_loaded_at = Gauge(
            "mesher_injector_template_loaded_timestamp_seconds",
            "When each active template was activated (Unix time).",
            ["template"],
            registry=r,
        )
        self.reloads = Counter(
            "mesher_injector_template_reloads",
            "Template reloads by result (applied, rejected, unchanged, deleted).",
            ["result"],
            registry=r,
        )
        for result in ("applied", "rejected", "unchanged", "deleted"):
            self.reloads.labels(result=result)
        self.template_reviews = Counter(
            "mesher_injector_template_reviews",
            "Template ConfigMap edits judged at apply time (/validate-template), by outcome.",
            ["allowed"],
            registry=r,
        )
        self.watch_restarts = Counter(
            "mesher_injector_watch_restarts",
            "Restarts of the template ConfigMap watch, by reason.",
            ["reason"],
            registry=r,
        )
        self.pod_watch_restarts = Counter(
            "mesher_injector_pod_watch_restarts",
            "Restarts of the rollout leader's pod watch, by reason.",
            ["reason"],
            registry=r,
        )
        self.tls_reloads = Counter(
            "mesher_injector_tls_reloads",
            "Serving certificate reloads by result (applied, rejected).",
            ["result"],
            registry=r,
        )
        self.rollout_leader = Gauge(  # registered by track_rollout: only where it runs
            "mesher_injector_rollout_leader",
            "1 while this replica leads the rollout watch (holds its Lease) and exports a "
            "count of pods (its pod list succeeded), else 0; no series where the watch "
            "does not run (--rollout-watch=false, a template file).",
            registry=None,
        )
        self.rollout_pods = Gauge(
            "mesher_injector_pods",
            "Pods that asked for mesher or carry it, by namespace, template and state: "
            "current (the live revision), stale (an older one), missing (no sidecar). "
            "Only the rollout leader has these series.",
            ["namespace", "template", "state"],
            registry=r,
        )
        self.stale_pod_oldest = Gauge(
            "mesher_injector_stale_pod_oldest_seconds",
            "Per template, how long its longest-stale pod has carried an old revision "
            "(since the later of its creation and the new revision taking effect); 0 when "
            "none is stale. Rollout leader only.",
            ["template"],
            registry=r,
        )
        self.tls_cert_expiry = Gauge(
            "mesher_injector_tls_cert_expiry_timestamp_seconds",
            "Expiry of the serving certificate in use (Unix time).",
            registry=r,
        )

    def track_rollout(self) -> None:
        """This replica runs for the rollout Lease: export the leader gauge, at 0."""
        if self.registry.get_sample_value("mesher_injector_rollout_leader") is None:
            self.registry.register(self.rollout_leader)
        self.rollout_leader.set(0)

    def observe_rollout(self, tally: Tally | None, now: float = 0.0) -> None:
        """The leader's count of pods by state (`tally`) at `now`; None once this replica
        does not lead: its series go, so only the leader's are scraped."""
        shown_pods, shown_templates = self._rollout_shown
        pods = tally.pods if tally is not None else {}
        oldest = tally.stale_oldest(now) if tally is not None else {}
        for labels in shown_pods - pods.keys():
            self.rollout_pods.remove(*labels)
        for template in shown_templates - oldest.keys():
            self.stale_pod_oldest.remove(template)
        for labels, count in pods.items():
            self.rollout_pods.labels(*labels).set(count)
        for template, seconds in oldest.items():
            self.stale_pod_oldest.labels(template).set(seconds)
        self._rollout_shown = (set(pods), set(oldest))

    def observe_decision(self, outcome: Outcome, seconds: float) -> None:
        self._decided[outcome.reason].inc()
        self.admission_duration.observe(seconds)

    def decided(self, reason: Reason) -> int:
        """How many decisions were made for `reason` (what /metrics shows)."""
        value = self.registry.get_sample_value(
            "mesher_injector_decisions_total", {"decision": REASONS[reason], "reason": reason}
        )
        return int(value or 0)

    def observe_cert_expiry(self, not_after: float) -> None:
        """The serving certificate's notAfter, as a Unix time."""
        self.tls_cert_expiry.set(not_after)

    def observe_reload(self, reload: Reload, active: Active | None) -> None:
        """`active`: the reloaded template's store's, None once a named one is removed."""
        name = reload.template
        self.reloads.labels(result=reload.result).inc()
        removed = active is None and reload.result == "deleted" and name != DEFAULT_TEMPLATE_NAME
        if removed:  # a named template whose key is gone
            self._drop_template(name)
            return
        self.reload_failing.labels(template=name).set(
            1 if reload.result in ("rejected", "deleted") else 0
        )
        self._failing_shown.add(name)
        if reload.result in ("applied", "unchanged") and active is not None:
            self._drop_template(name, keep_failing=True)
            shown = (name, active.template.revision, active.template.version, active.source)
            self.template_info.labels(*shown).set(1)
            self._template_labels[name] = shown
            self.template_loaded_at.labels(template=name).set(active.loaded_at)

    def _drop_template(self, name: str, *, keep_failing: bool = False) -> None:
        shown = self._template_labels.pop(name, None)
        if shown is not None:
            self.template_info.remove(*shown)
            self.template_loaded_at.remove(name)
        if not keep_failing and name in self._failing_shown:
            self._failing_shown.discard(name)
            self.reload_failing.remove(name)
