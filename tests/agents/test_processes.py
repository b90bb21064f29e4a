"""Agents as real OS processes on a real redis-server: kill -9 mid-activation loses
nothing and commits once; two processes share one rate limit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from blackboard.supervisor import Supervisor
from procapps import kill_app
from redis.exceptions import ResponseError

from blackboard import BoardStore, connect

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

HELPERS = str(Path(__file__).resolve().parents[1] / "helpers")


def spawn(url: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": HELPERS, "BLACKBOARD_REDIS_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "blackboard", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_for(check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return result


async def test_agent_killed_mid_activation_is_reclaimed_and_commits_once(
    redis_server: Any,
) -> None:
    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client)
    sup = Supervisor(kill_app, store)
    await sup.publish()
    procs = [
        spawn(redis_server.url, "supervisor", "--app", "procapps:kill_app"),
        spawn(redis_server.url, "agent", "slow", "--app", "procapps:kill_app", "--name", "first"),
    ]
    try:
        await sup.start("job")
        queue = f"{store.settings.key_prefix}:queue:slow"

        async def running_on_first() -> bool:
            try:
                pending = await client.xpending_range(queue, "workers", min="-", max="+", count=5)
            except ResponseError:  # the agent process has not created its group yet
                return False
            record = await client.hvals(store.keys("job").activations)
            return (
                bool(pending)
                and pending[0]["consumer"] == "first"
                and bool(record)
                and json.loads(record[0])["status"] == "running"
            )

        await wait_for(running_on_first)
        procs[1].send_signal(signal.SIGKILL)  # mid-activation: it was sleeping in run()
        procs[1].wait()
        procs.append(
            spawn(
                redis_server.url, "agent", "slow", "--app", "procapps:kill_app", "--name", "second"
            )
        )

        async def done() -> bool:
            return (await store.info("job")).status == "done"

        await wait_for(done)
        history = await store.history("job")
        assert [(e.author, e.keys) for e in history] == [("slow", ["result"])]
        [record] = [json.loads(v) for v in await client.hvals(store.keys("job").activations)]
        assert record["status"] == "submitted"
        assert history[0].proposal_id == record["activation_id"]
        assert await client.xpending(queue, "workers") == {
            "pending": 0,
            "min": None,
            "max": None,
            "consumers": [],
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(20)
        await store.close()


def test_two_processes_share_one_rate_limit(redis_server: Any) -> None:
    with redis_server.client() as c:
        c.flushdb()
    env = {**os.environ, "PYTHONPATH": HELPERS}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "procapps", redis_server.url, "10", name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    times: list[float] = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        times += json.loads(out)
    times.sort()
    assert len(times) == 20
    for i in range(len(times) - 5):  # no 6 calls within any 0.5 s window, both together
        assert times[i + 5] - times[i] >= 0.49, (i, times[i + 5] - times[i])


async def test_sigterm_finishes_the_activation_in_hand(redis_server: Any) -> None:
    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client)
    sup = Supervisor(kill_app, store)
    await sup.publish()
    supervisor = spawn(redis_server.url, "supervisor", "--app", "procapps:kill_app")
    worker = spawn(
        redis_server.url, "agent", "slow", "--app", "procapps:kill_app", "--name", "only"
    )
    try:
        await sup.start("job")

        async def running() -> bool:
            record = await client.hvals(store.keys("job").activations)
            return bool(record) and json.loads(record[0])["status"] == "running"

        await wait_for(running)
        worker.send_signal(signal.SIGTERM)  # mid-activation: finish it, then exit
        assert await asyncio.to_thread(worker.wait, 20) == 0

        async def done() -> bool:
            return (await store.info("job")).status == "done"

        await wait_for(done)  # no other instance exists: the stopping one finished it
        [record] = [json.loads(v) for v in await client.hvals(store.keys("job").activations)]
        assert record["status"] == "submitted" and record["retries"] == 0
    finally:
        for p in (supervisor, worker):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            p.wait(20)
        await store.close()
