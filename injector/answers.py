"""Answers serialised once and remembered by request bytes (pure).

A Deployment's replicas reach the webhook as the same AdmissionReview but for its uid:
`Answers` decides such a request once and answers every further replica without
parsing its body. `split_uid` and `Answers` say why that is always the answer a fresh
decision would give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

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


def split_uid(raw: bytes) -> tuple[bytes, bytes, bytes] | None:
    """`raw` as (before, literal, after) around the string value of the first `"uid":`,
    or None (no such key, not a string, or a string with escapes: never remembered).

    In valid JSON the `"` before that colon closes a key, so the literal is a whole token
    in value position: `before + L + after` parses the same for any string literal L,
    but for that one value.
    """
    start = raw.find(_UID_KEY)
    if start < 0:
        return None
    start += len(_UID_KEY)
    while raw[start : start + 1] in (b" ", b"\t", b"\r", b"\n"):
        start += 1
    if raw[start : start + 1] != b'"':
        return None
    end = raw.find(b'"', start + 1) + 1
    if end <= 0:
        return None
    literal = raw[start:end]
    if b"\\" in literal:
        return None
    return raw[:start], literal, raw[end:]


RequestKey = tuple[bytes, bytes]


class Recall(NamedTuple):
    """What `Answers.recall` found: the remembered answer and the request's uid, or no
    answer and the key to remember this request's answer under (None: never remembered)."""

    answer: Answer | None
    uid: str
    key: RequestKey | None


_NOT_REMEMBERED = Recall(None, "", None)


class Answers:
    """Answers remembered by request bytes, so a request seen before costs no parse and
    no decision.

    The API server sends a Deployment's replicas as the same request again and again,
    byte for byte but for `request.uid` (a ReplicaSet's pods have no name yet). Such a
    request is `before + uid + after` (`split_uid`); once the same (before, after) has
    been decided twice (distinct pods never fill the cache), its Answer is remembered
    under those bytes, after a probe showed that the literal between them is the
    request's uid: the request parsed with another uid there must carry that other uid.
    Then any body with the same (before, after) is that request with another uid (the
    literal is checked to be a valid, non-empty JSON string): `recall` returns the
    remembered Answer and the uid without parsing the body or deciding again.

    Entries are dropped when the template changes (a new template starts afresh) and
    bounded by bytes, least recently used first out. Requests whose decision raised
    (BadReview, a bug) are never remembered.
    """

    __slots__ = (
        "_bytes",
        "_entries",
        "_excluded",
        "_max_bytes",
        "_seen",
        "_template",
        "hits",
        "misses",
    )

    def __init__(
        self,
        *,
        excluded_namespaces: frozenset[str] = DEFAULT_EXCLUDED_NAMESPACES,
        max_bytes: int = ANSWER_CACHE_BYTES,
    ) -> None:
        self._excluded = excluded_namespaces
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
        parts = split_uid(raw)
        if parts is None:
            return _NOT_REMEMBERED
        before, literal, after = parts
        key = (before, after)
        entries = self._entries
        found = entries.pop(key, None)
        if found is None:
            return Recall(None, "", key)
        entries[key] = found  # most recently used last
        try:
            uid = orjson.loads(literal)
        except ValueError:  # not a valid string literal: let the full path say why
            return _NOT_REMEMBERED
        if not uid:
            return _NOT_REMEMBERED
        return Recall(found, uid, key)

    def answer(
        self, review: Review, template: Template | None, *, key: RequestKey | None
    ) -> Answer:
        """Decide `review` and answer it; remember the answer under `key` (from `recall`
        on the same body) when that key has been seen before. Raises what `decide` raises."""
        self._current(template)
        made = answer(review, decide(review.request, template, excluded_namespaces=self._excluded))
        if key is None:
            return made
        before, after = key
        fingerprint = hash(key)
        if fingerprint not in self._seen:
            if len(self._seen) >= _SEEN_LIMIT:
                self._seen.clear()
            self._seen.add(fingerprint)
            return made
        size = len(before) + len(after) + len(made.head) + len(made.tail)
        if size > self._max_bytes // 8 or not _uid_sits_between(before, after):
            return made
        entries = self._entries
        while entries and self._bytes + size > self._max_bytes:
            old_key = next(iter(entries))
            old = entries.pop(old_key)
            self._bytes -= len(old_key[0]) + len(old_key[1]) + len(old.head) + len(old.tail)
        entries[key] = made
        self._bytes += size
        return made


def _uid_sits_between(before: bytes, after: bytes) -> bool:
    """Whether the string between `before` and `after` is the request's (effective) uid:
    put an empty one there, and the request's uid must become empty."""
    try:
        probe = orjson.loads(before + b'""' + after)
    except ValueError:
        return False
    request = probe.get("request") if isinstance(probe, dict) else None
    return isinstance(request, dict) and request.get("uid") == ""
