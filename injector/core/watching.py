"""The template ConfigMap watch's policy, as values (pure): why a watch restarts and how,
and how long to wait after failures. kube/configmap.py acts on them; tests need no
sleeping."""

from __future__ import annotations

from dataclasses import dataclass

from injector.core.limits import WATCH_BACKOFF_BASE_S, WATCH_BACKOFF_CAP_S


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered exponential backoff, as a value so it is tested without sleeping."""

    base: float = WATCH_BACKOFF_BASE_S
    cap: float = WATCH_BACKOFF_CAP_S

    def delay(self, failures: int, jitter: float) -> float:
        """Seconds to wait after `failures` consecutive failures; jitter in [0, 1)."""
        if failures <= 0:
            return 0.0
        ceiling = min(self.cap, self.base * float(2 ** (failures - 1)))
        return ceiling * (0.5 + jitter / 2)


@dataclass(frozen=True, slots=True)
class Restart:
    """Why the watch restarts, and how: list again or resume from the last version."""

    reason: str
    relist: bool
    failed: bool
    detail: str = ""
