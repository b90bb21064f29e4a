"""A process restarted under the name of one that was killed works first on what that
name held, at once: not after claim_idle_ms (nobody else takes it over, since the name
beats again). Both backends."""

from __future__ import annotations

import asyncio

from aimedapp import app
from blackboard.agents import AgentWorker
from blackboard.supervisor import Supervisor

from blackboard import BoardStore


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
