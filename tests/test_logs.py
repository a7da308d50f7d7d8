from __future__ import annotations

import datetime
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from injector import logs


@pytest.fixture
def stream() -> Iterator[io.BytesIO]:
    out = io.BytesIO()
    logs.configure(log_format="json", level="info", stream=out)
    yield out
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def lines(out: io.BytesIO) -> list[dict[str, object]]:
    logs.flush()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_our_events_and_library_logs_are_the_same_json_lines(stream: io.BytesIO) -> None:
    logs.get_logger("mesher_injector").info("admission", uid="u1", decision="injected")
    logging.getLogger("aiohttp.server").warning("library says %s", "hi")
    ours, theirs = lines(stream)
    assert ours["event"] == "admission"
    assert ours["uid"] == "u1"
    assert ours["level"] == "info"
    assert ours["logger"] == "mesher_injector"
    assert str(ours["timestamp"]).endswith("Z")
    assert theirs["event"] == "library says hi"
    assert theirs["level"] == "warning"
    assert theirs["logger"] == "aiohttp.server"


def test_lines_wait_for_a_flush_or_a_full_batch(stream: io.BytesIO) -> None:
    log = logs.get_logger("t")
    log.info("one")
    assert stream.getvalue() == b""
    for n in range(logs._LineWriter.BATCH):
        log.info("many", n=n)
    assert stream.getvalue().count(b"\n") == logs._LineWriter.BATCH
    assert len(lines(stream)) == logs._LineWriter.BATCH + 1


def test_below_the_level_nothing_is_written(stream: io.BytesIO) -> None:
    logs.configure(log_format="json", level="warning", stream=stream)
    logs.get_logger("t").info("quiet")
    logs.info(logs.get_logger("t"), "quiet too", {"n": 1})
    logs.get_logger("t").warning("loud")
    assert [line["event"] for line in lines(stream)] == ["loud"]


@pytest.mark.parametrize("level", ["info", "warning"])
def test_the_per_request_path_writes_the_line_a_bound_logger_would(
    stream: io.BytesIO, level: str
) -> None:
    """It renders the line itself (not through the processors): the same line."""
    log = logs.get_logger("mesher_injector")
    fields = {"uid": "u1", "decision": "injected", "warnings": 0, "ms": 0.25, "path": Path("/x")}
    getattr(log, level)("admission", **fields)
    logs.info(log, "admission", dict(fields), level=level)
    slow, fast = lines(stream)
    assert fast["level"] == level
    assert fast["path"] == "/x"
    assert slow.pop("timestamp")
    assert fast.pop("timestamp")
    assert fast == slow
    assert list(fast) == list(slow)  # the same keys in the same order


def test_the_per_request_path_is_captured_like_any_event(stream: io.BytesIO) -> None:
    log = logs.get_logger("mesher_injector")
    with structlog.testing.capture_logs() as captured:
        logs.info(log, "admission", {"uid": "u2"})
    assert captured == [
        {"logger": "mesher_injector", "uid": "u2", "event": "admission", "log_level": "info"}
    ]
    assert lines(stream) == []


def test_the_per_request_path_in_console_format_runs_the_processors() -> None:
    out = io.BytesIO()
    logs.configure(log_format="console", level="info", stream=out)
    try:
        logs.info(logs.get_logger("mesher_injector"), "admission", {"uid": "u3"})
        logs.flush()
        text = out.getvalue().decode()
        assert "admission" in text
        assert "uid=u3" in text
        assert not text.lstrip().startswith("{")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def test_exceptions_are_rendered_into_the_line(stream: io.BytesIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logs.get_logger("t").exception("failed")
    (line,) = lines(stream)
    assert "ValueError: boom" in str(line["exception"])


def test_timestamps_are_structlogs_iso_format_across_seconds_and_a_clock_step_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stamper = logs._Timestamper()
    start = 1_795_700_000 * 10**9
    for ns in (
        start + 7_000,  # 7 us into a second
        start + 999_999_999,  # its last microsecond
        start + 10**9,  # the next second
        start + 10**9 + 123_456_789,
        start - 5 * 10**9 + 1_000,  # the clock stepped back
        start + 86_400 * 10**9 + 999_999,  # the next day
    ):
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        stamp = datetime.datetime.fromtimestamp(ns // 1000 / 10**6, datetime.UTC)
        assert stamper.now() == stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
