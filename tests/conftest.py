from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from injector.core.template import Template, load_template
from tests.support.helpers import DEFAULT_TEMPLATE
from tests.support.servers import Running, start_server


@pytest.fixture
def template() -> Template:
    return load_template(DEFAULT_TEMPLATE.read_text())


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    server, template_file = await start_server(tmp_path)
    assert server.ca_file is not None
    ssl_context = ssl.create_default_context(cafile=str(server.ca_file))
    connector = aiohttp.TCPConnector(ssl=ssl_context)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Running(server=server, session=session, template_file=template_file)
    await server.stop()
