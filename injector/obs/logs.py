"""structlog set-up: one JSON (or console) line per event on stdout.

Our own events go through structlog's processors to its BytesLogger (orjson renders the
JSON). Other libraries' stdlib logging (aiohttp, kubernetes_asyncio) is rendered by the
same processors, through structlog's ProcessorFormatter, and written to the same stream,
so every line is the same JSON. Each line is written and flushed whole as it is logged.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, BinaryIO

import orjson
import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _dumps(event: Any, **_options: Any) -> bytes:
    return orjson.dumps(event, default=str)


def _dumps_text(event: Any, **_options: Any) -> str:
    """The same for stdlib's formatter, which must return text."""
    return orjson.dumps(event, default=str).decode()


def _encoded(_logger: Any, _method: str, line: str | bytes) -> bytes:
    """The console renderer's text as the bytes BytesLogger writes."""
    return line.encode() if isinstance(line, str) else line


class _LineHandler(logging.Handler):
    """Stdlib records as whole lines on the binary stream our own events go to."""

    def __init__(self, stream: BinaryIO, formatter: logging.Formatter) -> None:
        super().__init__()
        self.stream = stream
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:  # called under the handler's lock
        try:
            self.stream.write(self.format(record).encode() + b"\n")
            self.stream.flush()
        except Exception:  # logging must never take the server down
            self.handleError(record)


def configure(
    *, log_format: str = "json", level: str = "info", stream: BinaryIO | None = None
) -> None:
    out = stream or sys.stdout.buffer
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if log_format == "json":
        ours: list[Any] = [structlog.processors.JSONRenderer(serializer=_dumps)]
        foreign: Any = structlog.processors.JSONRenderer(serializer=_dumps_text)
    else:
        console = structlog.dev.ConsoleRenderer(colors=False)
        ours, foreign = [console, _encoded], console
    structlog.configure(
        processors=[*shared, *ours],
        logger_factory=structlog.BytesLoggerFactory(out),
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            foreign,
        ],
    )
    root = logging.getLogger()
    root.handlers[:] = [_LineHandler(out, formatter)]
    root.setLevel(LEVELS[level])
    # One line per decision is ours; aiohttp's access log would double it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name).bind(logger=name)
