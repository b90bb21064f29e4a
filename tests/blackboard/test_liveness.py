"""Liveness: the entries of a consumer whose process stopped beating are taken over as
soon as its liveness key expires, long before ``claim_idle_ms``; a live consumer's and an
unknown consumer's are not; two consumers never both take the same entry."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from blackboard.keys import GlobalKeys
from blackboard.queues import Liveness, WorkQueue

KEYS = GlobalKeys("bbt")
TTL = 300


def queue(redis: Redis) -> WorkQueue:
    # claim_idle_ms of a minute: anything taken over in this test was taken by liveness
    return WorkQueue(
        redis, "q", "g", dead_letters="dlq", claim_idle_ms=60_000, keys=KEYS, liveness_ms=TTL
    )


async def until_gone(redis: Redis, key: str) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while await redis.exists(key):
        assert asyncio.get_running_loop().time() < deadline, f"{key} never expired"
        await asyncio.sleep(0.02)


async def test_a_dead_consumers_entries_are_taken_over_when_its_liveness_expires(
    redis_client: Redis,
) -> None:
    q = queue(redis_client)
    await q.ensure_group()
    await Liveness(redis_client, KEYS, "dead", ttl_ms=TTL).beat()
    await Liveness(redis_client, KEYS, "alive", ttl_ms=TTL).beat()
    await q.put({"n": 1})
    [first] = await q.take("dead", block_ms=10)  # then its process is killed: no more beats
    assert await q.take("alive", block_ms=10) == []  # still alive: not taken
    await until_gone(redis_client, KEYS.live("dead"))
    await asyncio.sleep(TTL / 2000)  # XCLAIM's minimum idle time (half the TTL)
    assert await q.dead_consumers("alive") == ["dead"]
    [again] = await q.take("alive", block_ms=10)
    assert (again.entry_id, again.fields, again.deliveries) == (first.entry_id, {"n": "1"}, 2)
    owners = await redis_client.xpending_range("q", "g", min="-", max="+", count=10)
    assert [o["consumer"] for o in owners] == ["alive"]
    # the dead one, holding nothing now, is no longer a consumer of the group
    assert [c["name"] for c in await redis_client.xinfo_consumers("q", "g")] == ["alive"]


async def test_a_live_or_unknown_consumers_entries_stay_put(redis_client: Redis) -> None:
    q = queue(redis_client)
    await q.ensure_group()
    beating = Liveness(redis_client, KEYS, "busy", ttl_ms=TTL)
    stop = asyncio.Event()
    task = asyncio.create_task(beating.run(stop))
    try:
        await q.put({"n": 1})
        await q.put({"n": 2})
        [_] = await q.take("busy", count=1, block_ms=10)
        [_] = await q.take("never-beat", count=1, block_ms=10)  # a consumer without Liveness
        await asyncio.sleep(3 * TTL / 1000)  # past the TTL: beats keep "busy" alive
        q._next_reclaim = 0.0
        assert await q.take("other", block_ms=10) == []
        assert await q.dead_consumers("other") == []
    finally:
        stop.set()
        await task
    # a clean stop lets go of the name at once: what it still held is taken over
    assert not await redis_client.exists(KEYS.live("busy"))
    await asyncio.sleep(TTL / 2000)
    q._next_reclaim = 0.0
    [taken] = await q.take("other", block_ms=10)
    assert taken.fields == {"n": "1"}


async def test_two_consumers_never_take_over_the_same_entry(redis_client: Redis) -> None:
    q1, q2 = queue(redis_client), queue(redis_client)
    await q1.ensure_group()
    await Liveness(redis_client, KEYS, "dead", ttl_ms=TTL).beat()
    for n in range(5):
        await q1.put({"n": n})
    assert len(await q1.take("dead", block_ms=10)) == 5
    await until_gone(redis_client, KEYS.live("dead"))
    await asyncio.sleep(TTL / 2000)
    a, b = await asyncio.gather(q1.take("c1", block_ms=10), q2.take("c2", block_ms=10))
    taken = [d.entry_id for d in a + b]
    assert len(taken) == len(set(taken)) == 5
