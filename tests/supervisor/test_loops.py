"""The circuit breaker on cycles of board states, the versions incidents record, and the
board deadline told apart from an activation timeout. Embedded, on both backends;
assertions read the board, its incidents, its activations and the recorded outcomes."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from bbtest import activations, build_app, incidents, outcomes, run_until
from blackboard.agents import Context, Handoff, Output, agent
from blackboard.supervisor import Deployment, Supervisor
from pydantic import BaseModel

from blackboard import App, BoardStore, FatalError, Key, Limits


async def run(app: App, store: BoardStore, board: str = "c1") -> Any:
    async with Deployment(app, store) as d:
        await d.start(board)
        return await d.settle(board)


class Toggles(BaseModel):
    a: Annotated[str, Key("a")] = ""
    b: Annotated[str, Key("b")] = ""
    c: Annotated[str, Key("c")] = ""


def flipper(name: str, to: str, flips: bool = True) -> Any:
    """An agent that flips its key between "on" and "off" (or writes nothing) and hands
    off to ``to``: the board goes back and forth between a few states for ever."""

    @agent(name, handoffs=(to,))
    async def run_(ctx: Context) -> Output:
        updates = {name: "off" if ctx.board[name] == "on" else "on"} if flips else {}
        return Output(updates=updates, handoff=Handoff(to=to, reason="your turn"))

    return run_


async def test_two_agents_oscillating_the_board_trip_the_breaker(store: BoardStore) -> None:
    # A -> B -> A -> B, each flipping its key: the board cycles through four states,
    # so each handoff meets the same content every other time it fires.
    app = App(
        board=Toggles,
        agents=[flipper("a", "b"), flipper("b", "a"), flipper("c", "a", flips=False)],
        start=["a"],
        limits=Limits(loop_threshold=3, max_activations=40),
    )
    info = await run(app, store)
    assert info.status == "escalated"
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "loop", incident
    detail = incident["detail"]
    # b>a meets (a=on, b=on) at v2, v6 and v10: the third time trips
    assert detail.startswith("handoff b>a repeated 3 times"), detail
    assert "came back to content it had before" in detail
    assert "versions 2,6,10" in detail
    assert incident["cycle"] == "b>a@6 a>b@7 b>a@8 a>b@9"
    assert "agents a, b" in detail
    assert incident["version"] == "10" == str(info.version)
    assert len(await activations(store, "c1")) == 10  # far from the budget of 40


async def test_three_agent_cycle_with_oscillating_content_trips(store: BoardStore) -> None:
    # a flips its key, b and c only pass it on: a>b meets "on" and "off" in turn
    app = App(
        board=Toggles,
        agents=[flipper("a", "b"), flipper("b", "c", flips=False), flipper("c", "a", flips=False)],
        start=["a"],
        limits=Limits(loop_threshold=3, max_activations=40),
    )
    info = await run(app, store)
    assert info.status == "escalated"
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "loop", incident
    assert incident["detail"].startswith("handoff a>b repeated 3 times"), incident
    assert "versions 1,3,5" in incident["detail"]
    assert "agents a, b, c" in incident["detail"]
    cycle = incident["cycle"].split()
    assert [c.split("@")[0] for c in cycle] == ["a>b", "b>c", "c>a"] * 2
    assert incident["version"] == str(info.version) == "5"


class Counter(BaseModel):
    n: Annotated[int, Key("ping")] = 0
    echo: Annotated[int, Key("pong")] = 0


async def test_content_that_keeps_changing_is_progress_not_a_loop(store: BoardStore) -> None:
    # Long back and forth where every handoff meets a new board: never a loop.
    @agent("ping", handoffs=("pong",))
    async def ping(ctx: Context) -> Output:
        n = ctx.board["n"] + 1
        return Output(updates={"n": n}, handoff=Handoff(to="pong") if n < 30 else None)

    @agent("pong", reads=("n",), handoffs=("ping",))
    async def pong(ctx: Context) -> Output:
        return Output(updates={"echo": ctx.board["n"] % 2}, handoff=Handoff(to="ping"))

    app = App(
        board=Counter,
        agents=[ping, pong],
        start=["ping"],
        done=lambda b: b.get("n") == 30,
        done_reads=["n"],
        limits=Limits(loop_threshold=2, max_activations=100),
    )
    info = await run(app, store)
    assert info.status == "done"
    assert await store.read_key("c1", "n") == 30
    assert await incidents(store, "c1") == []
    # 58 handoffs, of which the board keeps the last 8 x loop_threshold: bounded
    recent = await store.redis.hget(store.keys("c1").loops, "recent")
    assert len(recent.split()) == 16
    assert recent.split()[-1].startswith("pong>ping=")


async def test_loop_tripped_on_a_step_with_no_commit_records_the_boards_version(
    store: BoardStore,
) -> None:
    # ping writes twelve times, then both only hand off: the trip happens on steps that
    # commit nothing, while the board is at v12.
    @agent("ping", handoffs=("pong",))
    async def ping(ctx: Context) -> Output:
        n = ctx.board["n"]
        return Output(updates={"n": n + 1} if n < 12 else {}, handoff=Handoff(to="pong"))

    @agent("pong", handoffs=("ping",))
    async def pong(ctx: Context) -> Output:
        return Output(handoff=Handoff(to="ping"))

    app = App(
        board=Counter,
        agents=[ping, pong],
        start=["ping"],
        limits=Limits(loop_threshold=3, max_activations=60),
    )
    info = await run(app, store)
    assert info.status == "escalated"
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "loop"
    version = info.version
    assert version >= 12
    assert incident["version"] == str(version)
    assert "versions 0," not in incident["detail"] and ",0," not in incident["detail"]
    assert "with no change to the board" in incident["detail"]


async def test_fatal_incident_records_the_boards_version(store: BoardStore) -> None:
    @agent("ping", handoffs=("pong",))
    async def ping(ctx: Context) -> Output:
        return Output(updates={"n": 7}, handoff=Handoff(to="pong"))

    @agent("pong")
    async def pong(ctx: Context) -> Output:
        raise FatalError("the upstream system refused the order")

    app = App(board=Counter, agents=[ping, pong], start=["ping"])
    info = await run(app, store)
    assert info.status == "failed"
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "fatal"
    assert incident["version"] == "1" == str(info.version)


async def test_board_deadline_is_a_deadline_not_an_activation_timeout(store: BoardStore) -> None:
    @agent("intake")
    async def slow(ctx: Context) -> Output:
        await asyncio.sleep(5)
        return Output()

    base = build_app()
    app = build_app(
        agents=[slow, *[a for a in base.agents if a.name != "intake"]],
        limits=Limits(deadline_s=0.2),  # the activation timeout stays 60 s
    )
    info = await run(app, store)
    assert info.status == "escalated"
    # The agent's own timer and the supervisor's watchdog both see it: one incident.
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "deadline", incident
    assert "board deadline" in incident["detail"]
    assert "deadline_s 0.2 s" in incident["detail"]
    assert "60 s" not in incident["detail"]
    reason = await store.redis.hget(store.keys("c1").meta, "escalated_reason")
    assert reason.startswith("deadline: board deadline"), reason
    # The activation's report says the board's deadline cut it, not its own timeout.
    [act] = await activations(store, "c1")
    assert act["deadline_ms"] - act["created_ms"] <= 200
    [failed] = [o for o in await outcomes(store, "c1") if o["status"] == "failed"]
    assert "cut by the board deadline" in failed["message"], failed
    assert "timed out after 60 s" not in failed["message"]


async def test_watchdog_reports_a_board_deadline_as_a_deadline(store: BoardStore) -> None:
    # No agent runs: only the supervisor's watchdog sees the activation expire, and the
    # board's deadline with it.
    app = build_app(limits=Limits(deadline_s=0.2))
    sup = Supervisor(app, store)
    await sup.start("c1")

    async def reported() -> bool:
        return any(o["status"] == "failed" for o in await outcomes(store, "c1"))

    await run_until(sup, reported)
    assert (await store.info("c1")).status == "escalated"
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "deadline", incident
    assert incident["detail"].startswith("board deadline passed: ")
    assert "deadline_s 0.2 s" in incident["detail"]
    [failed] = [o for o in await outcomes(store, "c1") if o["status"] == "failed"]
    assert failed["reason"] == "timeout"
    assert "'intake' was cut by the board deadline" in failed["message"], failed
