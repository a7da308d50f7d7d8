"""The injector on loopback: a real server with TLS and an admin port, and a TLS
connection to it."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from injector.core.settings import Settings
from injector.kube.configmap import open_configmap_source
from injector.web.server import Server
from tests.support.helpers import DEFAULT_TEMPLATE


@dataclass
class Running:
    """A real injector on loopback: TLS webhook and admin port, a template file to edit."""

    server: Server
    session: aiohttp.ClientSession
    template_file: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.server.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.server.admin_port}"


async def start_server(tmp_path: Path, **overrides: object) -> tuple[Server, Path]:
    template_file = tmp_path / "template.yaml"
    shutil.copy(DEFAULT_TEMPLATE, template_file)
    options: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "admin_port": 0,
        "self_signed": True,
        "self_signed_dir": tmp_path / "certs",
        "template_file": template_file,
        "reload_interval": 0.02,
        "shutdown_timeout": 5.0,
    }
    options.update(overrides)
    settings = Settings(**options)  # type: ignore[arg-type]
    server = Server(settings, open_watch=open_configmap_source)  # as serve hands it over
    await server.start()
    return server, template_file


async def connect(
    server: Server, *, sock: socket.socket | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection to the webhook port, trusting the server's self-signed CA (over
    `sock` when given: a socket already connected to it)."""
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    if sock is not None:
        return await asyncio.open_connection(sock=sock, ssl=ctx, server_hostname="localhost")
    return await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=ctx, server_hostname="localhost"
    )
