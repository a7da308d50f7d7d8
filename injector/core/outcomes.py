"""What an admission ends in: a decision, its reason and what goes with it (pure)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import orjson

Decision = Literal["injected", "skipped", "denied"]
Reason = Literal[
    "requested",
    "not-requested",
    "already-injected",
    "host-network",
    "excluded-namespace",
    "not-a-pod-create",
    "unknown-discovery-type",
    "invalid-service-ports",
    "no-template",
    "render-error",
    "pod-too-large",
    "invalid-resources",
    "unknown-template",
    "internal-error",
]
REASONS: dict[Reason, Decision] = {
    "requested": "injected",
    "not-requested": "skipped",
    "already-injected": "skipped",
    "host-network": "skipped",
    "excluded-namespace": "skipped",
    "not-a-pod-create": "skipped",
    "unknown-discovery-type": "denied",
    "invalid-service-ports": "denied",
    "no-template": "denied",
    "render-error": "denied",
    "pod-too-large": "denied",
    "invalid-resources": "denied",
    "unknown-template": "denied",
    "internal-error": "denied",
}


class Outcome(NamedTuple):  # a NamedTuple: made per admission, half a dataclass's cost
    decision: Decision
    reason: Reason
    message: str = ""
    warnings: tuple[str, ...] = ()
    patch: bytes = b""  # the JSON Patch document (a JSON array), b"" for none
    discovery_type: str = ""
    service_ports: str = ""
    revision: str = ""
    template: str = ""

    def operations(self) -> list[dict[str, Any]]:
        """The patch as objects (for applying it here: `inject`, tests)."""
        operations: list[dict[str, Any]] = orjson.loads(self.patch) if self.patch else []
        return operations
