"""The one request shape the API server sends to the mutating webhook, recognised in the
bytes of a connection and answered without aiohttp's request cycle.

aiohttp's per-request machinery (parser callbacks, a StreamReader, a request object, a
task, two loop iterations, a response object, header writing) costs more CPU than the
whole admission decision (bench/RESULTS.md). `ConnectionGuard` reads the bytes
of a fresh keep-alive connection with `request_head` first: once they are exactly one
complete request of the strict shape below (in one read or several), the webhook
answers it at once with the bytes `response` makes, the same status line and headers
aiohttp would send. Anything else (another path or method, HTTP/1.0, a header outside
the shape, a pipelined request, a body over the limit) is DECLINED, and the
connection is aiohttp's from then on, with every bound and error answer as before. So
this recognises less than HTTP allows, never more: declining is always correct.

The shape: `POST /mutate[?query] HTTP/1.1`, header lines `token: value` of printable
ASCII (no obs-fold, no obs-text), exactly one decimal Content-Length, exactly one
non-empty Host (aiohttp refuses an HTTP/1.1 request without), Content-Type exactly
`application/json` where given, and none of Transfer-Encoding, Content-Encoding,
Expect, Connection or Upgrade. tests/test_fastpath.py checks against aiohttp's own
parser that whatever this takes, aiohttp reads as the same single request.
"""

from __future__ import annotations

import re
import time

from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE

# aiohttp's own limits for a request line and a header line (max_line_size,
# max_field_size): a head beyond them is aiohttp's to refuse.
MAX_HEAD_BYTES = 8190 * 2
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEAD = re.compile(
    rb"POST /mutate(?:\?[!-~]*)? HTTP/1\.1((?:\r\n" + _TOKEN + rb":[\t\x20-\x7e]*)*)"
)
# Headers that change how the body or the connection is read: aiohttp's business.
_DECLINED = frozenset(
    (b"transfer-encoding", b"content-encoding", b"expect", b"connection", b"upgrade")
)


# request_head's answers besides a (body start, request length) pair.
INCOMPLETE = (-1, -1)  # the head is not all there yet, and what is there may be of the shape
DECLINED = (-2, -2)  # not of the shape: aiohttp's
_METHOD_PATH = b"POST /mutate"


def request_head(data: bytes | bytearray, max_body: int, scanned: int = 0) -> tuple[int, int]:
    """For the request that `data` starts: (where its body starts, its whole length) when
    its head is all there and of the shape in the module's docstring with a body of at
    most `max_body` bytes; INCOMPLETE when the head may still come; else DECLINED.
    `scanned`: how many bytes of `data` an earlier call searched (so a head that
    arrives a byte at a time is searched once, not once per byte)."""
    end = data.find(b"\r\n\r\n", max(0, scanned - 3), MAX_HEAD_BYTES + 4)
    if end < 0:
        if len(data) >= MAX_HEAD_BYTES + 4 or not _METHOD_PATH.startswith(data[:12]):
            return DECLINED
        return INCOMPLETE
    match = _HEAD.fullmatch(data, 0, end)
    if match is None:
        return DECLINED
    length = -1
    hosts = 0
    for line in match[1].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"host":
            hosts += 1
            if not value.strip(b" \t"):
                return DECLINED
        elif name == b"content-length":
            value = value.strip(b" \t")
            if length >= 0 or not value.isdigit() or len(value) > 10:
                return DECLINED
            length = int(value)
        elif name == b"content-type":
            if value.strip(b" \t") != b"application/json":
                return DECLINED
        elif name in _DECLINED:
            return DECLINED
    if hosts != 1 or length < 0 or length > max_body:
        return DECLINED
    return end + 4, end + 4 + length


_OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Date: %b\r\nServer: " + SERVER_SOFTWARE.encode() + b"\r\n\r\n%b"
)


class _Date:
    """aiohttp's Date header value, made once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = rfc822_formatted_time().encode()
        return self._value


_date = _Date()


def response(body: bytes) -> bytes:
    """A 200 answer carrying the JSON `body`, with the headers aiohttp sends for a
    `web.Response(body=..., content_type="application/json")`."""
    return _OK % (len(body), _date(), body)
