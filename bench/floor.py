"""The floor: an aiohttp server whose handler only parses the JSON body and returns a
fixed, precomputed answer, over the same TLS. What the injector is compared with."""

from __future__ import annotations

import argparse
import json
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--answer", type=Path, required=True, help="the fixed response body")
    parser.add_argument("--fast", action="store_true", help="orjson and uvloop, as the injector")
    args = parser.parse_args()
    answer = args.answer.read_bytes()
    loads: Callable[[bytes], object] = json.loads
    if args.fast:
        import orjson

        loads = orjson.loads

    async def handle(request: web.Request) -> web.Response:
        loads(await request.read())
        return web.Response(body=answer, content_type="application/json")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/mutate", handle)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert, args.key)
    loop_factory = None
    if args.fast:
        import uvloop

        loop_factory = uvloop.new_event_loop
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        ssl_context=context,
        access_log=None,
        print=None,
        loop=loop_factory() if loop_factory else None,
    )


if __name__ == "__main__":
    main()
