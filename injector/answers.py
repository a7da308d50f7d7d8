"""Answers serialised once and remembered by request bytes (pure).

A Deployment's replicas reach the webhook as the same AdmissionReview but for its uid
and managedFields timestamps: `Answers` decides such a request once and answers every
further replica without parsing its body. `split_request` and `Answers` say why that is
always the answer a fresh decision would give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from injector.admission import (
    API_VERSIONS,
    DEFAULT_EXCLUDED_NAMESPACES,
    Outcome,
    PodFacts,
    Review,
    decide,
    pod_facts,
    response_fields,
)
from injector.template import Template


@dataclass(frozen=True, slots=True)
class Answer:
    """An outcome, serialised once for any uid: the AdmissionReview for a request with uid
    U is `head + JSON(U) + tail`, byte for byte `orjson.dumps(build_response(...))`."""

    outcome: Outcome
    facts: PodFacts
    dry_run: bool
    head: bytes
    tail: bytes

    def body(self, uid: str) -> bytes:
        return self.head + orjson.dumps(uid) + self.tail


_HEADS = {
    version: b'{"apiVersion":"%s","kind":"AdmissionReview","response":{"uid":' % version.encode()
    for version in API_VERSIONS
}


def answer(review: Review, outcome: Outcome) -> Answer:
    rest = orjson.dumps(response_fields(outcome))  # b'{"allowed":...}', never empty
    return Answer(
        outcome=outcome,
        facts=pod_facts(review.request),
        dry_run=bool(review.request.get("dryRun")),
        head=_HEADS[review.api_version],
        tail=b"," + rest[1:] + b"}",
    )


ANSWER_CACHE_BYTES = 8 * 1024 * 1024
_SEEN_LIMIT = 8192
_UID_KEY = b'"uid":'
_TIME_KEY = b'"time":'
_JSON_SPACE = (b" ", b"\t", b"\r", b"\n")


def _string_after(raw: bytes, at: int) -> tuple[int, int] | None:
    """The span of the string literal that starts at `at` (after JSON space), or None
    when none does or it holds escapes (never remembered)."""
    while raw[at : at + 1] in _JSON_SPACE:
        at += 1
    if raw[at : at + 1] != b'"':
        return None
    end = raw.find(b'"', at + 1) + 1
    if end <= 0 or raw.find(b"\\", at, end) >= 0:
        return None
    return at, end


# The pieces of a body between its volatile strings, and which string is the uid.
RequestKey = tuple[int, tuple[bytes, ...]]


class Split(NamedTuple):
    """A body cut at its volatile strings: `pieces[0] + literals[0] + pieces[1] + ...`."""

    key: RequestKey
    literals: tuple[bytes, ...]

    @property
    def uid_at(self) -> int:
        """Which of `literals` is the uid."""
        return self.key[0]

    def body(self, literals: list[bytes] | tuple[bytes, ...]) -> bytes:
        pieces = self.key[1]
        return b"".join(x for pair in zip(pieces, [*literals, b""], strict=True) for x in pair)


def split_request(raw: bytes) -> Split | None:
    """`raw` cut at the string value of its first `"uid":` key and of every `"time":` key
    (`metadata.managedFields[].time`, which the API server stamps to the second, so one
    workload's pods differ there too), or None (a value that is not a plain string:
    never remembered).

    In valid JSON the `"` before such a colon closes a key, so each value is a whole
    token: a body with the same pieces and other string literals in those places parses
    to the same document but for those values.
    """
    found = raw.find(_UID_KEY)
    if found < 0:
        return None
    uid = _string_after(raw, found + len(_UID_KEY))
    if uid is None:
        return None
    spans = [uid]
    found = raw.find(_TIME_KEY)
    while found >= 0:
        span = _string_after(raw, found + len(_TIME_KEY))
        if span is None:
            return None
        spans.append(span)
        found = raw.find(_TIME_KEY, span[1])
    spans.sort()
    pieces = []
    literals = []
    at = 0
    for start, end in spans:
        if start < at:  # overlapping: not a body an API server sends
            return None
        pieces.append(raw[at:start])
        literals.append(raw[start:end])
        at = end
    pieces.append(raw[at:])
    return Split((spans.index(uid), tuple(pieces)), tuple(literals))


class Recall(NamedTuple):
    """What `Answers.recall` found: the remembered answer and the request's uid, or no
    answer and how to remember this request's answer (None: never remembered)."""

    answer: Answer | None
    uid: str
    split: Split | None


_NOT_REMEMBERED = Recall(None, "", None)


class Answers:
    """Answers remembered by request bytes, so a request seen before costs no parse and
    no decision.

    The API server sends a Deployment's replicas (a Job's pods...) as the same request
    again and again, byte for byte but for `request.uid` and the one-second timestamps
    in `metadata.managedFields` (a ReplicaSet's pods have no name yet). `split_request`
    cuts a body at those strings; once the same pieces have been decided twice (distinct
    pods never fill the cache), the Answer is remembered under them, after a probe
    showed that the strings between them are the request's uid and managedFields
    values only: the body parsed with other strings there must carry the other uid and
    be otherwise unchanged but for managedFields, which `decide` never reads. Then any
    body with the same pieces is that request with another uid and other timestamps
    (its strings are checked to be valid, the uid non-empty): `recall` returns the
    remembered Answer and the uid without parsing the body or deciding again.

    Entries are dropped when the template changes (a new template starts afresh) and
    bounded by bytes, least recently used first out. Requests whose decision raised
    (BadReview, a bug) are never remembered.
    """

    __slots__ = (
        "_bytes",
        "_entries",
        "_max_bytes",
        "_seen",
        "_template",
        "excluded_namespaces",
        "hits",
        "misses",
    )

    def __init__(
        self,
        *,
        excluded_namespaces: frozenset[str] = DEFAULT_EXCLUDED_NAMESPACES,
        max_bytes: int = ANSWER_CACHE_BYTES,
    ) -> None:
        self.excluded_namespaces = excluded_namespaces
        self._max_bytes = max_bytes
        self._entries: dict[RequestKey, Answer] = {}
        self._seen: set[int] = set()
        self._bytes = 0
        self._template: Template | None = None
        self.hits = 0  # recalls that found an answer
        self.misses = 0  # recalls that did not: the request is decided

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """What the remembered answers and their keys hold, in bytes."""
        return self._bytes

    def _current(self, template: Template | None) -> None:
        if template is not self._template:
            self._entries.clear()
            self._seen.clear()
            self._bytes = 0
            self._template = template

    def recall(self, raw: bytes, template: Template | None) -> Recall:
        """The remembered answer to the request `raw` and its uid, if any."""
        recall = self._recall(raw, template)
        if recall.answer is None:
            self.misses += 1
        else:
            self.hits += 1
        return recall

    def _recall(self, raw: bytes, template: Template | None) -> Recall:
        self._current(template)
        if len(raw) > self._max_bytes // 8:  # never remembered: spare the split and hash
            return _NOT_REMEMBERED
        split = split_request(raw)
        if split is None:
            return _NOT_REMEMBERED
        entries = self._entries
        key = split.key
        found = entries.pop(key, None)
        if found is None:
            return Recall(None, "", split)
        entries[key] = found  # most recently used last
        try:  # every string must be valid JSON, as the full parse would insist
            values = [orjson.loads(literal) for literal in split.literals]
        except ValueError:  # let the full path say why
            return _NOT_REMEMBERED
        uid = values[split.uid_at]
        if not uid:
            return _NOT_REMEMBERED
        return Recall(found, uid, split)

    def answer(self, review: Review, template: Template | None, *, split: Split | None) -> Answer:
        """Decide `review` and answer it; remember the answer under `split` (from
        `recall` on the same body) when it has been seen before. Raises what `decide`
        raises."""
        self._current(template)
        made = answer(
            review, decide(review.request, template, excluded_namespaces=self.excluded_namespaces)
        )
        if split is None:
            return made
        key = split.key
        fingerprint = hash(key)
        if fingerprint not in self._seen:
            if len(self._seen) >= _SEEN_LIMIT:
                self._seen.clear()
            self._seen.add(fingerprint)
            return made
        size = _size(key, made)
        if size > self._max_bytes // 8 or not _only_volatile_between(split):
            return made
        entries = self._entries
        while entries and self._bytes + size > self._max_bytes:
            old_key = next(iter(entries))
            self._bytes -= _size(old_key, entries.pop(old_key))
        entries[key] = made
        self._bytes += size
        return made


def _size(key: RequestKey, made: Answer) -> int:
    return sum(map(len, key[1])) + len(made.head) + len(made.tail)


def _only_volatile_between(split: Split) -> bool:
    """Whether the strings between the pieces are the request's (effective) uid and
    managedFields values only: put other strings there (an empty uid, each timestamp
    with a character more), and the request's uid must become empty and nothing else
    but managedFields change."""
    probes = [
        b'""' if index == split.uid_at else literal[:-1] + b'~"'
        for index, literal in enumerate(split.literals)
    ]
    try:
        original = orjson.loads(split.body(split.literals))
        probe = orjson.loads(split.body(probes))
    except ValueError:
        return False
    request = probe.get("request") if isinstance(probe, dict) else None
    if not isinstance(request, dict) or request.get("uid") != "":
        return False
    return _without_volatile(probe) == _without_volatile(original)


def _without_volatile(body: dict[str, Any]) -> dict[str, Any]:
    """`body` less request.uid and request.object.metadata.managedFields (copied along
    that path only)."""
    request = {k: v for k, v in body["request"].items() if k != "uid"}
    pod = request.get("object")
    if isinstance(pod, dict) and isinstance(pod.get("metadata"), dict):
        metadata = {k: v for k, v in pod["metadata"].items() if k != "managedFields"}
        request["object"] = {**pod, "metadata": metadata}
    return {**body, "request": request}
