"""What the flags accept: argparse value types, environment defaults, and the checks a
command makes of its flags' values (CliError, a one-line message and exit 1)."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from injector.core.settings import env_name
from injector.core.template_checks import DNS_LABEL

DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# A SAN: a DNS name, optionally a wildcard's first label.
DNS_NAME = re.compile(
    r"^(?=.{1,253}$)(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)


class CliError(Exception):
    """A clear message for the user; exits non-zero."""


def env_default(flag: str, default: Any) -> Any:
    """The flag's MESHER_INJECTOR_<FLAG> variable, else `default`."""
    return os.environ.get(env_name(flag), default)


def env_checked(flag: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """`convert`, naming MESHER_INJECTOR_<FLAG> when the value it refuses came from there:
    argparse converts a string default (the variable's value) with the flag's type, so a
    bad variable gets the same one-line usage error, exit 2, as a bad flag."""
    name = env_name(flag)

    def check(text: str) -> Any:
        try:
            return convert(text)
        except argparse.ArgumentTypeError as exc:
            if os.environ.get(name) == text:
                raise argparse.ArgumentTypeError(f"{exc} (from {name})") from None
            raise

    check.__name__ = getattr(convert, "__name__", "value")
    return check


def port_number(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def _seconds(text: str, *, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise argparse.ArgumentTypeError(
            f"{text} seconds: give a number {'>= 0' if zero else '> 0'}"
        )
    return value


def positive_seconds(text: str) -> float:
    """A timeout: more than 0 seconds (0 would close every keep-alive connection at once,
    or time every request out)."""
    return _seconds(text, zero=False)


def seconds(text: str) -> float:
    """A wait that may be none: 0 seconds or more."""
    return _seconds(text, zero=True)


def one_of(*values: str) -> Callable[[str], str]:
    """A type that accepts `values` only. Unlike argparse's choices, a type also checks a
    default read from the environment."""

    def check(text: str) -> str:
        if text not in values:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(values)}")
        return text

    check.__name__ = "one of " + ", ".join(values)
    return check


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def boolean(text: str) -> bool:
    """A switch's environment value: 1/true/yes/on or 0/false/no/off (any case)."""
    value = text.strip().lower()
    if value not in _TRUE + _FALSE:
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false (1/0, yes/no, on/off)")
    return value in _TRUE


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give a number >= 1")
    return value


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class Duration(NamedTuple):
    seconds: float
    text: str  # as the user wrote it, for messages


def duration(text: str) -> Duration:
    """A time such as 90s, 5m, 1.5h or 500ms (a bare number is seconds), more than 0."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 5m)")
    value = float(match.group(1)) * _SCALE[match.group(2) or "s"]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration > 0")
    return Duration(value, text.strip())


def positive_bytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} bytes: give a number > 0")
    return value


def check_dns_label(flag: str, value: str) -> None:
    """A Service or namespace name."""
    if not DNS_LABEL.match(value):
        raise CliError(f"{flag} {value!r} is not a DNS label (lowercase letters, digits, -)")


def check_secret_name(flag: str, value: str) -> None:
    if not DNS_SUBDOMAIN.match(value):
        raise CliError(f"{flag} {value!r} is not a valid Secret name")


def check_dns_name(flag: str, value: str) -> None:
    """A certificate's DNS SAN."""
    if not DNS_NAME.match(value):
        raise CliError(f"{flag} {value!r} is not a DNS name")
