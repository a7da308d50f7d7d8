"""The decision metrics kept as plain numbers expose exactly what prometheus_client's own
Counter and Histogram would."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from injector.admission import REASONS, Outcome, Reason
from injector.metrics import LATENCY_BUCKETS, Metrics


def exposition(registry: CollectorRegistry, prefix: str) -> list[str]:
    """The lines of `prefix`'s metrics, `_created` values blanked (they are timestamps)."""
    lines = generate_latest(registry).decode().splitlines()
    mine = [line for line in lines if prefix in line]
    return [re.sub(r"(_created(\{.*\})?) .*", r"\1 T", line) for line in mine]


def reference(observations: list[tuple[Reason, float]]) -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter(
        "mesher_injector_decisions",
        "Admission decisions by decision and reason.",
        ["decision", "reason"],
        registry=registry,
    )
    for reason, decision in REASONS.items():
        counter.labels(decision=decision, reason=reason)
    histogram = Histogram(
        "mesher_injector_admission_duration_seconds",
        "Time to decide and answer one AdmissionReview, in seconds.",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for reason, seconds in observations:
        counter.labels(decision=REASONS[reason], reason=reason).inc()
        histogram.observe(seconds)
    return registry


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(REASONS)),
            st.one_of(
                st.sampled_from(LATENCY_BUCKETS),  # on a bound: `le` counts it
                st.floats(min_value=0, max_value=3, allow_nan=False),
            ),
        ),
        max_size=40,
    )
)
def test_decisions_and_latency_expose_what_prometheus_client_would(
    observations: list[tuple[Reason, float]],
) -> None:
    metrics = Metrics()
    for reason, seconds in observations:
        metrics.observe_decision(Outcome(decision=REASONS[reason], reason=reason), seconds)
    for prefix in ("mesher_injector_decisions", "mesher_injector_admission_duration"):
        ours = exposition(metrics.registry, prefix)
        theirs = exposition(reference(observations), prefix)
        assert ours == theirs


def test_created_series_follow_prometheus_clients_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = Metrics()
    assert "mesher_injector_decisions_created" in generate_latest(metrics.registry).decode()
    monkeypatch.setenv("PROMETHEUS_DISABLE_CREATED_SERIES", "true")
    text = generate_latest(metrics.registry).decode()
    assert "mesher_injector_decisions_created" not in text
    assert "mesher_injector_admission_duration_seconds_created" not in text
