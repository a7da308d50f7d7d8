"""The whole cost budget of one request, in one place (pure).

Anyone who may create a pod in a labelled namespace controls most of an AdmissionReview,
and the API server forwards it before it checks metadata limits (DESIGN 12). Every bound
the injector applies to what it reads, keeps or writes is a named constant here, with why.
"""

from __future__ import annotations

from collections.abc import Iterable

# --- what is read ------------------------------------------------------------------

# The API server accepts request bodies up to 3 MiB; the AdmissionReview around the
# (defaulted) object adds a little. Bigger bodies get 413 and are never read whole.
MAX_BODY_BYTES = 4 * 1024 * 1024
# Request bodies held at once, across all connections: any pod that can reach the port
# can open connections and stall a body each, and the Deployment's memory limit is
# 256Mi. A body that would take the total past this is refused at once (429 with
# Retry-After, which the API server retries within its webhook timeout). 32 MiB is
# eight largest bodies, or hundreds of ordinary pods at a time.
MAX_BODY_BYTES_IN_FLIGHT = 32 * 1024 * 1024
# Bodies over this size (no ordinary pod's: a few KiB, tens with many containers) may fill
# only LARGE_BODIES_SHARE of that budget, so a flood of large stalled bodies always
# leaves room for the API server's ordinary requests (so the budget must be at least
# 4/3 of MAX_BODY_BYTES).
LARGE_BODY_BYTES = 64 * 1024
LARGE_BODIES_SHARE = 0.75
# aiohttp's read buffer per request body (its read_bufsize; its default is 64 KiB): it
# parses up to 32 pipelined requests of a connection ahead of their handlers, each body
# buffered up to twice this, outside the body budget. An API server's pod fits in one
# buffer; a client pipelining 400 KB bodies without reading its answers held ~14 MiB
# per connection with the default, ~2 MiB with this (bench/RESULTS.md).
READ_BUFFER_BYTES = 16 * 1024
# What a 429 tells the client to wait before it asks again.
RETRY_AFTER_S = 1
# Kubernetes uids are 36 characters; anything much longer is not from an API server.
MAX_UID_CHARS = 128
# servicePorts items parsed: a pod listens on a handful of ports, never thousands.
MAX_SERVICE_PORTS = 64
# Containers and init containers of a pod we inject: one env op per app container, so
# the answer grows with them; real pods have a few (the default limit per pod is none).
MAX_CONTAINERS = 100
# A value that becomes a template variable (label, name, namespace): Kubernetes allows
# at most 253 characters for a name and 63 for a label value, checked after admission,
# so anything longer would be refused anyway; it must not be rendered or cached first.
MAX_VARIABLE_CHARS = 253

# Files a discovery type may write into the sidecar (each an env var the image expands).
MAX_FILES = 8

# Values in a template (each use of a YAML alias counted): a real one has hundreds; a
# ConfigMap is at most 1 MiB, but aliases can make a small text expand exponentially.
MAX_TEMPLATE_NODES = 100_000

# --- what is written ---------------------------------------------------------------

# A denial message: kubectl prints it whole, so a few lines, never megabytes.
MAX_MESSAGE_CHARS = 2048
# One warning (kubectl prints each on its own line).
MAX_WARNING_CHARS = 512
# Warnings in one answer; the last one says how many more there were.
MAX_WARNINGS = 8
# A quoted value inside a message (an annotation, a name).
MAX_QUOTED_CHARS = 60
# One string field of a log line (pod name, owner, message): log lines stay small.
MAX_LOG_FIELD_CHARS = 512
# What a client sent that we quote back or log when refusing it, enough to recognise it:
# an exception's text; a path, or a value of the wrong type; a string value.
MAX_ECHO_CHARS = 200
MAX_ECHOED_CHARS = 100
MAX_ECHOED_VALUE_CHARS = 80
# An API server's error (a watch restart's detail, a malformed watch event): one line.
MAX_API_ERROR_CHARS = 300
# An image reference's name, registry included (distribution/reference's limit).
MAX_IMAGE_NAME_CHARS = 255

# --- what is kept ------------------------------------------------------------------

# Rendered sidecars remembered by the variables they depend on, counted in bytes of
# their JSON (each keeps its objects and that JSON: a few times as much memory).
RENDER_CACHE_BYTES = 1024 * 1024

# --- how long a client may take ----------------------------------------------------

# From the first byte of a request to its last body byte: the API server sends a
# request at once, and gives up on it after its webhook timeout (ours 5 s, at most 30 s),
# so a slower client is not the API server.
READ_TIMEOUT_S = 10.0
# An idle keep-alive connection is closed after this: longer than the API server's own
# idle timeout (Go's transport, 90 s), so the client closes first and never races us.
KEEPALIVE_TIMEOUT_S = 120.0
# After an answer that leaves the body unread (413, 415, 429), how long the rest of the
# body is read and dropped before the connection closes: enough for the API server,
# which has sent it all at once; a slower client's answer may be lost with the connection.
LINGER_S = 1.0
# To complete a TLS handshake (asyncio's default is 60 s).
TLS_HANDSHAKE_TIMEOUT_S = 10.0
# `serve --self-signed-dir` keeps the pair there while it has a week left: a CA trusted
# once (make run's) keeps working across restarts.
SELF_SIGNED_REUSE_S = 7 * 24 * 3600.0
# After SIGTERM, how long requests already being answered may take (the API server's
# webhook timeout is at most 30 s; the Deployment's grace period is longer than this).
SHUTDOWN_TIMEOUT_S = 20.0
# How often the template file and the serving certificate are looked at: a reload is
# seen within a second, at the cost of two stats a second.
RELOAD_INTERVAL_S = 0.25

# --- the API server -------------------------------------------------------------------

# The ConfigMap watch: silence after which it reconnects (the API server sends a
# bookmark or an event well within this), how long a connection may take, and how long
# one watch request lasts before it is renewed (the API server's own default range).
WATCH_READ_TIMEOUT_S = 75.0
WATCH_CONNECT_TIMEOUT_S = 10.0
WATCH_TIMEOUT_S = 300
# Waits between failed watches: from a quarter second, doubling, up to 30 s.
WATCH_BACKOFF_BASE_S = 0.25
WATCH_BACKOFF_CAP_S = 30.0
# Items per list page for status, restart and the rollout watch: memory stays bounded
# on big clusters.
LIST_PAGE = 500
# How often the rollout leader recounts its pods for /metrics (one pass over them: a few
# milliseconds per 10,000 pods).
ROLLOUT_REFRESH_S = 2.0
# Pods a `status` WHY names before "and N more" (fail-open pods created without mesher):
# the table's row stays one line; `-o json` lists them all.
MAX_NAMED_PODS = 3


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    note = f"... ({len(text) - limit} more characters)"
    return text[: max(limit - len(note), 0)] + note


def join_capped(items: Iterable[str], *, limit: int, separator: str = "; ") -> str:
    """Join `items` until `limit` characters, then "... and N more"; reads only what it
    shows plus a count, so a million items cost a count."""
    items = list(items) if not isinstance(items, list) else items
    shown: list[str] = []
    size = 0
    for item in items:
        if size + len(item) + len(separator) > limit - 40:
            break
        shown.append(item)
        size += len(item) + len(separator)
    text = separator.join(shown)
    if len(shown) < len(items):
        text += f"{separator if shown else ''}... and {len(items) - len(shown)} more"
    return clip(text, limit)


def cap_warnings(warnings: list[str]) -> tuple[str, ...]:
    """At most MAX_WARNINGS warnings of at most MAX_WARNING_CHARS each."""
    if not warnings:
        return ()
    kept = [clip(w, MAX_WARNING_CHARS) for w in warnings[:MAX_WARNINGS]]
    if len(warnings) > MAX_WARNINGS:
        kept[-1] = f"... and {len(warnings) - MAX_WARNINGS + 1} more warnings"
    return tuple(kept)
