"""Answers remembered by request bytes: a recalled answer is always the answer a full
parse and decision would give, and only requests that are provably the same but for
their uid are recalled."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from injector.admission import BadReview, build_response, decide, parse_review
from injector.answers import Answer, Answers, answer, split_request
from injector.template import Template, load_template
from tests.helpers import (
    DEFAULT_TEMPLATE,
    admission_fixture,
    admission_fixture_names,
    decode_patch,
)


def compact(review: dict[str, Any], uid: str) -> bytes:
    review = json.loads(json.dumps(review))
    review["request"]["uid"] = uid
    return json.dumps(review, separators=(",", ":")).encode()


def full_answer(raw: bytes, template: Template | None) -> bytes:
    """What the webhook answers without any memory: parse, decide, serialise."""
    review = parse_review(orjson.loads(raw))
    return orjson.dumps(build_response(review, decide(review.request, template)))


def admit(answers: Answers, raw: bytes, template: Template | None) -> tuple[bytes, bool]:
    """The webhook's path through `Answers`: (answer body, recalled?)."""
    recall = answers.recall(raw, template)
    if recall.answer is not None:
        return recall.answer.body(recall.uid), True
    review = parse_review(orjson.loads(raw))
    made = answers.answer(review, template, split=recall.split)
    return made.body(review.uid), False


@pytest.mark.parametrize("name", admission_fixture_names())
def test_answer_body_is_the_serialised_response_byte_for_byte(
    name: str, template: Template
) -> None:
    review = parse_review(admission_fixture(name))
    made: Answer = answer(review, decide(review.request, template))
    assert made.body(review.uid) == orjson.dumps(build_response(review, made.outcome))


@pytest.mark.parametrize("name", admission_fixture_names())
def test_a_request_seen_again_with_a_new_uid_is_recalled_with_that_uid(
    name: str, template: Template
) -> None:
    answers = Answers()
    fixture = admission_fixture(name)
    seen = []
    for n in range(4):
        raw = compact(fixture, f"uid-{n}-{name}")
        body, recalled = admit(answers, raw, template)
        assert body == full_answer(raw, template)
        assert orjson.loads(body)["response"]["uid"] == f"uid-{n}-{name}"
        seen.append(recalled)
    assert seen == [False, False, True, True]  # remembered on the second sight


def test_a_request_seen_once_is_not_remembered(template: Template) -> None:
    answers = Answers()
    for n in range(20):
        fixture = admission_fixture("server-mesher")
        fixture["request"]["object"]["metadata"]["name"] = f"pod-{n}"
        admit(answers, compact(fixture, f"u{n}"), template)
    assert len(answers) == 0


def test_whitespace_around_the_uid_value_is_recalled_too(template: Template) -> None:
    answers = Answers()
    for n in range(3):
        fixture = admission_fixture("server-mesher")
        fixture["request"]["uid"] = f"u{n}"
        raw = json.dumps(fixture).encode()  # "uid": "u0", with a space
        body, recalled = admit(answers, raw, template)
        assert body == full_answer(raw, template)
    assert recalled


def test_a_new_template_forgets_every_answer(template: Template) -> None:
    answers = Answers()
    fixture = admission_fixture("server-mesher")
    for n in range(3):
        admit(answers, compact(fixture, f"u{n}"), template)
    assert len(answers) == 1
    edited = load_template(DEFAULT_TEMPLATE.read_text().replace("1.6.3", "1.6.4"))
    raw = compact(fixture, "u9")
    body, recalled = admit(answers, raw, edited)
    assert not recalled
    assert len(answers) == 0
    assert body == full_answer(raw, edited)
    assert "1.6.4" in json.dumps(decode_patch(orjson.loads(body)["response"]))


def test_a_request_that_cannot_be_decided_is_never_remembered(template: Template) -> None:
    answers = Answers()
    fixture = admission_fixture("server-mesher")
    fixture["request"]["object"]["spec"]["containers"] = "not a list"
    for n in range(3):
        raw = compact(fixture, f"u{n}")
        recall = answers.recall(raw, template)
        assert recall.answer is None
        with pytest.raises(BadReview):
            answers.answer(parse_review(orjson.loads(raw)), template, split=recall.split)
    assert len(answers) == 0


def crafted(first_uid: str, request_uid: str) -> bytes:
    """A body whose first `"uid":` is not the request's uid (the pod's, set first)."""
    review = admission_fixture("server-mesher")
    request = review["request"]
    pod = request["object"]
    pod["metadata"] = {"uid": first_uid, **pod["metadata"]}
    review["request"] = {"object": pod, **{k: v for k, v in request.items() if k != "object"}}
    review["request"]["uid"] = request_uid
    return json.dumps(review, separators=(",", ":")).encode()


def test_a_first_uid_that_is_not_the_requests_is_never_remembered(template: Template) -> None:
    answers = Answers()
    for _ in range(4):
        raw = crafted("same", "same")  # the probe must tell the pod's uid from the request's
        body, recalled = admit(answers, raw, template)
        assert not recalled
        assert body == full_answer(raw, template)
    assert len(answers) == 0
    # Had it been remembered, a request differing only in the pod's uid would have been
    # answered with that pod uid instead of its own request uid.
    body, _ = admit(answers, crafted("other", "same"), template)
    assert orjson.loads(body)["response"]["uid"] == "same"


def test_a_duplicate_uid_key_is_answered_with_the_uid_that_counts(template: Template) -> None:
    answers = Answers()
    review = admission_fixture("server-mesher")
    text = json.dumps(review, separators=(",", ":"))
    uid = review["request"]["uid"]
    for n in range(4):
        # `"uid":"first-N"` comes first; the parser keeps the last one, the real uid.
        raw = text.replace(f'"uid":"{uid}"', f'"uid":"first-{n}","uid":"{uid}"').encode()
        assert orjson.loads(raw)["request"]["uid"] == uid
        body, recalled = admit(answers, raw, template)
        assert not recalled
        assert orjson.loads(body)["response"]["uid"] == uid


@pytest.mark.parametrize(
    "literal",
    [b'""', b'"bad\x01control"', b'"\xff\xfe"', b'"unterminated'],
)
def test_a_broken_uid_in_a_remembered_request_goes_the_full_way(
    template: Template, literal: bytes
) -> None:
    answers = Answers()
    fixture = admission_fixture("server-mesher")
    for n in range(3):
        admit(answers, compact(fixture, f"u{n}"), template)
    assert len(answers) == 1
    raw = compact(fixture, "MARK").replace(b'"MARK"', literal)
    assert answers.recall(raw, template).answer is None
    with pytest.raises((ValueError, BadReview)):  # what the webhook turns into a 400
        parse_review(orjson.loads(raw))


def test_a_broken_timestamp_in_a_remembered_request_goes_the_full_way(
    template: Template,
) -> None:
    answers = Answers()
    fixture = admission_fixture("server-mesher")
    for n in range(3):
        admit(answers, compact(fixture, f"u{n}"), template)
    raw = compact(with_managed_time(fixture, "MARK"), "u9").replace(b'"MARK"', b'"\x01"')
    assert answers.recall(raw, template).answer is None
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)


def test_uids_written_with_escapes_are_never_remembered() -> None:
    assert split_request(b'{"request":{"uid":"a\\u0062c"}}') is None
    assert split_request(b'{"request":{"uid":5}}') is None
    assert split_request(b'{"request":{}}') is None
    split = split_request(b'{"request":{"uid": "abc"},"x":1}')
    assert split is not None
    assert split.key == (0, (b'{"request":{"uid": ', b'},"x":1}'))
    assert split.literals == (b'"abc"',)


def test_bodies_are_cut_at_the_uid_and_every_managed_fields_time() -> None:
    raw = b'{"a":{"time":"T1"},"request":{"uid":"U","m":[{"time": "T2"}]}}'
    split = split_request(raw)
    assert split is not None
    assert split.literals == (b'"T1"', b'"U"', b'"T2"')
    assert split.uid_at == 1
    assert split.body(split.literals) == raw


def with_managed_time(review: dict[str, Any], time: str) -> dict[str, Any]:
    review = json.loads(json.dumps(review))
    for entry in review["request"]["object"]["metadata"]["managedFields"]:
        entry["time"] = time
    return review


def test_replicas_created_in_other_seconds_are_recalled(template: Template) -> None:
    answers = Answers()
    fixture = admission_fixture("server-mesher-7d9f8b6c5")
    seen = []
    for n in range(4):
        raw = compact(with_managed_time(fixture, f"2026-11-25T08:42:{10 + n}Z"), f"u{n}")
        body, recalled = admit(answers, raw, template)
        assert body == full_answer(raw, template)
        seen.append(recalled)
    assert seen == [False, False, True, True]


@pytest.mark.parametrize("name", admission_fixture_names())
def test_decisions_never_read_managed_fields(name: str, template: Template) -> None:
    review = admission_fixture(name)
    changed = json.loads(json.dumps(review))
    changed["request"]["object"]["metadata"]["managedFields"] = [{"time": "x", "manager": "y"}]
    assert full_answer(compact(review, "u"), template) == full_answer(
        compact(changed, "u"), template
    )


def test_a_time_outside_managed_fields_is_never_remembered(template: Template) -> None:
    answers = Answers()
    for n in range(4):
        fixture = admission_fixture("server-mesher")
        fixture["request"]["object"]["metadata"]["labels"]["time"] = "noon"
        _, recalled = admit(answers, compact(fixture, f"u{n}"), template)
        assert not recalled
    assert len(answers) == 0


def test_remembered_answers_are_bounded_by_bytes(template: Template) -> None:
    one = compact(admission_fixture("server-mesher"), "u")
    answers = Answers(max_bytes=len(one) * 8 * 2)  # room for a few entries, one entry < 1/8
    for n in range(12):
        fixture = admission_fixture("server-mesher")
        fixture["request"]["object"]["metadata"]["name"] = f"pod-{n}"
        for m in range(2):
            admit(answers, compact(fixture, f"u{n}-{m}"), template)
    assert 0 < len(answers) < 12
    # the most recent is kept, the oldest went first
    latest = admission_fixture("server-mesher")
    latest["request"]["object"]["metadata"]["name"] = "pod-11"
    assert admit(answers, compact(latest, "again"), template)[1]
    oldest = admission_fixture("server-mesher")
    oldest["request"]["object"]["metadata"]["name"] = "pod-0"
    assert not admit(answers, compact(oldest, "again"), template)[1]


def test_a_body_too_big_to_remember_is_not_even_split(template: Template) -> None:
    raw = compact(admission_fixture("server-mesher"), "u")
    answers = Answers(max_bytes=len(raw) * 8 - 8)
    assert answers.recall(raw, template).split is None
    assert Answers(max_bytes=len(raw) * 8).recall(raw, template).split is not None


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(st.sampled_from(admission_fixture_names()), min_size=1, max_size=30),
    uids=st.lists(st.uuids(), min_size=30, max_size=30),
    data=st.data(),
)
def test_recalled_or_not_every_answer_equals_the_full_path(
    names: list[str], uids: list[Any], data: st.DataObject
) -> None:
    template = load_template(DEFAULT_TEMPLATE.read_text())
    answers = Answers()
    for name, uid in zip(names, uids, strict=False):
        raw = compact(admission_fixture(name), str(uid))
        if data.draw(st.booleans()):
            raw = raw.replace(b'"uid":"', b'"uid": "', 1)
        second = data.draw(st.integers(min_value=0, max_value=2))
        raw = raw.replace(
            b'"time":"2026-11-25T08:42:08Z"', b'"time":"2026-11-25T08:42:1%dZ"' % second
        )
        assert admit(answers, raw, template)[0] == full_answer(raw, template)
