"""Helpers shared by the supervisor, agents and CLI tests: a small loan-like app and
readers of what the supervisor recorded."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from blackboard.agents import Context, Handoff, Output, Summariser, agent, when_changed
from blackboard.supervisor import Supervisor
from blackboard.supervisor.intake import BATCH
from pydantic import BaseModel, Field

from blackboard import App, BoardStore, Key, Limits
from blackboard.connection import Pipeliner
from blackboard.readmodel import ReadModel


class Case(BaseModel):
    amount: Annotated[float | None, Field(gt=0), Key("intake")] = None
    income: Annotated[float | None, Key("intake")] = None
    score: Annotated[int | None, Key("risk")] = None
    max_amount: Annotated[float, Key("human")] = 1_000_000.0
    decision: Annotated[Literal["approve", "reject"] | None, Key("compliance")] = None
    log: Annotated[list[str], Key("intake", summarisable=True, summary_bytes=400)] = []
    summary_note: Annotated[str, Key("summariser")] = ""


def build_app(**overrides: Any) -> App:
    @agent("intake")
    async def intake(ctx: Context) -> Output:
        fix = ctx.feedback  # a rewrite brings the rejection as feedback
        amount = 50_000.0 if not fix else 40_000.0
        return Output(
            updates={"amount": amount, "income": 90_000.0}, tokens_in=10, tokens_out=5, cost=0.01
        )

    @agent("risk", reads=("income",), triggers=(when_changed("income"),))
    async def risk(ctx: Context) -> Output:
        score = 700 if ctx.board["income"] > 50_000 else 500
        return Output(
            updates={"score": score},
            handoff=Handoff(to="compliance", reason="scored", confidence=0.9),
        )

    @agent("compliance", reads=("score", "amount"))
    async def compliance(ctx: Context) -> Output:
        return Output(updates={"decision": "approve" if ctx.board["score"] >= 600 else "reject"})

    summariser = Summariser(keep_recent=2)

    kwargs: dict[str, Any] = dict(
        board=Case,
        agents=[intake, risk, compliance, summariser],
        start=["intake"],
        done=lambda b: b.get("decision") is not None,
        done_reads=["decision"],
        summariser="summariser",
        limits=Limits(activation_timeout_s=5),
    )
    kwargs.update(overrides)
    return App(**kwargs)


async def outcome_of(store: BoardStore, board_id: str, proposal_id: str) -> dict[str, Any]:
    decided = (await ReadModel(store).outcomes(board_id)).get(proposal_id)
    assert decided is not None, f"no outcome recorded for {proposal_id}"
    return decided.model_dump(exclude={"proposal_id"})


async def outcomes(store: BoardStore, board_id: str) -> list[dict[str, Any]]:
    decided = await ReadModel(store).outcomes(board_id)
    return [o.model_dump(exclude={"proposal_id"}) for o in decided.values()]


async def incidents(store: BoardStore, board_id: str) -> list[dict[str, str]]:
    """As stored: every field a string (``version``, ``ts``), ``cycle`` only for loops."""
    rows = await ReadModel(store).incidents([board_id])
    return [
        {
            "kind": i.kind,
            "detail": i.detail,
            "version": str(i.version),
            "ts": str(i.ts_ms),
            **({"cycle": i.cycle} if i.cycle else {}),
        }
        for i in rows
    ]


async def activations(store: BoardStore, board_id: str) -> list[dict[str, Any]]:
    """In creation order."""
    return [a.model_dump() for a in await ReadModel(store).activations(board_id)]


def count_into(pipe: Any, sizes: list[int]) -> Any:
    """``pipe`` (a redis-py pipeline), recording in ``sizes`` how many commands each
    of its executes sends."""
    execute = pipe.execute

    async def counted(*a: Any, **k: Any) -> Any:
        sizes.append(len(pipe.command_stack))
        return await execute(*a, **k)

    pipe.execute = counted
    return pipe


def counting(p: Pipeliner) -> list[int]:
    """Count the pipelines ``p`` sends and the commands in each."""
    sizes: list[int] = []
    count_into(p._pipe, sizes)
    return sizes


async def run_until(sup: Supervisor, until: Any, batch: int = BATCH) -> None:
    """Run the supervisor until ``until()`` holds (10 s at most), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(sup.run(stop, batch=batch))
    try:
        async with asyncio.timeout(10):
            while not await until():
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
