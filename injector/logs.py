"""structlog set-up: one JSON (or console) line per event on stdout.

Our own events go through structlog's native path (no stdlib LogRecord, orjson
rendering, bytes straight to stdout): it runs once per admission, so it must be cheap.
Other libraries' stdlib logging (aiohttp, kubernetes_asyncio) is rendered by the same
processors and written to the same stream, so every line is the same JSON.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, BinaryIO

import orjson
import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _json(_logger: Any, _method: str, event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, default=str)


class _LineWriter:
    """Whole lines to one binary stream, from structlog and from stdlib handlers alike."""

    __slots__ = ("_lock", "_stream")

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write_line(self, line: bytes) -> None:
        with self._lock:
            self._stream.write(line + b"\n")
            self._stream.flush()


class _Logger:
    """The structlog logger: renders to bytes, writes one line."""

    __slots__ = ("_writer",)

    def __init__(self, writer: _LineWriter) -> None:
        self._writer = writer

    def msg(self, message: bytes | str) -> None:
        self._writer.write_line(message if isinstance(message, bytes) else message.encode())

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class _StdlibHandler(logging.Handler):
    def __init__(self, writer: _LineWriter, formatter: logging.Formatter) -> None:
        super().__init__()
        self._writer = writer
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.write_line(self.format(record).encode())
        except Exception:  # logging must never take the server down
            self.handleError(record)


def configure(
    *, log_format: str = "json", level: str = "info", stream: BinaryIO | None = None
) -> None:
    writer = _LineWriter(stream or sys.stdout.buffer)
    renderer: Any = _json if log_format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=lambda *_args: _Logger(writer),
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        cache_logger_on_first_use=True,
    )
    foreign = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    root = logging.getLogger()
    root.handlers[:] = [_StdlibHandler(writer, foreign)]
    root.setLevel(LEVELS[level])
    # One line per decision is ours; aiohttp's access log would double it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name).bind(logger=name)
