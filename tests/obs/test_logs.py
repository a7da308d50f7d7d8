from __future__ import annotations

import datetime
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from injector.obs import logs


@pytest.fixture
def stream() -> Iterator[io.BytesIO]:
    out = io.BytesIO()
    logs.configure(log_format="json", level="info", stream=out)
    yield out
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def lines(out: io.BytesIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_our_events_and_library_logs_are_the_same_json_lines(stream: io.BytesIO) -> None:
    logs.get_logger("mesher_injector").info("admission", uid="u1", decision="injected")
    logging.getLogger("aiohttp.server").warning("library says %s", "hi")
    ours, theirs = lines(stream)
    assert ours["event"] == "admission"
    assert ours["uid"] == "u1"
    assert ours["level"] == "info"
    assert ours["logger"] == "mesher_injector"
    assert theirs["event"] == "library says hi"
    assert theirs["level"] == "warning"
    assert theirs["logger"] == "aiohttp.server"
    for line in (ours, theirs):  # ISO 8601 in UTC, to the microsecond
        stamp = datetime.datetime.strptime(str(line["timestamp"]), "%Y-%m-%dT%H:%M:%S.%fZ")
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        assert abs((now - stamp).total_seconds()) < 60


def test_each_line_is_written_whole_as_it_is_logged(stream: io.BytesIO) -> None:
    log = logs.get_logger("t")
    log.info("one")
    assert stream.getvalue().endswith(b"\n")
    assert [line["event"] for line in lines(stream)] == ["one"]
    logging.getLogger("aiohttp.server").warning("two")
    assert [line["event"] for line in lines(stream)] == ["one", "two"]


def test_below_the_level_nothing_is_written(stream: io.BytesIO) -> None:
    logs.configure(log_format="json", level="warning", stream=stream)
    logs.get_logger("t").info("quiet")
    logging.getLogger("aiohttp.server").info("quiet too")
    logs.get_logger("t").warning("loud")
    assert [line["event"] for line in lines(stream)] == ["loud"]


def test_values_json_cannot_hold_are_written_as_text(stream: io.BytesIO) -> None:
    logs.get_logger("mesher_injector").info("admission", path=Path("/x"), ms=0.25)
    (line,) = lines(stream)
    assert line["path"] == "/x"
    assert line["ms"] == 0.25


def test_events_are_captured_in_tests_like_any_structlog_event(stream: io.BytesIO) -> None:
    log = logs.get_logger("mesher_injector")
    with structlog.testing.capture_logs() as captured:
        log.warning("admission", uid="u2")
    assert captured == [
        {"logger": "mesher_injector", "uid": "u2", "event": "admission", "log_level": "warning"}
    ]
    assert lines(stream) == []


def test_the_console_format_is_text_not_json() -> None:
    out = io.BytesIO()
    logs.configure(log_format="console", level="info", stream=out)
    try:
        logs.get_logger("mesher_injector").info("admission", uid="u3")
        logging.getLogger("aiohttp.server").warning("library says hi")
        text = out.getvalue().decode()
        assert "admission" in text
        assert "uid=u3" in text
        assert "library says hi" in text
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
