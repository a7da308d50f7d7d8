"""Prometheus metrics, prefix mesher_injector_. Labels are bounded: never pod or namespace names."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from injector.admission import REASONS, Outcome
from injector.answers import Answers
from injector.store import Active, Reload

# Sub-millisecond first: the injector's own work is tens of microseconds.
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
)


class Metrics:
    __slots__ = (
        "_decision_children",
        "bad_requests",
        "decisions",
        "latency",
        "registry",
        "reloads",
        "template_info",
        "template_loaded_at",
        "tls_cert_expiry",
        "tls_reloads",
        "watch_restarts",
    )

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "mesher_injector_decisions",
            "Admission decisions by decision and reason.",
            ["decision", "reason"],
            registry=r,
        )
        # Children looked up once: labels() on every admission costs more than inc().
        self._decision_children = {
            reason: self.decisions.labels(decision=decision, reason=reason)
            for reason, decision in REASONS.items()
        }
        self.latency = Histogram(
            "mesher_injector_admission_duration_seconds",
            "Time to decide and answer one AdmissionReview, in seconds.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bad_requests = Counter(
            "mesher_injector_bad_requests",
            "Requests to /mutate answered with an HTTP 4xx, by reason.",
            ["reason"],
            registry=r,
        )
        self.template_info = Gauge(
            "mesher_injector_template_info",
            "The active template: 1 for its revision, version and source.",
            ["revision", "version", "source"],
            registry=r,
        )
        self.template_loaded_at = Gauge(
            "mesher_injector_template_loaded_timestamp_seconds",
            "When the active template was activated (Unix time).",
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
        self.watch_restarts = Counter(
            "mesher_injector_watch_restarts",
            "Restarts of the template ConfigMap watch, by reason.",
            ["reason"],
            registry=r,
        )
        self.tls_reloads = Counter(
            "mesher_injector_tls_reloads",
            "Serving certificate reloads by result (applied, rejected).",
            ["result"],
            registry=r,
        )
        self.tls_cert_expiry = Gauge(
            "mesher_injector_tls_cert_expiry_timestamp_seconds",
            "Expiry of the serving certificate in use (Unix time).",
            registry=r,
        )

    def observe_decision(self, outcome: Outcome, seconds: float) -> None:
        self._decision_children[outcome.reason].inc()
        self.latency.observe(seconds)

    def observe_reload(self, reload: Reload, active: Active | None) -> None:
        self.reloads.labels(result=reload.result).inc()
        if reload.result in ("applied", "unchanged") and active is not None:
            self.template_info.clear()
            self.template_info.labels(
                revision=active.template.revision,
                version=active.template.version,
                source=active.source,
            ).set(1)
            self.template_loaded_at.set(active.loaded_at)

    def watch_answers(self, answers: Answers) -> None:
        """Expose the remembered answers, read at scrape time: nothing per admission."""
        self.registry.register(_AnswersCollector(answers))


class _AnswersCollector(Collector):
    def __init__(self, answers: Answers) -> None:
        self._answers = answers

    def collect(self) -> Iterator[Metric]:
        answers = self._answers
        lookups = CounterMetricFamily(
            "mesher_injector_answer_cache_lookups",
            "Admissions answered from a remembered answer (hit) or decided afresh (miss).",
            labels=["result"],
        )
        lookups.add_metric(["hit"], answers.hits)
        lookups.add_metric(["miss"], answers.misses)
        yield lookups
        entries = GaugeMetricFamily(
            "mesher_injector_answer_cache_entries", "Answers remembered for the active template."
        )
        entries.add_metric([], len(answers))
        yield entries
        size = GaugeMetricFamily(
            "mesher_injector_answer_cache_bytes",
            "Bytes held by the remembered answers and their keys.",
        )
        size.add_metric([], answers.size_bytes)
        yield size
