from __future__ import annotations

import asyncio
import contextlib

import structlog

from injector.web.server import _every
from tests.support.helpers import wait_until


async def test_a_failing_background_step_is_logged_and_the_loop_goes_on() -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(_every(0.001, step, structlog.get_logger("test")))
        await wait_until(lambda: len(calls) >= 3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    failures = [e for e in logs if e["event"] == "background_step_failed"]
    assert len(failures) == 1
    assert failures[0]["step"] == "step"
