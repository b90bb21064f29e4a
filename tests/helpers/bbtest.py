"""Helpers shared by the supervisor, agents and CLI tests: a small loan-like app and
readers of what the supervisor recorded."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from blackboard.agents import Context, Handoff, Output, Summariser, agent, when_changed
from pydantic import BaseModel, Field

from blackboard import App, BoardStore, Key, Limits
from blackboard.connection import Pipeliner


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
    raw = await store.redis.hget(store.keys(board_id).results, proposal_id)
    assert raw is not None, f"no outcome recorded for {proposal_id}"
    return json.loads(raw)


async def outcomes(store: BoardStore, board_id: str) -> list[dict[str, Any]]:
    raw = await store.redis.hgetall(store.keys(board_id).results)
    return [json.loads(v) for v in raw.values()]


async def incidents(store: BoardStore, board_id: str) -> list[dict[str, str]]:
    return [f for _, f in await store.redis.xrange(store.keys(board_id).incidents)]


async def activations(store: BoardStore, board_id: str) -> list[dict[str, Any]]:
    raw = await store.redis.hgetall(store.keys(board_id).activations)
    # In creation order. Several may be created in the same millisecond: the one
    # created at the lower board version came first.
    return sorted((json.loads(v) for v in raw.values()), key=lambda a: (a["created_ms"], a["base"]))


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
