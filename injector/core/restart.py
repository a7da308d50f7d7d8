"""`restart` as values (pure): the plan, its batches, the health gate before each batch
and when the run stops.

`injector.kube.restart` executes a `RestartRun`: it asks `next_step` what to do, does it
(reads the injector Deployment or the template ConfigMap, or rolls a batch) and reports
what it saw; every decision is made here, so the policy is tested without a cluster.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from injector.core.names import INJECTOR_DEPLOYMENT
from injector.core.settings import ConfigMapRef
from injector.core.store import TemplateSet
from injector.core.workloads import RESTARTABLE, Workload, metadata_of

Batch = tuple[Workload, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """What `restart` does: roll `restart` one by one; `manual` needs a person (bare
    pods, Jobs, CronJobs: never deleted); `skipped` cannot be fixed by a restart."""

    restart: tuple[Workload, ...]
    manual: tuple[Workload, ...]
    skipped: tuple[Workload, ...]

    def batches(self, parallel: int) -> tuple[Batch, ...]:
        """`restart` in order, `parallel` workloads at a time."""
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        todo = self.restart
        return tuple(todo[i : i + parallel] for i in range(0, len(todo), parallel))


def plan_restarts(found: Iterable[Workload]) -> Plan:
    todo = [w for w in found if w.state != "current"]
    return Plan(
        restart=tuple(w for w in todo if w.restartable),
        manual=tuple(w for w in todo if w.kind not in RESTARTABLE and w.fixable_by_restart),
        skipped=tuple(w for w in todo if not w.fixable_by_restart),
    )


MANUAL_ACTION = {
    "Pod": "delete and re-create the pod",
    "Job": "re-run the Job (its pods are never deleted for you)",
    "CronJob": "its next run gets the sidecar; re-run it now if needed",
}


# --- the health gate ------------------------------------------------------------------


class Unhealthy(Exception):
    """Injection is not healthy: restarting now would make refused or unmeshed pods."""


def injector_problem(available: int, *, namespace: str) -> str:
    """Why no pod should be restarted, given the injector Deployment's available
    replicas; "" when one is available."""
    if available >= 1:
        return ""
    return (
        f"the injector Deployment {namespace}/{INJECTOR_DEPLOYMENT} has no available "
        "replica: restarted pods would be refused"
    )


def live_templates(data: object, *, key: str) -> TemplateSet:
    """The template ConfigMap's data validated as the injectors validate it: a named
    template that does not validate is left out (the injectors keep their last good
    version of it)."""
    live = TemplateSet()
    live.offer_data(data if isinstance(data, dict) else {}, source="live", default_key=key)
    return live


def template_problem(live: TemplateSet, ref: ConfigMapRef) -> str:
    """Why no pod should be restarted, given the live templates; "" when the default
    one is valid."""
    if live.template is not None:
        return ""
    error = live.last_error.error if live.last_error else "no template"
    return (
        f"the live template in {ref.namespace}/{ref.name} is invalid (the injectors keep "
        f"their last good one): {error}"
    )


# --- the run --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadInjector:
    """Read the available replicas of the injector Deployment in `namespace`; report
    them with `RestartRun.injector_read`."""

    namespace: str


@dataclass(frozen=True, slots=True)
class ReadTemplate:
    """Read the data of the template ConfigMap `ref`; report it with
    `RestartRun.template_read`."""

    ref: ConfigMapRef


@dataclass(frozen=True, slots=True)
class Roll:
    """Restart every workload of `batch` at once, then wait for each rollout for up to
    `timeout` seconds; report which completed with `RestartRun.rolled`."""

    batch: Batch
    timeout: float


@dataclass(frozen=True, slots=True)
class Stop:
    """The run is over: every batch rolled out (both fields empty), the gate closed
    before a batch (`unhealthy` says why), or a batch's rollouts did not all complete in
    time (`late`; the batches after it untouched)."""

    late: Batch = ()
    unhealthy: str = ""


Step = ReadInjector | ReadTemplate | Roll | Stop


@dataclass(frozen=True, slots=True)
class RestartRun:
    """Where a restart run is: `rolled` batches done, `passed` checks of the gate passed
    for the next one. Each report returns the next state; nothing is mutated."""

    batches: tuple[Batch, ...]
    ref: ConfigMapRef  # the live template; the injector Deployment is in its namespace
    rollout_timeout: float
    rolled: int = 0
    passed: int = 0
    stopped: Stop | None = None

    @classmethod
    def start(
        cls, plan: Plan, *, ref: ConfigMapRef, parallel: int, rollout_timeout: float
    ) -> RestartRun:
        return cls(batches=plan.batches(parallel), ref=ref, rollout_timeout=rollout_timeout)

    @property
    def gate(self) -> tuple[ReadInjector | ReadTemplate, ...]:
        """What is checked, in order, before each batch: an available injector replica
        (restarted pods would be refused), then a valid live template."""
        return ReadInjector(namespace=self.ref.namespace), ReadTemplate(ref=self.ref)

    def next_step(self) -> Step:
        if self.stopped is not None:
            return self.stopped
        if self.rolled == len(self.batches):
            return Stop()
        if self.passed < len(self.gate):
            return self.gate[self.passed]
        return Roll(batch=self.batches[self.rolled], timeout=self.rollout_timeout)

    def injector_read(self, available: int) -> RestartRun:
        return self._checked(injector_problem(available, namespace=self.ref.namespace))

    def template_read(self, data: object) -> RestartRun:
        live = live_templates(data, key=self.ref.key)
        return self._checked(template_problem(live, self.ref))

    def rolled_out(self, done: Sequence[bool]) -> RestartRun:
        """`done[i]`: the rollout of the batch's i-th workload completed in time. The
        first batch with one that did not stops the run."""
        batch = self.batches[self.rolled]
        late = tuple(w for w, ok in zip(batch, done, strict=True) if not ok)
        return replace(
            self, rolled=self.rolled + 1, passed=0, stopped=Stop(late=late) if late else None
        )

    def _checked(self, problem: str) -> RestartRun:
        if problem:
            return replace(self, stopped=Stop(unhealthy=problem))
        return replace(self, passed=self.passed + 1)


# --- what kubectl sends and judges -----------------------------------------------------


def restart_patch(now: datetime.datetime) -> dict[str, Any]:
    """The strategic-merge patch `kubectl rollout restart` sends."""
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "spec": {
            "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}
        }
    }


def rollout_done(kind: str, obj: Mapping[str, Any]) -> bool:
    """As `kubectl rollout status` judges it: the controller has seen the new spec and
    every replica is updated and available (no old one left)."""
    meta = metadata_of(obj)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return False
    if kind == "Deployment":
        wanted = spec.get("replicas", 1)
        updated = status.get("updatedReplicas", 0)
        return bool(
            updated >= wanted
            and status.get("replicas", 0) <= updated
            and status.get("availableReplicas", 0) >= updated
        )
    if kind == "StatefulSet":
        wanted = spec.get("replicas", 1)
        return bool(
            status.get("updatedReplicas", 0) >= wanted
            and status.get("readyReplicas", 0) >= wanted
            and status.get("currentRevision") == status.get("updateRevision")
        )
    if kind == "DaemonSet":
        desired = status.get("desiredNumberScheduled", 0)
        return bool(
            status.get("updatedNumberScheduled", 0) >= desired
            and status.get("numberAvailable", 0) >= desired
        )
    raise ValueError(f"no rollout for kind {kind}")
