"""Embedded mode: activations and submissions handed over in memory, everything of
record in Redis. A step is one round trip; a deployment killed mid-run is resumed by
the next one started on the same Redis, each step committed once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import pytest
from bbtest import activations, build_app
from blackboard.agents import Context, Handoff, Output, agent
from blackboard.supervisor import Deployment, Supervisor
from procapps import relay_app
from pydantic import BaseModel

from blackboard import App, BoardStore, Key, connect
from blackboard.keys import GlobalKeys

HELPERS = str(Path(__file__).resolve().parents[1] / "helpers")


class Pair(BaseModel):
    first: Annotated[int | None, Key("first")] = None
    second: Annotated[int | None, Key("second")] = None
    secret: Annotated[str, Key("human")] = "hidden"


def pair_app(seen: list[tuple[int, dict[str, Any]]]) -> App:
    @agent("first", handoffs=("second",))
    async def first(ctx: Context) -> Output:
        seen.append((ctx.version, dict(ctx.board)))
        return Output(updates={"first": 41}, handoff=Handoff(to="second"))

    @agent("second", reads=("first",))
    async def second(ctx: Context) -> Output:
        seen.append((ctx.version, dict(ctx.board)))
        return Output(updates={"second": ctx.board["first"] + 1})

    return App(board=Pair, agents=[first, second], start=["first"], name="Pair")


async def test_the_next_agent_sees_the_board_read_with_the_commit(store: BoardStore) -> None:
    seen: list[tuple[int, dict[str, Any]]] = []
    async with Deployment(pair_app(seen), store) as d:
        await d.start("p1")
        info = await d.settle("p1")
    assert (info.version, (await store.read("p1")).data["second"]) == (2, 42)
    # each agent saw its own keys and those it reads (never "secret"), at the version it
    # was activated on
    assert seen == [(0, {"first": None}), (1, {"first": 41, "second": None})]
    records = {a["agent"]: a for a in await activations(store, "p1")}
    assert (records["second"]["base"], records["second"]["status"]) == (1, "submitted")
    assert records["second"]["keys_read"] == ["first", "second"]


async def test_a_closed_deployment_holds_no_connection(store: BoardStore) -> None:
    """The supervisor keeps one connection for its round trips while it runs; closing
    the deployment gives it back, so deployments opened one after another on one store
    do not drain its pool."""
    pool = store.redis.connection_pool
    for i in range(3):
        async with Deployment(pair_app([]), store) as d:
            await d.start(f"p{i}")
            await d.settle(f"p{i}")
        assert not pool._in_use_connections, pool._in_use_connections


async def test_no_submission_or_activation_goes_through_a_stream(store: BoardStore) -> None:
    async with Deployment(pair_app([]), store) as d:
        await d.start("p1")
        await d.settle("p1")
    keys = GlobalKeys(store.settings.key_prefix)
    streams = [keys.submissions("first", 0), keys.submissions("second", 0), keys.commands(0)]
    for stream in (*streams, keys.queue("first"), keys.queue("second")):
        assert await store.redis.xlen(stream) == 0, stream
    bk = store.keys("p1")
    assert (await store.redis.zcard(bk.open), await store.redis.hlen(bk.outbox)) == (0, 0)


async def test_an_activation_left_in_hand_by_a_stopped_process_is_recovered(
    store: BoardStore,
) -> None:
    """Routed to an agent 'in this process' that never ran it (the process died): the
    activation stays open in the outbox, and the next deployment runs it."""
    app = build_app()
    lost = Supervisor(app, store)
    await lost.publish()
    lost.router.local = lambda *handed: True  # taken, then lost with the process
    await lost.start("c1")
    bk = store.keys("c1")
    assert await store.redis.hkeys(bk.outbox) == await store.redis.zrange(bk.open, 0, -1)
    assert await store.redis.zcard(bk.open) == 1
    async with Deployment(app, store) as d:
        info = await d.settle("c1")
    assert info.status == "done"
    authors = [e.author for e in await store.history("c1") if e.kind == "write"]
    assert authors == ["intake", "risk", "compliance"]


async def test_settle_waits_for_agents_in_this_process_without_polling(
    store: BoardStore,
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    @agent("first", handoffs=("second",))
    async def first(ctx: Context) -> Output:
        entered.set()
        await release.wait()
        return Output(updates={"first": 1}, handoff=Handoff(to="second"))

    @agent("second")
    async def second(ctx: Context) -> Output:
        return Output(updates={"second": 2})

    app = App(board=Pair, agents=[first, second], start=["first"], name="Pair")
    async with Deployment(app, store) as d:
        await d.start("p1")
        await entered.wait()
        looks = 0
        pipeline = store.redis.pipeline

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal looks
            looks += 1
            return pipeline(*args, **kwargs)

        store.redis.pipeline = counted  # type: ignore[method-assign]
        settling = asyncio.create_task(d.settle("p1", poll_s=0.001))
        await asyncio.sleep(0.05)  # time for fifty polls, were it polling
        assert (settling.done(), looks) == (False, 0)
        release.set()
        info = await settling
        store.redis.pipeline = pipeline  # type: ignore[method-assign]
    assert info.version == 2
    assert looks >= 1  # one look at Redis once the agents here were done


@pytest.mark.real_redis
@pytest.mark.slow
async def test_embedded_deployment_killed_mid_run_is_resumed(redis_server: Any) -> None:
    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client)
    child = subprocess.Popen(
        [sys.executable, "-m", "procapps", "embedded", redis_server.url, "r1"],
        env={**os.environ, "PYTHONPATH": HELPERS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not await client.exists(store.keys("r1").meta) or await store.version("r1") < 1:
            assert time.monotonic() < deadline, "the child did not commit step a"
            await asyncio.sleep(0.02)
        # step b is now running (it takes 2 s): kill the whole deployment
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert await store.version("r1") == 1
        async with Deployment(relay_app, store) as d:
            info = await d.settle("r1", 20)
    finally:
        if child.poll() is None:
            child.kill()
    assert (info.status, info.version) == ("active", 3)
    assert (await store.read("r1")).data == {"a": 1, "b": 2, "c": 3}
    writes = [(e.author, e.version) for e in await store.history("r1") if e.kind == "write"]
    assert writes == [("a", 1), ("b", 2), ("c", 3)]  # b ran twice, committed once
    await store.close()


async def test_a_reply_lost_after_the_commit_is_resent_not_lost(store: BoardStore) -> None:
    """The commit-and-route script ran, but its reply never came back (an outage): the
    agent sends the same submission again, the commit is recognised, and the activation
    the routing created is still handed over."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    seen: list[tuple[int, dict[str, Any]]] = []
    async with Deployment(pair_app(seen), store) as d:
        pipeliner = d.supervisor.router.pipeliner
        execute = pipeliner.execute
        lost = []

        async def lose_first_reply(*commands: Any) -> Any:
            replies = await execute(*commands)
            commits = [c for c in commands if c[0] == "script" and c[1][2][-3] > 0]  # NK
            if not lost and commits:  # a commit-and-route script (not a start's routing)
                lost.append(commands)
                raise RedisConnectionError("connection reset after the script ran")
            return replies

        pipeliner.execute = lose_first_reply  # type: ignore[method-assign]
        await d.start("p1")
        info = await d.settle("p1", 10)
    assert lost and (info.version, (await store.read("p1")).data["second"]) == (2, 42)
    writes = [(e.author, e.version) for e in await store.history("p1") if e.kind == "write"]
    assert writes == [("first", 1), ("second", 2)]
    assert [v for v, _ in seen] == [0, 1]  # each agent ran once


async def test_a_kept_submission_is_resent_after_a_crash_not_rerun(store: BoardStore) -> None:
    """General path (a trigger reads what the commit changed): committed, then the
    process died before routing. The restarted deployment sends the kept submission,
    so routing follows what was committed and the agent does not run again."""
    runs: list[str] = []
    base = build_app()

    @agent("intake")
    async def intake(ctx: Context) -> Output:
        runs.append(ctx.activation_id)
        return Output(updates={"amount": 50_000.0, "income": 90_000.0})

    app = build_app(agents=[intake, *[a for a in base.agents if a.name != "intake"]])
    async with Deployment(app, store) as d:
        follow_up = d.supervisor.follow_up.after_decision

        async def die(*args: Any, **kwargs: Any) -> None:
            raise asyncio.CancelledError  # the process stops between commit and routing

        d.supervisor.follow_up.after_decision = die  # type: ignore[method-assign]
        await d.start("c1")
        deadline = time.monotonic() + 5
        while await store.version("c1") < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        d.supervisor.follow_up.after_decision = follow_up  # type: ignore[method-assign]
    [kept] = await activations(store, "c1")
    assert kept["submission"]["patch"] and await store.redis.zcard(store.keys("c1").open) == 1
    async with Deployment(app, store) as d:
        info = await d.settle("c1", 10)
    assert info.status == "done" and len(runs) == 1
    authors = [e.author for e in await store.history("c1") if e.kind == "write"]
    assert authors == ["intake", "risk", "compliance"]
    [record] = [a for a in await activations(store, "c1") if a["agent"] == "intake"]
    assert (record["status"], record["submission"]) == ("submitted", None)


async def test_recovery_also_covers_boards_awaiting_approval(store: BoardStore) -> None:
    """A board waiting for a human can still have activations in flight; a crash must
    not strand them until the watchdog escalates the board."""
    app = build_app()
    lost = Supervisor(app, store)
    await lost.publish()
    lost.router.local = lambda *handed: True  # taken, then lost with the process
    await lost.start("c1")
    await store.redis.hset(store.keys("c1").meta, "status", "awaiting_approval")
    async with Deployment(app, store) as d:
        info = await d.settle("c1")
    writes = [e.author for e in await store.history("c1") if e.kind == "write"]
    assert (writes, info.status) == (["intake"], "awaiting_approval")
    # intake's activation was closed by its routing; risk's waits for the human
    still_open = await store.redis.zrange(store.keys("c1").open, 0, -1)
    assert [
        a["agent"] for a in await activations(store, "c1") if a["activation_id"] in still_open
    ] == ["risk"]


async def test_activations_queued_here_are_dropped_once_their_board_stopped(
    store: BoardStore,
) -> None:
    from blackboard.records import Activation

    seen: list[tuple[int, dict[str, Any]]] = []
    app = pair_app(seen)
    await store.create("p1", app.schema)
    async with Deployment(app, store) as d:
        d.supervisor.boards.saw("p1", "failed")  # as if its routing had just failed the board
        late = Activation(
            activation_id="a-late", board_id="p1", agent="second", base=0, trace_id="t"
        )
        hand_over = d.supervisor.router.local  # how the supervisor hands activations here
        assert hand_over is not None
        assert hand_over("p1", "a-late", "second", late, None)
        info = await d.settle("p1")
    assert (seen, info.version) == ([], 0)  # the agent never ran, nothing committed
