"""What /metrics shows of decisions: every reason's series from the start, each decision
counted under its decision and reason, and its latency in sub-millisecond buckets."""

from __future__ import annotations

from prometheus_client import generate_latest

from injector.core.outcomes import REASONS, Outcome
from injector.core.rollout import Tally
from injector.obs.metrics import LATENCY_BUCKETS, Metrics


def test_every_reason_is_exposed_at_zero_from_the_start() -> None:
    metrics = Metrics()
    for reason, decision in REASONS.items():
        labels: dict[str, str] = {"decision": decision, "reason": reason}
        assert metrics.registry.get_sample_value("mesher_injector_decisions_total", labels) == 0
        assert metrics.decided(reason) == 0


def test_a_decision_is_counted_under_its_reason_and_its_latency_bucket() -> None:
    metrics = Metrics()
    metrics.observe_decision(Outcome(decision="injected", reason="requested"), 0.0003)
    metrics.observe_decision(Outcome(decision="denied", reason="render-error"), 0.02)
    assert metrics.decided("requested") == 1
    assert metrics.decided("render-error") == 1
    assert metrics.decided("not-requested") == 0

    def bucket(le: str) -> float | None:
        return metrics.registry.get_sample_value(
            "mesher_injector_admission_duration_seconds_bucket", {"le": le}
        )

    assert (bucket("0.00025"), bucket("0.0005"), bucket("0.01"), bucket("0.025")) == (0, 1, 1, 2)
    assert bucket("+Inf") == 2
    assert LATENCY_BUCKETS[0] < 0.001  # sub-millisecond: the injector's own work is that fast
    text = generate_latest(metrics.registry).decode()
    assert 'mesher_injector_decisions_total{decision="injected",reason="requested"} 1.0' in text
    assert "mesher_injector_admission_duration_seconds_count 2.0" in text


def test_the_rollout_series_follow_each_tally_and_go_when_the_replica_stops_leading() -> None:
    metrics = Metrics()

    def pods(namespace: str, state: str) -> float | None:
        labels = {"namespace": namespace, "template": "template", "state": state}
        return metrics.registry.get_sample_value("mesher_injector_pods", labels)

    def oldest() -> float | None:
        return metrics.registry.get_sample_value(
            "mesher_injector_stale_pod_oldest_seconds", {"template": "template"}
        )

    metrics.observe_rollout(
        Tally(
            pods={("a", "template", "stale"): 3, ("b", "template", "current"): 1},
            stale_since={"template": 1000.0},
        ),
        now=1042.0,
    )
    assert (pods("a", "stale"), pods("b", "current"), oldest()) == (3, 1, 42.0)
    metrics.observe_rollout(
        Tally(pods={("a", "template", "current"): 3}, stale_since={"template": None})
    )
    assert (pods("a", "current"), pods("a", "stale"), pods("b", "current")) == (3, None, None)
    assert oldest() == 0
    metrics.observe_rollout(None)
    assert "mesher_injector_pods{" not in generate_latest(metrics.registry).decode()
    assert oldest() is None


def test_the_leader_gauge_exists_only_where_the_rollout_watch_runs() -> None:
    metrics = Metrics()
    assert metrics.registry.get_sample_value("mesher_injector_rollout_leader") is None
    metrics.track_rollout()
    metrics.track_rollout()  # a new election round: registered once
    assert metrics.registry.get_sample_value("mesher_injector_rollout_leader") == 0
