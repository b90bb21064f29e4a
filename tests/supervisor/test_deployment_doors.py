"""What a user of the embedded Deployment meets: a board that stopped for a person as a
typed error when asked (``LoopDetected``, ``BudgetExceeded``, ``Escalated``), the sync
door ``run_sync`` for code outside asyncio, and an outage in an agent's hands ridden
out. Both backends; assertions read the board, its status and reason, and the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from bbtest import build_app
from blackboard.agents import Context, Handoff, Output, agent
from blackboard.supervisor import Deployment
from pydantic import BaseModel

from blackboard import (
    App,
    BoardStore,
    BudgetExceeded,
    ConfigError,
    Escalated,
    FatalError,
    Key,
    Limits,
    LoopDetected,
    StoreUnavailable,
)
from blackboard.status import BoardStatus


class Toggles(BaseModel):
    a: Annotated[str, Key("a")] = ""
    b: Annotated[str, Key("b")] = ""


def flipper(name: str, to: str) -> Any:
    @agent(name, handoffs=(to,))
    async def run_(ctx: Context) -> Output:
        return Output(
            updates={name: "off" if ctx.board[name] == "on" else "on"}, handoff=Handoff(to=to)
        )

    return run_


def looping_app() -> App:
    """a and b hand off to each other for ever, flipping their keys: a loop."""
    return App(
        board=Toggles,
        agents=[flipper("a", "b"), flipper("b", "a")],
        start=["a"],
        limits=Limits(loop_threshold=3, max_activations=40),
    )


async def test_settle_raises_loop_detected_and_leaves_the_board_escalated(
    store: BoardStore,
) -> None:
    async with Deployment(looping_app(), store) as d:
        await d.start("c1")
        with pytest.raises(LoopDetected) as err:
            await d.settle("c1", raise_on_escalation=True)
        info = await d.settle("c1")  # without the flag: the board, as it is
    assert isinstance(err.value, Escalated)
    assert (err.value.board_id, err.value.kind) == ("c1", "loop")
    assert err.value.detail.startswith("handoff b>a repeated 3 times"), err.value.detail
    assert "`blackboard incidents c1`" in str(err.value)
    assert "resume" in str(err.value)
    assert info.status is BoardStatus.ESCALATED
    assert info.escalated_reason == f"loop: {err.value.detail}"
    assert info.version == 10  # nothing more happened after the breaker tripped


async def test_settle_raises_budget_exceeded_for_a_spent_token_budget(store: BoardStore) -> None:
    app = build_app(limits=Limits(max_tokens=10, activation_timeout_s=5))  # intake uses 15
    async with Deployment(app, store) as d:
        await d.start("c1")
        with pytest.raises(BudgetExceeded) as err:
            await d.settle("c1", raise_on_escalation=True)
    assert (err.value.kind, err.value.detail) == ("budget", "tokens used 15 > max_tokens 10")
    info = await store.info("c1")
    assert (info.status, info.escalated_reason) == (
        BoardStatus.ESCALATED,
        "budget: tokens used 15 > max_tokens 10",
    )


async def test_settle_raises_escalated_for_a_failed_board_and_not_for_a_done_one(
    store: BoardStore,
) -> None:
    @agent("a")
    async def broken(ctx: Context) -> Output:
        raise FatalError("the upstream system refused the order")

    failing = App(board=Toggles, agents=[broken, flipper("b", "a")], start=["a"])
    async with Deployment(failing, store) as d:
        await d.start("f1")
        with pytest.raises(Escalated) as err:
            await d.settle("f1", raise_on_escalation=True)
    assert type(err.value) is Escalated
    assert (err.value.board_id, err.value.kind) == ("f1", "failed")
    assert (await store.info("f1")).status is BoardStatus.FAILED
    async with Deployment(build_app(), store) as d:
        await d.start("ok")
        info = await d.settle("ok", raise_on_escalation=True)
    assert (info.status, info.escalated_reason) == (BoardStatus.DONE, "")


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.real_redis)])
def sync_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (the embedded Redis) or a real server's URL, emptied first."""
    if request.param == "fake":
        yield None
        return
    server = request.getfixturevalue("redis_server")
    with server.client() as client:
        client.flushdb()
    yield server.url


def test_run_sync_runs_a_board_to_done_outside_asyncio(sync_url: str | None) -> None:
    result = Deployment.run_sync(build_app(), "c1", {"income": 1.0}, url=sync_url)
    assert result.info.status is BoardStatus.DONE
    assert result.state.data["decision"] == "approve"
    assert result.state.version == result.info.version == 3
    if sync_url is not None:  # on a real server the board outlives the call

        async def version() -> int:
            async with BoardStore.from_url(sync_url) as store:
                return (await store.info("c1")).version

        assert asyncio.run(version()) == 3


def test_run_sync_raises_what_stopped_the_board(sync_url: str | None) -> None:
    with pytest.raises(LoopDetected, match="board 'c1' stopped for a person"):
        Deployment.run_sync(looping_app(), "c1", url=sync_url)
    app = build_app(limits=Limits(max_tokens=10, activation_timeout_s=5))
    result = Deployment.run_sync(app, "c2", url=sync_url, raise_on_escalation=False)
    assert result.info.status is BoardStatus.ESCALATED
    assert result.state.data["amount"] == 50_000.0  # intake's commit stands


async def test_run_sync_inside_an_event_loop_says_what_to_use_instead() -> None:
    with pytest.raises(ConfigError, match=r"inside a running event loop.*async with Deployment"):
        Deployment.run_sync(build_app(), "c1")


async def test_an_outage_in_an_agents_hands_reruns_it_reading_afresh(
    store: BoardStore, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[bool, bool]] = []
    async with Deployment(build_app(), store) as d:
        [worker] = [w for w in d.workers if w.agent.name == "risk"]
        run_local = worker.run_local

        async def flaky(board_id: str, activation_id: str, record: Any, context: Any) -> None:
            calls.append((record is None, context is None))
            if len(calls) == 1:
                raise StoreUnavailable("Redis unreachable (injected)")
            await run_local(board_id, activation_id, record, context)

        worker.run_local = flaky  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING):
            await d.start("c1")
            info = await d.settle("c1")
    assert info.status is BoardStatus.DONE
    # handed a record and context first; after the outage it read both again
    assert calls == [(False, False), (True, True)]
    assert "agent risk-0: Redis unavailable, retrying: Redis unreachable (injected)" in (
        caplog.text
    )
    assert [e.author for e in await store.history("c1")] == ["intake", "risk", "compliance"]


async def test_stopping_during_an_outage_leaves_the_activation_for_a_restart(
    store: BoardStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with Deployment(build_app(), store) as d:
        [worker] = [w for w in d.workers if w.agent.name == "intake"]
        tried = asyncio.Event()

        async def down(*args: Any) -> None:
            tried.set()
            raise StoreUnavailable("Redis unreachable (injected)")

        worker.run_local = down  # type: ignore[method-assign]
        await d.start("c1")
        async with asyncio.timeout(5):
            await tried.wait()
    assert "failed on board" not in caplog.text  # not an agent failure
    assert await store.redis.zcard(store.keys("c1").open) == 1  # still open: rerun later
    assert (await store.info("c1")).version == 0
