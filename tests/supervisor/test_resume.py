"""``resume`` sets a stopped board going again, whatever it lacks: a timed-out
activation made again, an open activation whose queue entry is gone dispatched again,
routing as after the last commit; with nothing to do it escalates again, saying so. A
board after resume is never active with nothing to do. Both backends."""

from __future__ import annotations

import asyncio
from typing import Annotated

from blackboard.agents import AgentWorker, Context, Handoff, Output, agent
from blackboard.supervisor import Deployment, Supervisor
from pydantic import BaseModel

from blackboard import App, BoardStore, Key, Limits, ReadModel
from blackboard.keys import GlobalKeys
from blackboard.records import Submission


class Relay(BaseModel):
    first: Annotated[int | None, Key("first")] = None
    second: Annotated[int | None, Key("second")] = None


def relay(slow_once: str = "", *, handoff: bool = True, timeout: float = 0.3) -> App:
    """``first`` hands off to ``second``; the agent named ``slow_once`` outlives the
    activation timeout on its first run only (its process hung, say)."""
    runs = {"first": 0, "second": 0}

    async def maybe_hang(name: str) -> None:
        runs[name] += 1
        if name == slow_once and runs[name] == 1:
            await asyncio.sleep(timeout * 4)

    @agent("first", handoffs=("second",))
    async def first(ctx: Context) -> Output:
        await maybe_hang("first")
        return Output(updates={"first": 1}, handoff=Handoff(to="second") if handoff else None)

    @agent("second", reads=("first",))
    async def second(ctx: Context) -> Output:
        await maybe_hang("second")
        return Output(updates={"second": (ctx.board.get("first") or 0) + 1})

    return App(
        board=Relay,
        agents=[first, second],
        start=["first"],
        done=lambda b: b.get("second") is not None,
        done_reads=["second"],
        name="Relay",
        limits=Limits(activation_timeout_s=timeout),
    )


async def escalated_by_timeout(d: Deployment, board: str) -> None:
    info = await d.settle(board)
    bk = d.store.keys(board)
    reason = await d.store.redis.hget(bk.meta, "escalated_reason")
    assert (info.status, reason.split(":")[0]) == ("escalated", "timeout")
    assert await d.store.redis.hlen(bk.outbox) == 0
    assert await d.store.redis.zcard(bk.open) == 0  # stuck: nothing waiting, nothing open


async def test_resume_after_a_start_activation_timed_out_runs_it_again(store: BoardStore) -> None:
    async with Deployment(relay("first"), store) as d:
        await d.start("r1")
        await escalated_by_timeout(d, "r1")
        outcome = await d.command("r1", "resume", by="human:ops")
        assert "first" in outcome.message
        info = await d.settle("r1")
    assert info.status == "done"
    assert (await store.read("r1")).data == {"first": 1, "second": 2}


async def test_resume_after_a_handed_off_activation_timed_out_runs_it_again(
    store: BoardStore,
) -> None:
    async with Deployment(relay("second"), store) as d:
        await d.start("r2")
        await escalated_by_timeout(d, "r2")
        assert await store.version("r2") == 1  # first committed; second's work was lost
        await d.command("r2", "resume", by="human:ops")
        info = await d.settle("r2")
    assert info.status == "done"
    assert [e.author for e in await store.history("r2")] == ["first", "second"]


async def test_resume_routes_as_after_the_last_commit_when_nothing_timed_out(
    store: BoardStore,
) -> None:
    """The board escalated after first's commit, before its routing activated anyone
    (as a replica killed between the two, then an operator's pause, would leave it)."""
    app = relay()
    sup = Supervisor(app, store)
    await sup.publish()
    await store.create("r3", app.schema)
    worker = AgentWorker(app, "first", store, name="f0")
    await sup.activate_start("r3")
    [delivery] = await worker.queue.take("f0", block_ms=100)
    await worker.handle(delivery)  # first ran and submitted
    taken = await sup.queues[0].take("dead", block_ms=100)
    [(_, sub)] = await sup.authentication.screen(sup.queues[0], taken)  # (and first's record kept)
    assert (await sup.validator.decide("r3", sub.proposal(), kind="write")).status == "committed"
    # the replica died here; its activation is closed by hand, the board escalated
    bk = store.keys("r3")
    await store.redis.zrem(bk.open, sub.activation_id)
    await store.redis.hset(bk.meta, "status", "escalated")
    async with Deployment(app, store) as d:
        outcome = await d.command("r3", "resume", by="human:ops")
        assert "second" in outcome.message and "after v1" in outcome.message
        info = await d.settle("r3")
    assert info.status == "done"
    assert [e.author for e in await store.history("r3")] == ["first", "second"]


async def test_resume_dispatches_again_an_open_activation_whose_entry_is_gone(
    store: BoardStore,
) -> None:
    app = relay(timeout=30)
    sup = Supervisor(app, store)
    await sup.publish()
    await store.create("r4", app.schema)
    await sup.activate_start("r4")
    queue = GlobalKeys(store.settings.key_prefix).queue("first")
    [(entry_id, _)] = await store.redis.xrange(queue)
    await store.redis.xdel(queue, entry_id)  # lost: trimmed, or a dead letter
    await store.redis.hset(store.keys("r4").meta, "status", "escalated")
    assert await store.redis.zcard(store.keys("r4").open) == 1
    stop = asyncio.Event()
    workers = [AgentWorker(app, name, store, name=f"{name}-w") for name in ("first", "second")]
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    tasks.append(asyncio.create_task(sup.run(stop)))
    try:
        outcome = await sup.operator.resume(
            Submission(kind="command", board_id="r4", proposal_id="c1", author="human:ops"),
            {},
        )
        assert outcome.message.startswith("resumed by human:ops: 1 activations dispatched")
        deadline = asyncio.get_running_loop().time() + 10
        while await store.redis.hget(store.keys("r4").meta, "status") != "done":
            assert asyncio.get_running_loop().time() < deadline, "not done"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert [e.author for e in await store.history("r4")] == ["first", "second"]


async def test_resume_with_nothing_to_do_waits_for_a_human_saying_so(store: BoardStore) -> None:
    async with Deployment(relay(handoff=False, timeout=30), store) as d:
        await d.start("r5")
        info = await d.settle("r5")  # first wrote and handed off to nobody: idle
        assert (info.status, info.version) == ("active", 1)
        outcome = await d.command("r5", "resume", by="human:ops")
        assert "nothing to activate" in outcome.message
        info = await d.settle("r5")
        assert info.status == "awaiting_approval"
        assert await store.redis.zscore(GlobalKeys("bb").escalations, "r5") is not None
        [incident] = await ReadModel(store).incidents(["r5"])
        assert incident.kind == "stalled"
        assert incident.detail.startswith("resumed by human:ops: nothing to activate")
