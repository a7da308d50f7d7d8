"""Every attack of tests/support/attacks.py against one real `serve` process: the server's peak
RSS (VmHWM, from /proc) stays under 200 MiB (the Deployment's limit is 256Mi), every
answer is small, and the server logs no traceback; and 64 clients stalling 4 MiB bodies
are bounded by the body budget while a normal admission is answered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.attacks import ATTACKS, run, stalled_bodies, start

PEAK_RSS_LIMIT_MIB = 200


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
async def test_no_attack_takes_the_server_over_200_mib_or_logs_a_traceback(tmp_path: Path) -> None:
    server = await asyncio.to_thread(start, tmp_path)
    try:
        for attack in ATTACKS:
            result = await run(server, attack)
            assert sum(result.statuses.values()) > 0, attack.name
            assert set(result.statuses) <= {200, 415}, (attack.name, result.statuses)
            assert result.largest_answer < 8 * 1024, (attack.name, result.largest_answer)
            peak = server.peak_rss_mib()
            assert peak < PEAK_RSS_LIMIT_MIB, (attack.name, peak)
    finally:
        log = server.stop()
    assert "Traceback" not in log
    assert '"level":"error"' not in log


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
async def test_64_stalled_4_mib_bodies_stay_under_200_mib_and_a_normal_admission_is_answered(
    tmp_path: Path,
) -> None:
    server = await asyncio.to_thread(start, tmp_path, "--read-timeout", "4")
    try:
        result = await stalled_bodies(server, connections=64)
        peak = server.peak_rss_mib()
    finally:
        log = server.stop()
    assert result.probe_status == 200
    assert peak < PEAK_RSS_LIMIT_MIB, peak
    # The budget (32 MiB, large bodies three quarters of it) holds six; the rest are
    # refused at once, and the six get 408 when the read timeout is up.
    assert result.statuses == {408: 6, 429: 58}, result.statuses
    assert log.count('"reason":"over-budget"') == 58
    assert "Traceback" not in log
