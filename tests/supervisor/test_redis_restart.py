"""The supervisor and agents survive a Redis restart (real server, AOF on): they back
off while it is down and resume from their consumer groups when it is back."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import pytest
from bbtest import build_app
from blackboard.supervisor import Deployment

from blackboard import BoardStore, connect

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]


async def test_work_resumes_after_a_redis_restart(redis_servers: Any) -> None:
    server = redis_servers("--appendonly", "yes", "--appendfsync", "always")
    store = BoardStore(connect(server.url))
    app = build_app()
    async with Deployment(app, store) as d:
        await d.start("before")
        assert (await d.settle("before")).status == "done"
        # Restart the server in place: same directory (AOF), same socket.
        args = server.process.args
        server.process.terminate()
        server.process.wait(10)
        await asyncio.sleep(0.3)  # a real outage: the loops hit connection errors
        server.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                await store.redis.ping()
                break
            except Exception:
                assert time.monotonic() < deadline, "redis-server did not come back"
                await asyncio.sleep(0.05)
        assert (await store.info("before")).status == "done"  # kept by the AOF
        await d.start("after")
        info = await d.settle("after", timeout=30)
    assert info.status == "done"
    assert [e.author for e in await store.history("after")] == ["intake", "risk", "compliance"]
    await store.close()
