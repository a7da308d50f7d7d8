"""Image references, read as the container runtime reads them (pure).

The grammar is distribution/reference's, which containerd and CRI-O parse with: an
optional registry host[:port], a lowercase path, an optional tag and an optional digest.
As there, the first path component is a registry only if it holds a `.` or a `:`, is
`localhost`, or has an uppercase letter; otherwise the image is on docker.io. A
reference the runtime refuses would leave every injected pod in InvalidImageName.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from injector.core.limits import MAX_IMAGE_NAME_CHARS

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")


class Reference(NamedTuple):
    domain: str  # "" for docker.io
    path: str
    tag: str  # "" when none is given
    digest: str  # "" when none is given


class InvalidReference(ValueError):
    pass


def parse(image: str) -> Reference:
    """The parts of `image`, or InvalidReference saying what is wrong."""
    rest, _, digest = image.partition("@")
    if "@" in image and not _DIGEST.fullmatch(digest):
        raise InvalidReference(f"digest {digest!r} is not ALGORITHM:HEX (e.g. sha256:<64 hex>)")
    name, tag = rest, ""
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:  # a colon after the last slash starts the tag, not a port
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(f"tag {tag!r} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
    if not name:
        raise InvalidReference("it has no name")
    if len(name) > MAX_IMAGE_NAME_CHARS:
        raise InvalidReference(f"its name is longer than {MAX_IMAGE_NAME_CHARS} characters")
    first, slash, remainder = name.partition("/")
    domain = ""
    if slash and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
        domain, name = first, remainder
        if not _DOMAIN.fullmatch(domain):
            raise InvalidReference(f"registry {domain!r} is not a host name with an optional port")
    if not _PATH.fullmatch(name):
        raise InvalidReference(
            f"repository {name!r} must be lowercase letters, digits and single . _ __ or - "
            "between them, in components separated by /"
        )
    return Reference(domain=domain, path=name, tag=tag, digest=digest)


def reference_problem(image: str) -> str | None:
    """Why the runtime would refuse `image`, or None."""
    try:
        parse(image)
    except InvalidReference as exc:
        return f"image {image!r} is not a valid image reference: {exc}"
    return None


def drift_warning(image: str) -> str | None:
    """Why `image` may change under the pods (tagged latest or not tagged, and no
    digest), or None. A reference that cannot be parsed is reference_problem's."""
    try:
        reference = parse(image)
    except InvalidReference:
        return None
    if reference.digest:
        return None
    if not reference.tag:
        return f"image {image!r} has no tag"
    if reference.tag == "latest":
        return f"image {image!r} is tagged latest"
    return None
