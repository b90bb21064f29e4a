"""The work queue: at-least-once delivery, reclaim from dead consumers, delivery
counts, dead letters written before the ack, trimming that never drops pending entries."""

from __future__ import annotations

from redis.asyncio import Redis

from blackboard.queues import WorkQueue


def queue(redis: Redis, **kw: int) -> WorkQueue:
    return WorkQueue(redis, "q", "g", dead_letters="dlq", **{"claim_idle_ms": 10, **kw})


async def wait_idle(redis: Redis, ms: int) -> None:
    """Let pending entries age past claim_idle_ms (the server's clock decides)."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + 5
    while True:
        pending = await redis.xpending_range("q", "g", min="-", max="+", count=100)
        if pending and all(p["time_since_delivered"] >= ms for p in pending):
            return
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)


async def test_delivered_once_then_acked(redis_client: Redis) -> None:
    q = queue(redis_client, claim_idle_ms=60_000)
    await q.ensure_group()
    await q.put({"n": 1})
    [d] = await q.take("c1", block_ms=10)
    assert (d.fields, d.deliveries) == ({"n": "1"}, 1)
    assert await q.take("c2", block_ms=10) == []  # pending on c1, not idle yet
    await q.ack(d.entry_id)
    assert (await redis_client.xpending("q", "g"))["pending"] == 0


async def test_dead_consumer_entries_are_reclaimed_with_counts(redis_client: Redis) -> None:
    q = queue(redis_client)
    await q.ensure_group()
    await q.put({"n": 1})
    [first] = await q.take("dead", block_ms=10)  # never acked: the consumer "died"
    await wait_idle(redis_client, 10)
    [again] = await q.take("alive", block_ms=10)
    assert (again.entry_id, again.deliveries) == (first.entry_id, 2)
    owners = await redis_client.xpending_range("q", "g", min="-", max="+", count=10)
    assert owners[0]["consumer"] == "alive"


async def test_dead_letter_after_max_deliveries(redis_client: Redis) -> None:
    q = queue(redis_client, max_deliveries=2)
    await q.ensure_group()
    entry = await q.put({"n": 7})
    await q.take("c", block_ms=10)
    await wait_idle(redis_client, 10)
    assert len(await q.take("c", block_ms=10)) == 1  # second delivery
    await wait_idle(redis_client, 10)
    assert await q.take("c", block_ms=10) == []  # third: dead-lettered instead
    [(_, dead)] = await redis_client.xrange("dlq")
    assert (dead["n"], dead["dl_entry"], dead["dl_deliveries"]) == ("7", entry, "3")
    assert "max_deliveries=2" in dead["dl_reason"]
    assert (await redis_client.xpending("q", "g"))["pending"] == 0


async def test_trim_keeps_pending_entries(redis_client: Redis) -> None:
    q = queue(redis_client, claim_idle_ms=60_000)
    await q.ensure_group()
    for n in range(4):
        await q.put({"n": n})
    taken = await q.take("c", count=4, block_ms=10)
    await q.ack(taken[0].entry_id)
    await q.ack(taken[1].entry_id)
    await q.trim()
    remaining = [f["n"] for _, f in await redis_client.xrange("q")]
    assert remaining == ["2", "3"]  # entries 2 and 3 are pending: kept
    for d in taken[2:]:
        await q.ack(d.entry_id)
    await q.trim()
    assert await redis_client.xlen("q") == 0


async def test_group_recreated_after_server_lost_it(redis_client: Redis) -> None:
    q = queue(redis_client)
    await q.ensure_group()
    await redis_client.delete("q")  # as after a restart without persistence
    assert await q.take("c", block_ms=10) == []
    await q.put({"n": 1})
    assert len(await q.take("c", block_ms=10)) == 1


async def test_a_consumer_re_reads_what_it_holds_in_order_from_an_id(redis_client: Redis) -> None:
    """take_own pages through this consumer's pending entries, oldest first (not another
    consumer's, not new ones); one deleted from the stream meanwhile is acknowledged."""
    q = queue(redis_client, claim_idle_ms=60_000)
    await q.ensure_group()
    for n in range(4):
        await q.put({"n": n})
    mine = await q.take("c1", count=3, block_ms=10)
    others = await q.take("c2", count=1, block_ms=10)
    await q.put({"n": 4})  # new: not read by anyone yet
    await redis_client.xdel("q", mine[1].entry_id)
    first = await q.take_own("c1", count=1)
    rest = await q.take_own("c1", after=first[-1].entry_id, count=10)
    assert [d.fields["n"] for d in [*first, *rest]] == ["0", "2"]
    assert rest[0].deliveries >= 2
    pending = await redis_client.xpending_range("q", "g", min="-", max="+", count=10)
    assert sorted((p["message_id"], p["consumer"]) for p in pending) == sorted(
        [(mine[0].entry_id, "c1"), (mine[2].entry_id, "c1"), (others[0].entry_id, "c2")]
    )
