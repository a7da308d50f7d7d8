"""structlog set-up: one JSON (or console) line per event on stdout.

Our own events go through structlog's native path (no stdlib LogRecord, orjson
rendering, bytes straight to stdout's buffer): it runs once per admission, so it must
be cheap. Lines are written in batches by `flush()`, which the server calls every
0.2 s, on shutdown and at exit (and whenever 256 lines are waiting), not once per line. Other
libraries' stdlib logging (aiohttp, kubernetes_asyncio) is rendered by the same
processors and written to the same stream, so every line is the same JSON.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections.abc import MutableMapping
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


def _json_text(_logger: Any, _method: str, event: dict[str, Any]) -> str:
    """The same for stdlib's formatter, which must return text."""
    return orjson.dumps(event, default=str).decode()


class _LineWriter:
    """Whole lines to one binary stream, from structlog and from stdlib handlers alike.

    Lines are copied into one buffer and written in batches: one write per BATCH lines
    or per `flush()`, so logging an admission costs no system call. Copying (rather
    than keeping each line's bytes object until the write) lets the allocator reuse the
    line's memory at once: keeping 256 of them made every line cost several times more
    to render (bench/RESULTS.md).
    """

    BATCH = 256
    __slots__ = ("_buffer", "_count", "_lock", "_stream")

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._count = 0

    def write_line(self, line: bytes) -> None:
        self.write(line + b"\n")

    def write(self, line: bytes) -> None:
        """One line, its newline included."""
        with self._lock:
            self._buffer += line
            self._count += 1
            full = self._count >= self.BATCH
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._buffer:
                self._stream.write(self._buffer)
                self._buffer.clear()
                self._count = 0
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


_writer: _LineWriter | None = None
_NEWLINE = orjson.OPT_APPEND_NEWLINE
# A copy of the JSON chain `configure` set up, and its timestamper: `info` renders the
# same line without running the chain while a logger's chain is still equal to it
# (structlog.testing.capture_logs, say, swaps the chain's contents).
_json_chain: list[Any] | None = None
_timestamper: Any = None


def flush() -> None:
    """Write out buffered log lines."""
    if _writer is not None:
        _writer.flush()


class _Timestamper:
    """ISO 8601 UTC with microseconds, like structlog's, formatting the date part once a second."""

    __slots__ = ("_next", "_prefix", "_start")

    def __init__(self) -> None:
        self._start = self._next = 0  # the current second, in ns since the epoch, and the next
        self._prefix = ""

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event["timestamp"] = self.now()
        return event

    def now(self) -> str:
        ns = time.time_ns()
        if not self._start <= ns < self._next:  # another second (or the clock went back)
            second = ns // 1_000_000_000
            self._start, self._next = second * 1_000_000_000, (second + 1) * 1_000_000_000
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        # the microseconds with their leading zeros: 1 + six digits, less the 1
        return self._prefix + str((ns - self._start) // 1000 + 1_000_000)[1:] + "Z"


def configure(
    *, log_format: str = "json", level: str = "info", stream: BinaryIO | None = None
) -> None:
    global _writer, _json_chain, _timestamper
    if _writer is None:
        atexit.register(flush)
    else:
        _writer.flush()
    writer = _writer = _LineWriter(stream or sys.stdout.buffer)
    console = structlog.dev.ConsoleRenderer(colors=False)
    renderer: Any = _json if log_format == "json" else console
    foreign_renderer: Any = _json_text if log_format == "json" else console
    timestamper = _timestamper = _Timestamper()
    chain: list[Any] = [
        structlog.processors.add_log_level,
        timestamper,
        structlog.processors.format_exc_info,
        renderer,
    ]
    _json_chain = list(chain) if renderer is _json else None
    structlog.configure(
        # No merge_contextvars: nothing binds context variables, and this chain runs per admission.
        processors=chain,
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
            foreign_renderer,
        ],
    )
    root = logging.getLogger()
    root.handlers[:] = [_StdlibHandler(writer, foreign)]
    root.setLevel(LEVELS[level])
    # One line per decision is ours; aiohttp's access log would double it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name).bind(logger=name)


def info(log: Any, event: str, fields: dict[str, Any], *, level: str = "info") -> None:
    """`log.info(event, **fields)` (or `level`'s method) for the line logged on every
    request: the same bound context, processors, level filter and output, without the
    three copies of the keyword arguments that a structlog bound logger makes per call.
    With `configure`'s JSON chain, the line is rendered directly: the same keys in the
    same order as the chain makes them (level, timestamp; no exc_info here), one
    orjson call (bench/RESULTS.md). `fields` is consumed. `log` is a `get_logger` logger
    (its renderer returns the line as bytes or text)."""
    if not log.is_enabled_for(LEVELS[level]):
        return
    if log._processors == _json_chain and "exc_info" not in fields:
        line = {**log._context, **fields, "event": event, "level": level}
        line["timestamp"] = _timestamper.now()
        log._logger._writer.write(orjson.dumps(line, default=str, option=_NEWLINE))
        return
    event_dict: Any = {**log._context, **fields, "event": event}
    try:
        for processor in log._processors:
            event_dict = processor(log._logger, level, event_dict)
    except structlog.DropEvent:
        return
    getattr(log._logger, level)(event_dict)
