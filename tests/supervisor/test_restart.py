"""A supervisor replica restarted under the name of one that was killed works first on
the submissions that name held, at once (not after claim_idle_ms). Both backends."""

from __future__ import annotations

import asyncio

from aimedapp import app
from blackboard.agents import AgentWorker
from blackboard.supervisor import Supervisor

from blackboard import BoardStore


async def test_a_replica_restarted_under_the_same_name_handles_what_it_held_first(
    store: BoardStore,
) -> None:
    first = Supervisor(app, store, name="r1")
    await first.publish()
    await first.start("job")
    worker = AgentWorker(app, "first", store, name="f0")
    [activation] = await worker.queue.take("f0", block_ms=100)
    await worker.handle(activation)  # submitted
    taken = await first.queues[0].take("r1", block_ms=100)  # then kill -9: never acked
    [held] = [e for e in taken if "s" in e.fields]  # (the other: first's 'running' mark)
    restarted = Supervisor(app, store, name="r1")
    restarted.queues[0]._next_reclaim = float("inf")  # no reclaim: it must know its own
    stop = asyncio.Event()
    task = asyncio.create_task(restarted.run(stop))
    try:
        async with asyncio.timeout(5):  # claim_idle_ms is 30 s
            while await store.version("job") < 1:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
    [entry] = await store.history("job")
    assert (entry.author, entry.proposal_id) == ("first", activation.fields["activation"])
    assert (await store.redis.xpending(first.queues[0].stream, "supervisor"))["pending"] == 0
    assert held.entry_id
