"""kill -9 the supervisor at random moments (two replicas at once) during 2,000
proposals across 50 boards, on a real redis-server with separate OS processes.

Afterwards every proposal is committed exactly once, or rejected or dead-lettered with
a reason, and every board's state equals the replay of its log."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from crashapp import SLOTS, app

from blackboard import BoardStore, connect
from blackboard.history import replay
from blackboard.keys import GlobalKeys
from blackboard.queues import submit
from blackboard.records import Submission

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

HELPERS = str(Path(__file__).resolve().parents[1] / "helpers")
BOARDS, PER_BOARD = 50, 40  # 2,000 proposals


def spawn(url: str, name: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": HELPERS, "BLACKBOARD_REDIS_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "blackboard", "supervisor", "--app", "crashapp:app", "--name", name],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def proposals(rng: random.Random) -> list[Submission]:
    subs = []
    for b in range(BOARDS):
        slots = list(range(SLOTS))
        rng.shuffle(slots)
        for i, slot in enumerate(slots[:PER_BOARD]):
            bad = i % 10 == 0  # every tenth fails validation: a rejection with a reason
            subs.append(
                Submission(
                    kind="proposal",
                    board_id=f"b{b}",
                    author="w",
                    base=0,
                    proposal_id=f"p{b}-{i}",
                    patch=[{"op": "add", "path": f"/s{slot}", "value": -1 if bad else slot}],
                )
            )
    rng.shuffle(subs)
    return subs


async def test_supervisor_killed_at_random_loses_nothing(redis_server: Any) -> None:
    rng = random.Random(7)
    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client)
    from blackboard.supervisor import Supervisor

    await Supervisor(app, store).publish()
    for b in range(BOARDS):
        await store.create(f"b{b}", app.schema)
    subs = proposals(rng)
    procs = [spawn(redis_server.url, "r1"), spawn(redis_server.url, "r2")]
    kills = 0
    restarts = 0
    prefix = store.settings.key_prefix

    async def outcome_count() -> int:
        pipe = client.pipeline(transaction=False)
        for b in range(BOARDS):
            pipe.hlen(store.keys(f"b{b}").results)
        return sum(await pipe.execute()) + await client.xlen(GlobalKeys(prefix).dead_letters)

    sent = 0
    deadline = time.monotonic() + 240
    while True:
        if sent < len(subs):
            for sub in subs[sent : sent + 100]:
                await submit(client, prefix, sub)
            sent = min(sent + 100, len(subs))
        # Kill in the middle of the work, not during a replica's start (a kill every
        # few tens of ms would mostly hit processes still importing): once a random
        # number of further outcomes is recorded.
        goal = min(await outcome_count() + rng.randint(1, 40), sent)
        while await outcome_count() < goal:
            assert time.monotonic() < deadline, f"only {await outcome_count()} outcomes"
            await asyncio.sleep(0.005)
        victim = rng.randrange(len(procs))
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        kills += 1
        procs[victim] = spawn(redis_server.url, f"r{victim + 1}")
        restarts += 1
        if sent == len(subs) and await outcome_count() >= len(subs):
            break
        assert time.monotonic() < deadline, f"only {await outcome_count()} outcomes"
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(30)

    dead = {
        f["proposal_id"] if "proposal_id" in f else json.loads(f["s"])["proposal_id"]: f[
            "dl_reason"
        ]
        for _, f in await client.xrange(GlobalKeys(prefix).dead_letters)
    }
    committed = rejected = 0
    reasons: dict[str, int] = {}
    for b in range(BOARDS):
        board = f"b{b}"
        results = {
            k: json.loads(v) for k, v in (await client.hgetall(store.keys(board).results)).items()
        }
        log = await store.history(board)
        by_pid: dict[str, int] = {}
        for entry in log:
            by_pid[entry.proposal_id] = by_pid.get(entry.proposal_id, 0) + 1
        assert all(n == 1 for n in by_pid.values()), "a proposal committed twice"
        for i in range(PER_BOARD):
            pid = f"p{b}-{i}"
            outcome = results.get(pid)
            if outcome is None:
                assert pid in dead, f"{pid} vanished"
                assert dead[pid]
                continue
            if outcome["status"] == "committed":
                committed += 1
                assert by_pid.get(pid) == 1, f"{pid} recorded committed, log has {by_pid.get(pid)}"
            else:
                rejected += 1
                reasons[outcome["reason"]] = reasons.get(outcome["reason"], 0) + 1
                assert outcome["status"] == "rejected" and outcome["message"], outcome
                assert pid not in by_pid
        initial = (await store.read(board, at=0)).data
        assert (
            replay(copy.deepcopy(initial), [e.patch for e in log]) == (await store.read(board)).data
        )
        assert [e.version for e in log] == list(range(1, len(log) + 1))
    assert committed + rejected + len(dead) >= BOARDS * PER_BOARD
    assert reasons == {"schema": BOARDS * PER_BOARD // 10}  # exactly the invalid tenth
    assert kills >= 10
    print(
        f"crash test: {kills} kills, {committed} committed, {rejected} rejected, "
        f"{len(dead)} dead-lettered; rejections: {reasons}"
    )
    await store.close()
