"""What `decide` reads of a pod AdmissionReview, decoded without the rest (pure).

An API server's pod review is mostly what the injector never reads: managedFields,
userInfo, options, tolerations, every container's image, command, probes... Parsing all
of it into Python objects was the largest single cost of an admission. The types below
name the fields `decide`, `pod_facts` and the log line read; msgspec checks the JSON
syntax of everything (UTF-8 aside: see `decode`) but builds objects for those fields
only, as plain dicts and lists, so the code that reads them is unchanged.

The types are at least as strict as `pods.pod_shape_problem`: a review they take
is a Pod that check passes (a test holds them together). Anything they do not take (a
wrong type anywhere they look, a DELETE's null object, malformed JSON) makes `decode`
raise, and the caller parses the body whole as before, so every refusal and its message
stays what the full parse says.

One difference is deliberate: a number beyond a double's range (`1e400`) in a field the
injector does not read is accepted, as JSON (RFC 8259) and the API server's own decoder
accept it there; the full parse refuses it as malformed.
"""

from __future__ import annotations

from typing import Annotated, Any, Required, TypedDict

import msgspec


class _Named(TypedDict, total=False):
    name: str


class _Port(TypedDict, total=False):
    name: str
    containerPort: Any


class _Container(TypedDict, total=False):
    name: str
    env: list[_Named] | None
    ports: list[_Port] | None


class _Owner(TypedDict, total=False):
    kind: Any
    name: str
    controller: Any


class _Metadata(TypedDict, total=False):
    name: str | None
    generateName: str | None
    namespace: str | None
    labels: dict[str, str] | None
    annotations: dict[str, str] | None
    ownerReferences: list[_Owner] | None


class _Spec(TypedDict, total=False):
    containers: Required[Annotated[list[_Container], msgspec.Meta(min_length=1)]]
    initContainers: list[_Container] | None
    volumes: list[_Named] | None
    imagePullSecrets: list[_Named] | None
    hostNetwork: Any


class _Pod(TypedDict, total=False):
    metadata: _Metadata | None
    spec: Required[_Spec]


class _Request(TypedDict, total=False):
    uid: Any
    kind: Any
    operation: Any
    subResource: Any
    namespace: Any
    name: Any
    dryRun: Any
    object: Required[_Pod]


class _Review(TypedDict, total=False):
    apiVersion: Any
    kind: Any
    request: Required[_Request]


_DECODER = msgspec.json.Decoder(_Review)


class NotAPodReview(ValueError):
    """The body is not a well-formed pod review of the shape above: parse it whole."""


def decode(raw: bytes) -> dict[str, Any]:
    """The review's fields `decide` reads; NotAPodReview for anything else. A body that
    is not valid UTF-8 raises too (msgspec does not check the strings it skips)."""
    if not raw.isascii():
        try:
            raw.decode()
        except UnicodeDecodeError as exc:
            raise NotAPodReview("not UTF-8") from exc
    try:
        review: dict[str, Any] = _DECODER.decode(raw)  # type: ignore[assignment]
    except (msgspec.MsgspecError, ValueError, RecursionError) as exc:
        raise NotAPodReview(str(exc)) from exc
    return review
