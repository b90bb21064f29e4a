"""Two `blackboard supervisor` replicas as separate processes, with the agents, on a real
redis-server (issue 20, items 1 and 2): a slow audit's rollback keeps or redoes the
write that passed, and a join fires exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import pytest
from bbtest import activations
from blackboard.agents import AgentWorker
from blackboard.supervisor import Supervisor
from replicaapp import app, join_app

from blackboard import App, BoardStore, connect

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

HELPERS = str(Path(__file__).resolve().parents[1] / "helpers")
BOARDS = 3


def spawn(url: str, *args: str, app: str, out: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": HELPERS, "BLACKBOARD_REDIS_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "blackboard", *args, "--app", f"replicaapp:{app}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=out,
    )


async def run_boards(
    store: BoardStore, url: str, app: App, boards: list[str], together: int
) -> None:
    """Two supervisor replicas as processes (the agents run here, one worker each); the
    boards started, ``together`` at a time, each group run until none is active."""
    name = "join_app" if app is join_app else "app"
    outs = [tempfile.TemporaryFile() for _ in range(2)]  # noqa: SIM115 (closed below)
    procs = [
        spawn(url, "supervisor", "--name", f"r{n}", app=name, out=out)
        for n, out in enumerate(outs, 1)
    ]
    stop = asyncio.Event()
    workers = [asyncio.create_task(AgentWorker(app, a.name, store).run(stop)) for a in app.agents]
    try:
        # Both replicas running before any work: else the first one up takes it all.
        deadline = time.monotonic() + 30
        while not all(b"running" in (out.seek(0) or out.read()) for out in outs):
            assert time.monotonic() < deadline, "the replicas did not start"
            await asyncio.sleep(0.05)
        starter = Supervisor(app, store, name="starter")
        for group in [boards[i : i + together] for i in range(0, len(boards), together)]:
            for board in group:
                await starter.start(board)
            deadline = time.monotonic() + 15
            while True:
                statuses = [(await store.info(b)).status for b in group]
                if all(s != "active" for s in statuses):
                    break
                assert time.monotonic() < deadline, f"boards still active: {statuses}"
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*workers)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        for out in outs:
            out.close()


async def test_two_replicas_keep_the_passed_write_and_join_once(redis_server: Any) -> None:
    """pa's and pb's commits go to different replicas (one board at a time); pb's fails
    its audit while pa's is still being audited: the rollback drops pa's write too and
    asks pa to redo it (pa's audit passing afterwards marks nothing compliant). Every
    board ends done with pa's key set, and the join after both redos fires once."""
    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client)
    await Supervisor(app, store).publish()
    boards = [f"p{n}" for n in range(BOARDS)]
    await run_boards(store, redis_server.url, app, boards, together=1)

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
        [rollback] = [e for e in history if e.kind == "rollback"]
        redos = [
            a
            for a in await activations(store, board)
            if (a["agent"], a["reason"]) == ("pa", "rewrite")
        ]
        if rollback.outcome == "restored:0":  # pa's audit had not passed: pa redid it
            assert [a["feedback"][:29] for a in redos] == ["your commit v1 was rolled bac"], log
        else:  # pa's audit had passed: its write was kept
            assert (rollback.outcome, redos) == ("restored:1", []), log
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
    await run_boards(store, redis_server.url, join_app, boards, together=len(boards))
    for board in boards:
        history = await store.history(board)
        log = [(e.version, e.kind, e.author) for e in history]
        assert (await store.info(board)).status == "done", (board, log)
        assert [e.author for e in history] in (["ra", "rb", "agg"], ["rb", "ra", "agg"]), log
        joins = await store.redis.hvals(store.keys(board).activations)
        assert sum('"agent":"agg"' in j for j in joins) == 1, (board, log)
    await store.close()
