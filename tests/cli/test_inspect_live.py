"""`watch` and `agents` on live deployments (issue 24): watch started before its board
exists, one JSON object per line, activations queued/started/finished with why a
proposal was rejected, what a waiting board needs, its exit codes; agents' liveness
from heartbeats (SIGTERM and kill -9), work in flight and waiting, and boards no live
instance serves. Against a real redis-server, with OS processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import whyapp
from blackboard.supervisor import Deployment, Supervisor

from blackboard import BoardStore, connect
from blackboard.cli.inspect import EXIT_ESCALATED, EXIT_FAILED_BOARD, EXIT_STILL_GOING
from blackboard.queues import LIVENESS_MS
from blackboard.readmodel import ReadModel

ROOT = Path(__file__).resolve().parents[2]
APP = "whyapp:app"
pytestmark = [pytest.mark.real_redis, pytest.mark.slow]


def env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "BLACKBOARD_REDIS_URL": url,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "helpers"), str(ROOT)]),
    }


@pytest.fixture
async def store(redis_server: Any) -> AsyncIterator[BoardStore]:
    store = BoardStore(connect(redis_server.url))
    await store.redis.flushdb()
    yield store
    await store.close()


_SPAWNED: list[asyncio.subprocess.Process] = []


async def blackboard(url: str, *args: str) -> asyncio.subprocess.Process:
    """``blackboard ARGS`` as a process (killed after the test if still running)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "blackboard",
        *args,
        env=env(url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _SPAWNED.append(proc)
    return proc


@pytest.fixture(autouse=True)
async def reap() -> AsyncIterator[None]:
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


def squeeze(text: str) -> str:
    return "".join(text.split())


async def settled(d: Deployment, *cases: str) -> None:
    """Each case of the app started (as a board of its name) and settled."""
    for case in cases:
        await d.start(case, {"brief": {"case": case}})
        await d.settle(case)


async def events_until(proc: asyncio.subprocess.Process, done: Any) -> list[dict[str, Any]]:
    """JSON lines of ``proc`` until ``done(events)`` holds (30 s at most)."""
    assert proc.stdout is not None
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while not done(events):
            line = await proc.stdout.readline()
            assert line, f"watch ended early: {events}"
            events.append(json.loads(line))
    return events


async def test_watch_json_from_before_the_board_exists_to_escalated(
    store: BoardStore, redis_server: Any
) -> None:
    watch = await blackboard(redis_server.url, "watch", "stubborn", "--json", "--until-done")
    [missing] = await events_until(watch, lambda e: len(e) == 1)
    assert (missing["event"], missing["board"]) == ("missing", "stubborn")
    async with Deployment(whyapp.app, store) as d:
        await settled(d, "stubborn")
    assert await watch.wait() == EXIT_ESCALATED
    assert watch.stdout is not None
    events = [json.loads(line) for line in (await watch.stdout.read()).splitlines()]
    finished = [e for e in events if e.get("phase") == "finished"]
    assert len(finished) == 3  # the start and two rewrites, each rejected
    for e in finished:
        assert e["activation"]["agent"] == "writer" and e["outcome"]["status"] == "rejected"
        assert "greater than or equal to 0" in e["outcome"]["message"]
    phases = [e["phase"] for e in events if e["event"] == "activation"]
    assert phases.count("queued") == phases.count("started") == 3
    assert [e for e in events if e["event"] != "status" and "status" in e] == []
    last = events[-1]
    assert (last["event"], last["status"]) == ("status", "escalated")
    assert "rejected 3 times in a row" in last["waiting"]["why"]
    assert "blackboard resume stubborn" in last["waiting"]["action"]


async def test_watch_says_what_a_gate_waits_for_then_done(
    store: BoardStore, redis_server: Any
) -> None:
    async with Deployment(whyapp.app, store) as d:
        await settled(d, "gate")
        watch = await blackboard(redis_server.url, "watch", "gate", "--until-done")
        assert watch.stdout is not None
        seen = b""
        async with asyncio.timeout(30):
            while b"reject gate --note WHY" not in seen:
                line = await watch.stdout.readline()
                assert line, seen
                seen += line
        text = seen.decode()
        assert "watching gate (awaiting_approval, v2)" in text
        assert squeeze(whyapp.GATE_MESSAGE) in squeeze(text)
        assert "approve it with `blackboard approve gate`" in text
        approve = await blackboard(redis_server.url, "approve", "gate", "--as", "officer")
        assert await approve.wait() == 0
        assert await watch.wait() == 0
        text += (await watch.stdout.read()).decode()
    assert "v3    approval  human:officer" in text
    assert "board gate is done" in text


async def test_watch_exit_codes_for_failed_and_a_timeout(
    store: BoardStore, redis_server: Any
) -> None:
    async with Deployment(whyapp.app, store) as d:
        await settled(d, "fatal", "gate")
    failed = await blackboard(redis_server.url, "watch", "fatal", "--until-done")
    out, _ = await failed.communicate()
    assert failed.returncode == EXIT_FAILED_BOARD
    assert squeeze(whyapp.FATAL) in squeeze(out.decode())
    assert "board fatal is failed" in out.decode()
    waiting = await blackboard(redis_server.url, "watch", "gate", "--until-done", "--timeout", "1")
    await waiting.communicate()
    assert waiting.returncode == EXIT_STILL_GOING
    unbounded = await blackboard(redis_server.url, "watch", "gate", "--timeout", "1")
    await unbounded.communicate()
    assert unbounded.returncode == 0


async def agents_json(url: str) -> dict[str, Any]:
    proc = await blackboard(url, "agents", "--json")
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return {"by_name": {a["agent"]: a for a in json.loads(out)["agents"]}, **json.loads(out)}


async def until(check: Any, what: str, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return found


async def test_agents_liveness_work_and_unserved_boards(
    store: BoardStore, redis_server: Any
) -> None:
    url = redis_server.url
    supervisor = Supervisor(whyapp.app, store)
    await supervisor.publish(replace=True)
    await supervisor.start("b1", {"brief": {"case": "policy"}})  # no agent, no supervisor
    seen = await agents_json(url)
    writer = seen["by_name"]["writer"]
    assert (writer["waiting"], writer["in_flight"], writer["needed_by"]) == (1, 0, ["b1"])
    assert writer["instances"] == [] and seen["supervisors"] == []
    [stuck] = await ReadModel(store).escalations()
    assert (stuck.board, stuck.status, stuck.unserved) == ("b1", "active", ["writer", "supervisor"])
    assert "waiting on 'writer', 'supervisor': no live instance serves them" in stuck.why
    assert "`blackboard agent writer --app APP`" in stuck.action

    procs = [await blackboard(url, "agent", "writer", "--app", APP) for _ in range(2)]
    try:

        async def writer_now() -> dict[str, Any]:
            seen = await ReadModel(store).agents()
            assert seen is not None
            return next(a.model_dump() for a in seen.agents if a.agent == "writer")

        async def both_alive() -> Any:
            w = await writer_now()
            return w if len([i for i in w["instances"] if i["alive"]]) == 2 else None

        writer = await until(both_alive, "two live writers")
        assert writer["waiting"] == 0 and writer["needed_by"] == []
        assert all(i["beat_age_ms"] < LIVENESS_MS for i in writer["instances"])
        stopped, killed = procs
        stopped.send_signal(signal.SIGTERM)
        assert await stopped.wait() == 0

        async def one_alive() -> Any:
            w = await writer_now()
            return w if [i["alive"] for i in w["instances"]] == [True] else None

        writer = await until(one_alive, "the SIGTERM'd writer to be dead", seconds=5)
        assert writer["stopped"] == 1
        killed.kill()  # no goodbye: its heartbeat key expires
        await killed.wait()

        async def none_alive() -> Any:
            w = await writer_now()
            return w if not any(i["alive"] for i in w["instances"]) else None

        writer = await until(none_alive, "the killed writer to be dead", LIVENESS_MS / 1000 + 10)
        assert writer["stopped"] == 2
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
