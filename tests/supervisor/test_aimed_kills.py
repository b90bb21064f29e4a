"""kill -9 aimed at a process holding unacknowledged work, on a real redis-server with
separate OS processes (two supervisor replicas): the work is taken over and the board
settles well before the activation timeout (30 s) it would otherwise trip."""

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
from aimedapp import app
from blackboard.agents import AgentWorker
from blackboard.supervisor import Supervisor
from redis.exceptions import ResponseError

from blackboard import BoardStore, ReadModel, connect
from blackboard.keys import GlobalKeys
from blackboard.queues import Liveness
from blackboard.records import Submission

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

HELPERS = str(Path(__file__).resolve().parents[1] / "helpers")
SETTLED_WITHIN = 15.0
"""Seconds: the liveness TTL (5 s), a look for dead consumers (1 s), the work (1 s),
and room for a loaded machine; half the activation timeout."""


def spawn(url: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": HELPERS, "BLACKBOARD_REDIS_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "blackboard", *args, "--app", "aimedapp:app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_for(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return result


async def settled(store: BoardStore, board: str, since: float) -> None:
    """The board is done within SETTLED_WITHIN of ``since``, each agent committed once,
    and nothing timed out or escalated."""

    async def status() -> str | None:
        value = await store.redis.hget(store.keys(board).meta, "status")
        return value if value != "active" else None

    assert await wait_for(status, SETTLED_WITHIN + 5) == "done"
    assert time.monotonic() - since < SETTLED_WITHIN
    log = await store.history(board)
    assert [(e.author, e.kind) for e in log] == [("first", "write"), ("second", "write")]
    assert (await store.read(board)).data == {"first": 1, "second": 2}
    assert await ReadModel(store).incidents([board]) == []


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def test_agent_killed_holding_an_activation_is_taken_over_before_its_timeout(
    redis_server: Any,
) -> None:
    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client)
    await Supervisor(app, store).publish()
    url = redis_server.url
    procs = {
        "r1": spawn(url, "supervisor", "--name", "r1"),
        "r2": spawn(url, "supervisor", "--name", "r2"),
        "f1": spawn(url, "agent", "first", "--name", "f1"),
        "f2": spawn(url, "agent", "first", "--name", "f2"),
        "s1": spawn(url, "agent", "second", "--name", "s1"),
    }
    try:
        live = GlobalKeys(store.settings.key_prefix)

        async def all_beating() -> bool:
            return all([await client.exists(live.live(n)) for n in procs])

        await wait_for(all_beating, 30)
        await Supervisor(app, store).start("job")
        queue = GlobalKeys(store.settings.key_prefix).queue("first")

        async def holder() -> str | None:
            try:
                pending = await client.xpending_range(queue, "workers", min="-", max="+", count=5)
            except ResponseError:
                return None
            record = await client.hvals(store.keys("job").activations)
            running = bool(record) and json.loads(record[0])["status"] == "running"
            return str(pending[0]["consumer"]) if pending and running else None

        victim = await wait_for(holder, 20)
        procs[victim].send_signal(signal.SIGKILL)  # mid-activation, its entry unacknowledged
        procs[victim].wait()
        await settled(store, "job", time.monotonic())
        owners = await client.xpending_range(queue, "workers", min="-", max="+", count=5)
        assert owners == []  # taken over by the other instance, and acknowledged
    finally:
        stop(list(procs.values()))
        await store.close()


async def test_supervisor_killed_between_commit_and_routing_is_routed_before_the_timeout(
    redis_server: Any,
) -> None:
    """The state a supervisor replica leaves when killed after the commit script and
    before the routing, built directly: the submission pending on its consumer name,
    the commit made, nothing routed, its liveness gone. The other replicas take the
    submission over; the commit script answers 'duplicate', and routing runs."""
    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client)
    sup = Supervisor(app, store)
    await sup.publish()
    url = redis_server.url
    procs = [spawn(url, "agent", "second", "--name", "s1")]
    try:
        await sup.start("job")
        worker = AgentWorker(app, "first", store, name="f0")
        [activation] = await worker.queue.take("f0", block_ms=1000)
        await worker.handle(activation)  # run, submit, acknowledge: as an agent process
        dead = Liveness(client, sup.keys, "dead-replica")
        await dead.beat()
        taken = await sup.queues[0].take("dead-replica", block_ms=1000)
        [entry] = [e for e in taken if "s" in e.fields]  # (the other: its 'running' mark)
        sub = Submission.model_validate_json(entry.fields["s"])
        decision = await sup.validator.decide("job", sub.proposal(), kind="write")
        assert decision.status == "committed"  # and then the replica was killed
        await client.delete(sup.keys.live("dead-replica"))  # its liveness expired
        assert await store.version("job") == 1
        assert await client.hlen(store.keys("job").outbox) == 0  # nothing routed
        killed = time.monotonic()
        procs += [
            spawn(url, "supervisor", "--name", "r1"),
            spawn(url, "supervisor", "--name", "r2"),
        ]
        await settled(store, "job", killed)
    finally:
        stop(procs)
        await store.close()
