"""Two `blackboard supervisor` replicas and the agents as separate processes on a real
redis-server (issue 20, items 1 and 2): a slow audit's rollback keeps or redoes the
write that passed, and a join fires exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from blackboard.supervisor import Supervisor
from replicaapp import app, join_app

from blackboard import BoardStore, connect

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

HELPERS = str(Path(__file__).resolve().parents[1] / "helpers")
BOARDS = 4


def spawn(url: str, *args: str, app: str = "app") -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": HELPERS, "BLACKBOARD_REDIS_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "blackboard", *args, "--app", f"replicaapp:{app}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def run_boards(
    url: str, store: BoardStore, app_name: str, agents: tuple[str, ...], boards: list[str]
) -> None:
    """Two supervisor replicas and one process per agent; the boards started and run
    until none is active."""
    procs = [
        spawn(url, "supervisor", "--name", "r1", app=app_name),
        spawn(url, "supervisor", "--name", "r2", app=app_name),
        *(spawn(url, "agent", name, app=app_name) for name in agents),
    ]
    try:
        starter = Supervisor(join_app if app_name == "join_app" else app, store, name="starter")
        for board in boards:
            await starter.start(board)
        deadline = time.monotonic() + 30
        while True:
            statuses = [(await store.info(b)).status for b in boards]
            if all(s != "active" for s in statuses):
                break
            assert time.monotonic() < deadline, f"boards still active: {statuses}"
            await asyncio.sleep(0.05)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)


async def test_two_replicas_keep_the_passed_write_and_join_once(redis_server: Any) -> None:
    """pa's and pb's commits go to different replicas; pb's fails the slow audit, and
    the rollback keeps pa's write (or, if pa's audit was still running, asks pa to redo
    it): every board ends done with pa's key set, and the join after both fires once."""
    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client)
    await Supervisor(app, store).publish()
    boards = [f"p{n}" for n in range(BOARDS)]
    await run_boards(redis_server.url, store, "app", ("pa", "pb", "agg"), boards)

    for board in boards:
        info = await store.info(board)
        state = (await store.read(board)).data
        history = await store.history(board)
        log = [(e.version, e.kind, e.author, e.outcome) for e in history]
        assert info.status == "done", (board, log)
        assert state == {"a": 1, "b": "good", "report": "a=1 b=good"}, (board, log)
        assert [e.author for e in history if e.kind == "write"].count("agg") == 1, log
        joins = await store.redis.hvals(store.keys(board).activations)
        assert sum('"agent":"agg"' in j for j in joins) == 1, (board, log)
        rollbacks = [e for e in history if e.kind == "rollback"]
        assert len(rollbacks) == 1, log
        assert len({e.proposal_id for e in history}) == len(history)  # none committed twice
    await store.close()


async def test_join_fires_once_with_two_replicas(redis_server: Any) -> None:
    """The two branches' commits are handled by different replicas, each routing after
    its slow audit, when both branches are in: the aggregator is activated, and
    commits, once per board."""
    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client)
    await Supervisor(join_app, store).publish()
    boards = [f"j{n}" for n in range(10)]
    await run_boards(redis_server.url, store, "join_app", ("ra", "rb", "agg"), boards)
    for board in boards:
        history = await store.history(board)
        log = [(e.version, e.kind, e.author) for e in history]
        assert (await store.info(board)).status == "done", (board, log)
        assert [e.author for e in history] in (["ra", "rb", "agg"], ["rb", "ra", "agg"]), log
        joins = await store.redis.hvals(store.keys(board).activations)
        assert sum('"agent":"agg"' in j for j in joins) == 1, (board, log)
    await store.close()
