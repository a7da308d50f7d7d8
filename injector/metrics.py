"""Prometheus metrics, prefix mesher_injector_. Labels are bounded: never pod or namespace names."""

from __future__ import annotations

import bisect
import itertools
import os
import time
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from injector import __version__
from injector.admission import REASONS, Outcome, Reason
from injector.store import Active, Reload
from injector.template import DEFAULT_TEMPLATE_NAME
from injector.tls import Serving

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
        "_failing_shown",
        "_template_labels",
        "bad_requests",
        "decisions",
        "ready",
        "registry",
        "reload_failing",
        "reloads",
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
        self.decisions = Decisions()
        r.register(self.decisions)
        self.bad_requests = Counter(
            "mesher_injector_bad_requests",
            "Requests to /mutate answered with an HTTP 4xx, by reason.",
            ["reason"],
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

    def observe_decision(self, outcome: Outcome, seconds: float, *, fast: bool = False) -> None:
        """`fast`: answered on the webhook's fast path (injector/fastpath.py)."""
        self.decisions.observe(outcome.reason, seconds)
        if fast:
            self.decisions.fast += 1

    def observe_serving(self, serving: Serving) -> None:
        self.tls_cert_expiry.set(serving.not_after)

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


# The `le` labels as prometheus_client's Histogram writes them.
_LE = [str(floatToGoString(b)) for b in LATENCY_BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]


def _created_series() -> bool:
    """prometheus_client's own rule for the `_created` series."""
    setting = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False")
    return setting.lower() not in ("true", "1", "t")


class Decisions(Collector):
    """`mesher_injector_decisions_total{decision,reason}` and the admission latency
    histogram, exposed as prometheus_client's Counter and Histogram would expose them but
    kept as plain numbers: counting an admission is three additions and a bisect, no
    locks (about 3 us an admission under load, bench/RESULTS.md). Only the event loop
    writes them; scrapes read them on the same loop."""

    def __init__(self) -> None:
        self.counts: dict[Reason, int] = dict.fromkeys(REASONS, 0)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.fast = 0  # of them, answered on the fast path
        self.created = time.time()

    def observe(self, reason: Reason, seconds: float) -> None:
        self.counts[reason] += 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    def count(self, reason: Reason) -> int:
        return self.counts[reason]

    def collect(self) -> Iterator[Metric]:
        created = self.created if _created_series() else None
        decisions = CounterMetricFamily(
            "mesher_injector_decisions",
            "Admission decisions by decision and reason.",
            labels=["decision", "reason"],
        )
        for reason, n in self.counts.items():
            decisions.add_metric([REASONS[reason], reason], n, created=created)
        yield decisions
        fast = CounterMetricFamily(
            "mesher_injector_fast_path_admissions",
            "Admission decisions answered on the webhook's fast path, without aiohttp's "
            "request cycle (the others took it: a request of another shape, or a "
            "connection that once sent one).",
        )
        fast.add_metric([], self.fast, created=created)
        yield fast
        latency = HistogramMetricFamily(
            "mesher_injector_admission_duration_seconds",
            "Time to decide and answer one AdmissionReview, in seconds.",
        )
        cumulative = list(itertools.accumulate(self.buckets))
        latency.add_metric([], list(zip(_LE, cumulative, strict=True)), sum_value=self.sum)
        if created is not None:
            latency.samples.append(
                Sample("mesher_injector_admission_duration_seconds_created", {}, created)
            )
        yield latency
