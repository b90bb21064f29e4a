"""Bounded memory (issue 23): streams trimmed behind the oldest entry a consumer group
still needs, on the supervisor's schedule; finished boards archived by policy. Both
backends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import pytest
from bbtest import run_until
from blackboard.agents import Context, Output, agent
from blackboard.supervisor import Supervisor
from blackboard.supervisor.retention import ArchivePolicy, Retention, archive_into
from pydantic import BaseModel

from blackboard import App, BoardStore, Key
from blackboard.lifecycle import import_board, read_export
from blackboard.queues import submit, trim_floor, trim_stream
from blackboard.records import Submission


class One(BaseModel):
    x: Annotated[int | None, Key("a")] = None


@agent("a")
async def a(ctx: Context) -> Output:
    return Output(updates={"x": 1})


APP = App(board=One, agents=[a], start=["a"], done=lambda b: b.get("x") == 3, done_reads=["x"])


def order(entry_id: str) -> tuple[int, ...]:
    return tuple(map(int, entry_id.split("-")))


async def test_a_stream_keeps_what_any_group_has_pending_or_not_yet_read(
    store: BoardStore,
) -> None:
    r = store.redis
    ids = [await r.xadd("s", {"n": n}) for n in range(10)]
    await r.xgroup_create("s", "slow", id="0")
    await r.xgroup_create("s", "fast", id="0")
    await r.xreadgroup("slow", "c", {"s": ">"}, count=6)
    await r.xack("s", "slow", *ids[:3])  # pending in slow: 3, 4, 5; 6.. not read
    await r.xreadgroup("fast", "c", {"s": ">"}, count=2)
    await r.xack("s", "fast", *ids[:2])  # fast has read 0, 1: it needs 2 next
    floor = await trim_floor(r, "s")  # right after 1 (which is 2 unless a ms went by)
    assert floor is not None and order(ids[1]) < order(floor) <= order(ids[2])
    assert await trim_stream(r, "s") == 2
    assert [i for i, _ in await r.xrange("s")] == ids[2:]
    await r.xreadgroup("fast", "c", {"s": ">"})
    await r.xack("s", "fast", *ids[2:])
    assert await trim_stream(r, "s") == 1  # slow still holds 3, 4, 5 pending
    assert (await r.xpending("s", "slow"))["min"] == ids[3]
    await r.xack("s", "slow", *ids[3:6])
    assert await trim_stream(r, "s") == 3  # 6.. were never delivered to slow
    assert [i for i, _ in await r.xrange("s")] == ids[6:]
    await r.xadd("lonely", {"n": 1})
    assert await trim_stream(r, "lonely") == 0  # no group: nobody took anything
    assert await trim_stream(r, "missing") == 0


async def test_the_supervisor_trims_its_streams_as_it_goes(store: BoardStore) -> None:
    sup = Supervisor(APP, store)
    sup.retention.every_s = 0.02
    await store.create("b1", APP.schema)
    stream = sup.keys.submissions("a", 0)
    for v in range(3):
        patch = [{"op": "add", "path": "/x", "value": v + 1}]
        sub = Submission(kind="proposal", board_id="b1", author="a", base=v, patch=patch)
        await submit(store.redis, store.settings.key_prefix, sub)
    assert await store.redis.xlen(stream) == 3
    stop = asyncio.Event()
    task = asyncio.create_task(sup.run(stop))
    try:
        async with asyncio.timeout(10):
            while await store.version("b1") < 3 or await store.redis.xlen(stream):
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
    assert (await store.redis.xpending(stream, "supervisor"))["pending"] == 0


async def test_finished_boards_are_archived_by_policy_and_others_kept(
    store: BoardStore, tmp_path: Path
) -> None:
    for board in ("done1", "failed1", "active1", "fresh-done"):
        await store.create(board, APP.schema, {"x": 1})
    meta = store.keys
    await store.redis.hset(meta("done1").meta, mapping={"status": "done", "updated": 1})
    await store.redis.hset(meta("failed1").meta, mapping={"status": "failed", "updated": 1})
    await store.redis.hset(meta("fresh-done").meta, "status", "done")  # updated: just now
    retention = Retention(store, [], APP.agent_names, policy=ArchivePolicy(tmp_path, after_s=60))
    assert await retention.round() == (0, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done1.json", "failed1.json"]
    assert sorted(b.board_id for b in await store.boards()) == ["active1", "fresh-done"]
    assert await store.redis.exists(meta("done1").archiving) == 0
    # the default archive is `blackboard archive`'s: the export loads back whole
    await import_board(store, read_export(tmp_path / "done1.json"))
    assert (await store.read("done1")).data == {"x": 1}


async def test_an_archive_that_fails_leaves_its_board_and_goes_on_with_the_others(
    store: BoardStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def archive(store: BoardStore, board_id: str, directory: Path) -> Path:
        if board_id == "bad":
            raise OSError("disk full (injected)")
        return await archive_into(store, board_id, directory)

    for board in ("bad", "good"):
        await store.create(board, APP.schema)
        await store.redis.hset(store.keys(board).meta, mapping={"status": "done", "updated": 1})
    policy = ArchivePolicy(tmp_path, after_s=60, archive=archive)
    retention = Retention(store, [], APP.agent_names, policy=policy)
    assert await retention.round() == (0, 1)
    assert [b.board_id for b in await store.boards()] == ["bad"]
    assert "archiving board bad failed" in caplog.text
    assert await store.redis.exists(store.keys("bad").archiving) == 0


async def test_a_key_that_is_not_a_stream_is_skipped_not_fatal(
    store: BoardStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.redis.set("bb:queue:a", "not a stream")
    await store.redis.xadd("s", {"n": 1})
    await store.redis.xgroup_create("s", "g", id="$")
    retention = Retention(store, ["s"], APP.agent_names)
    assert await retention.round() == (1, 0)
    assert "cannot trim bb:queue:a" in caplog.text


def proposal(pid: str, base: int) -> Submission:
    patch = [{"op": "add", "path": "/x", "value": base + 1}]
    return Submission(
        kind="proposal", board_id="b1", author="a", proposal_id=pid, base=base, patch=patch
    )


async def test_records_past_the_window_go_and_a_late_duplicate_is_refused_not_reapplied(
    store: BoardStore,
) -> None:
    sup = Supervisor(APP, store)
    sup.retention.every_s = 3600  # rounds by hand here
    await store.create("b1", APP.schema)
    prefix, bk = store.settings.key_prefix, store.keys("b1")
    for v in range(2):
        await submit(store.redis, prefix, proposal(f"p{v}", v))
    await run_until(sup, lambda: store.redis.hexists(bk.results, "p1"))
    assert await sup.retention.forget_records("b1") == 0  # within the window: kept
    sup.retention.records_window_s = 0
    assert await sup.retention.forget_records("b1") == 2
    sup.retention.records_window_s = 3600  # (the next run's first round keeps p2's)
    assert await store.redis.hlen(bk.committed) == await store.redis.hlen(bk.results) == 0
    assert await store.redis.hget(bk.meta, "records_from") == "3"
    # p0 delivered again long after (an operator's retry of an old dead letter, say)
    await submit(store.redis, prefix, proposal("p0", 0))
    await submit(store.redis, prefix, proposal("p2", 2))  # a new one commits as usual

    async def settled() -> bool:
        return bool(await store.redis.hexists(bk.results, "p2")) and bool(
            await store.redis.xlen(sup.keys.dead_letters)
        )

    await run_until(sup, settled)
    assert await store.version("b1") == 3
    assert [e.proposal_id for e in await store.history("b1")] == ["p0", "p1", "p2"]
    [(_, letter)] = await store.redis.xrange(sup.keys.dead_letters)
    assert "older than the proposal records the board keeps (from v3)" in letter["dl_reason"]
    assert "blackboard history" in letter["dl_reason"]
