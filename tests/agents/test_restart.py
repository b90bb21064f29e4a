"""A process restarted under the name of one that was killed works first on what that
name held, at once: not after claim_idle_ms (nobody else takes it over, since the name
beats again). A worker rides out a Redis outage instead of ending, and a submission in
embedded mode is resent through one until the activation's deadline. Both backends."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from aimedapp import app
from blackboard.agents import AgentWorker
from blackboard.supervisor import Supervisor
from redis.exceptions import ConnectionError as RedisConnectionError

from blackboard import BoardStore, ReadModel
from blackboard.records import Activation, Submission


async def test_an_agent_restarted_under_the_same_name_runs_what_it_held_first(
    store: BoardStore,
) -> None:
    sup = Supervisor(app, store)
    await sup.publish()
    await sup.start("job")
    killed = AgentWorker(app, "first", store, name="f1")
    [held] = await killed.queue.take("f1", block_ms=100)  # then kill -9: never acknowledged
    restarted = AgentWorker(app, "first", store, name="f1")
    restarted.queue._next_reclaim = float("inf")  # it must not need a reclaim to find it
    stop = asyncio.Event()
    task = asyncio.create_task(restarted.run(stop))
    try:
        async with asyncio.timeout(5):  # claim_idle_ms is 30 s
            while await store.redis.xlen(sup.keys.submissions("first", 0)) < 2:  # running, done
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
    [fields] = [
        f for _, f in await store.redis.xrange(sup.keys.submissions("first", 0)) if "s" in f
    ]
    assert held.fields["activation"] in fields["s"]
    assert await store.redis.xpending(restarted.queue.stream, "workers") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_a_worker_rides_out_an_outage_and_keeps_consuming(
    store: BoardStore, caplog: pytest.LogCaptureFixture
) -> None:
    sup = Supervisor(app, store)
    await sup.publish()
    await sup.start("job")
    worker = AgentWorker(app, "first", store, name="w1")
    take, failures = worker.queue.take, [RedisConnectionError("connection refused")] * 2

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await take(*args, **kwargs)

    worker.queue.take = flaky  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    mine = sup.keys.submissions("first", 0)

    async def submitted() -> list[str]:  # its record travels with it (the supervisor writes it)
        return [json.loads(f["a"])["status"] for _, f in await store.redis.xrange(mine) if "s" in f]

    try:
        async with asyncio.timeout(5):
            while await submitted() != ["submitted"]:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
    assert failures == []
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "blackboard.agents.runtime" and r.levelno == logging.WARNING
    ]
    assert warnings == ["agent first: Redis unavailable, retrying: connection refused"] * 2


async def test_a_local_submission_is_resent_through_an_outage_until_the_deadline(
    store: BoardStore,
) -> None:
    worker = AgentWorker(app, "first", store, name="w1")
    sent: list[str] = []

    async def away(submission: Submission, act: Activation) -> None:
        sent.append(submission.proposal_id)
        raise RedisConnectionError("connection refused")

    worker.submit_local = away
    sup = Supervisor(app, store)
    await sup.publish()
    await sup.start("job")
    [act] = await ReadModel(store).activations("job")
    # it ran and its submission was kept on its record; then the process died
    deadline = time.time() + 1.0
    act.deadline_ms = int(deadline * 1000)
    act.submission = Submission(
        kind="proposal",
        board_id="job",
        proposal_id=act.activation_id,
        author="first",
        activation_id=act.activation_id,
        trace_id=act.trace_id,
        base=0,
    ).model_dump()
    await store.redis.hset(
        sup.keys.board("job").activations, act.activation_id, act.model_dump_json()
    )
    with pytest.raises(RedisConnectionError, match="connection refused"):
        await worker.run_local("job", act.activation_id, None)  # recovered: resent
    assert time.time() >= deadline  # resent until the deadline, then given up
    assert len(sent) >= 3 and set(sent) == {act.activation_id}
