"""Pod annotations -> a typed injection request (pure)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from injector.core.limits import MAX_MESSAGE_CHARS, MAX_QUOTED_CHARS, MAX_SERVICE_PORTS, join_capped

PREFIX = "sidecar.mesher.io/"
INJECT = PREFIX + "inject"
DISCOVERY_TYPE = PREFIX + "discoveryType"
SERVICE_PORTS = PREFIX + "servicePorts"
STATUS = PREFIX + "status"
TEMPLATE_REVISION = PREFIX + "template-revision"

NATIVE_SIDECAR = PREFIX + "nativeSidecar"
TEMPLATE = PREFIX + "template"
# `Ignore`: the webhook configuration's fail-open entry takes the pod (deploy/base/webhook.yaml).
FAILURE_POLICY = PREFIX + "failurePolicy"
FAILS_OPEN = "Ignore"
FAILURE_POLICIES = (FAILS_OPEN, "Fail")
# Per-pod resources of the mesher container: annotation -> (requests|limits, resource).
RESOURCES = {
    PREFIX + "proxyCPU": ("requests", "cpu"),
    PREFIX + "proxyMemory": ("requests", "memory"),
    PREFIX + "proxyCPULimit": ("limits", "cpu"),
    PREFIX + "proxyMemoryLimit": ("limits", "memory"),
}

_RESOURCE_KEYS = frozenset(RESOURCES)

STATUS_INJECTED = "injected"
# The annotations the injector reads; every other one is left unread.
KEYS = (
    INJECT,
    DISCOVERY_TYPE,
    SERVICE_PORTS,
    STATUS,
    NATIVE_SIDECAR,
    TEMPLATE,
    FAILURE_POLICY,
    *RESOURCES,
)

# A Kubernetes quantity (k8s.io/apimachinery/pkg/api/resource): a signed decimal number
# and a binary-SI, decimal-SI or exponent suffix.
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]{1,3})?$"
)
_SUFFIX_SCALE = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}

_YES = frozenset({"yes", "y"})
_NO = frozenset({"no", "n"})
PROTOCOLS = ("rest", "grpc")
_PROTOCOL_ALIASES = {"grps": "grpc"}


@dataclass(frozen=True, slots=True)
class InjectChoice:
    requested: bool
    warning: str | None = None


class ServicePort(NamedTuple):  # NamedTuples: made per admission, half the cost
    protocol: str
    port: int

    def __str__(self) -> str:
        return f"{self.protocol}:{self.port}"


class ServicePorts(NamedTuple):
    ports: tuple[ServicePort, ...]
    warnings: tuple[str, ...] = ()
    text: str = ""  # the canonical form, proto:port[,proto:port...]

    def __str__(self) -> str:
        return self.text


class InvalidServicePorts(ValueError):
    """The servicePorts annotation is malformed; the message names each bad item."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            f"invalid {SERVICE_PORTS} annotation: "
            f"{join_capped(problems, limit=MAX_MESSAGE_CHARS - 200)} "
            f"(expected proto:port[,proto:port...], proto one of {', '.join(PROTOCOLS)}, "
            "port 1-65535)"
        )


def quote(value: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """A value safe to put in a message: JSON-quoted (no raw newlines) and bounded."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return json.dumps(shown)


_ASKED = InjectChoice(requested=True)
_NOT_ASKED = InjectChoice(requested=False)


def parse_inject(annotations: Mapping[str, str]) -> InjectChoice:
    raw = annotations.get(INJECT)
    if raw is None:
        return _NOT_ASKED
    if raw == "yes":  # as written nearly always
        return _ASKED
    value = str(raw)[:16].strip().lower() if len(str(raw)) <= 16 else ""
    if value in _YES:
        return _ASKED
    if value in _NO:
        return _NOT_ASKED
    return InjectChoice(
        requested=False,
        warning=(
            f"{INJECT}={quote(str(raw))} is not a recognised value, so the mesher sidecar "
            'was not injected; use "yes" or "y" to inject ("no" or "n" to opt out)'
        ),
    )


@dataclass(frozen=True, slots=True)
class NativeChoice:
    native: bool
    warning: str | None = None


_NATIVE = NativeChoice(native=True)
_CLASSIC = NativeChoice(native=False)


def parse_native(annotations: Mapping[str, str], *, default: bool) -> NativeChoice:
    """`nativeSidecar: yes|no` overrides the template's choice; anything else keeps it,
    with a warning."""
    raw = annotations.get(NATIVE_SIDECAR)
    if raw is None:
        return _NATIVE if default else _CLASSIC
    value = raw.strip().lower() if len(raw) <= 16 else ""
    if value in _YES or value in _NO:
        return _NATIVE if value in _YES else _CLASSIC
    return NativeChoice(
        native=default,
        warning=(
            f"{NATIVE_SIDECAR}={quote(raw)} is not a recognised value, so the template's "
            f'choice ({"native" if default else "classic"}) was used; use "yes" or "no"'
        ),
    )


def fails_open(annotations: Mapping[str, object]) -> bool:
    """The pod goes to the fail-open webhook entry: created without mesher while no
    injector answers. Exactly as the entry's CEL condition compares it."""
    return annotations.get(FAILURE_POLICY) == FAILS_OPEN


def failure_policy_warning(annotations: Mapping[str, object]) -> str | None:
    """A warning when the failurePolicy annotation is neither Ignore nor Fail: the
    webhook configuration then treats the pod as Fail."""
    raw = annotations.get(FAILURE_POLICY)
    if raw is None or raw in FAILURE_POLICIES:
        return None
    return (
        f"{FAILURE_POLICY}={quote(str(raw))} is not a recognised value, so the pod fails "
        f'closed: it is refused while no injector answers; use "{FAILS_OPEN}" to let it '
        'start without mesher then, or "Fail" (the values are case-sensitive)'
    )


class InvalidResources(ValueError):
    """A resource annotation is not a Kubernetes quantity (or contradicts another)."""


def quantity(text: str) -> Decimal:
    """The value of a Kubernetes quantity, or ValueError."""
    match = _QUANTITY.match(text) if len(text) <= 64 else None
    if match is None:
        raise ValueError(f"{quote(text)} is not a Kubernetes quantity")
    suffix = match.group("suffix") or ""
    try:
        number = Decimal(match.group("number"))
        if suffix[:1] in ("e", "E"):
            return number * Decimal(10) ** int(suffix[1:])
        return number * _SUFFIX_SCALE[suffix]
    except (InvalidOperation, ValueError, OverflowError) as exc:
        raise ValueError(f"{quote(text)} is not a Kubernetes quantity") from exc


def parse_resources(annotations: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """`{"requests": {"cpu": "250m"}, "limits": {...}}` from the proxy* annotations;
    InvalidResources naming the annotation and its value."""
    resources: dict[str, dict[str, str]] = {}
    if _RESOURCE_KEYS.isdisjoint(annotations):  # the usual case: none of them
        return resources
    for key, (group, name) in RESOURCES.items():
        raw = annotations.get(key)
        if raw is None:
            continue
        text = raw.strip()
        try:
            value = quantity(text)
        except ValueError as exc:
            raise InvalidResources(f"{key}: {exc} (e.g. 250m, 0.5, 128Mi, 1Gi)") from exc
        if value < 0:
            raise InvalidResources(f"{key}: {quote(text)} must not be negative")
        resources.setdefault(group, {})[name] = text
    return resources


_NO_PORTS = ServicePorts(ports=())
_ONE_PORT = re.compile(r"(rest|grpc):([0-9]{1,5})")


def parse_service_ports(annotations: Mapping[str, str]) -> ServicePorts:
    """Parse `proto:port[,proto:port...]`; raise InvalidServicePorts naming every bad item."""
    raw = annotations.get(SERVICE_PORTS)
    if raw is None or not str(raw).strip():
        return _NO_PORTS
    raw = str(raw)
    one = _ONE_PORT.fullmatch(raw)  # the usual case, read without the general loop
    if one is not None and 1 <= (number := int(one[2])) <= 65535:
        return ServicePorts((ServicePort(one[1], number),), (), f"{one[1]}:{number}")
    items = raw.count(",") + 1
    if items > MAX_SERVICE_PORTS:
        raise InvalidServicePorts(
            [f"it has {items} items; at most {MAX_SERVICE_PORTS} ports can be declared"]
        )
    problems: list[str] = []
    warnings: list[str] = []
    ports: list[ServicePort] = []
    seen: set[int] = set()
    for item in raw.split(","):
        text = item.strip()
        proto, sep, port_text = text.partition(":")
        proto = proto.strip().lower()
        port_text = port_text.strip()
        if not sep:
            problems.append(f"{quote(text)} is not proto:port")
            continue
        if proto in _PROTOCOL_ALIASES:
            fixed = _PROTOCOL_ALIASES[proto]
            warnings.append(
                f"{SERVICE_PORTS}: protocol {quote(proto)} read as {quote(fixed)}; "
                f"please write {fixed}:{port_text}"
            )
            proto = fixed
        if proto not in PROTOCOLS:
            problems.append(f"{quote(text)} has unknown protocol {quote(proto)}")
            continue
        if not (port_text.isascii() and port_text.isdigit()):
            problems.append(f"{quote(text)} has a port that is not a number")
            continue
        port = int(port_text)
        if not 1 <= port <= 65535:
            problems.append(f"{quote(text)} has port {port} outside 1-65535")
            continue
        if port in seen:
            problems.append(f"{quote(text)} repeats port {port}")
            continue
        seen.add(port)
        ports.append(ServicePort(proto, port))
    if problems:
        raise InvalidServicePorts(problems)
    text = ",".join([f"{p.protocol}:{p.port}" for p in ports])
    return ServicePorts(tuple(ports), tuple(warnings), text)
