"""The app the two-replica process tests run (tests/supervisor/test_replica_processes.py).

Agents ``pa`` and ``pb`` start in parallel, each owning one key; a slow audit passes
pa's commit and fails pb's first one, before pa's has passed (pb fixes it on the
rewrite); the aggregator joins both keys. Every commit is audited, so every proposal
goes the general path: commit, audit (slow), then routing, which is when replicas race."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any

from blackboard.agents import Context, Output, agent, when_all
from pydantic import BaseModel

from blackboard import App, Audit, Key, Limits


class Pair(BaseModel):
    a: Annotated[int | None, Key("pa")] = None
    b: Annotated[str | None, Key("pb")] = None
    report: Annotated[str | None, Key("agg")] = None


@agent("pa")
async def pa(ctx: Context) -> Output:
    return Output(updates={"a": 1})


@agent("pb")
async def pb(ctx: Context) -> Output:
    # pa's commit is first, and its audit is running on one replica: pb's commit goes
    # to the other
    await asyncio.sleep(0.15)
    return Output(updates={"b": "good" if ctx.feedback else "bad"})


@agent("agg", reads=("a", "b"), triggers=(when_all("a", "b"),))
async def agg(ctx: Context) -> Output:
    return Output(updates={"report": f"a={ctx.board['a']} b={ctx.board['b']}"})


async def slow_check(view: Mapping[str, Any]) -> bool | str:
    if view.get("b") == "bad":
        await asyncio.sleep(0.05)  # fails while pa's commit is still being audited
        return "b is bad"
    await asyncio.sleep(0.4)  # a slow, semantic check
    return True


app = App(
    board=Pair,
    agents=[pa, pb, agg],
    start=["pa", "pb"],
    audits=[Audit("b_ok", ("a", "b"), slow_check)],
    done=lambda b: b.get("report") is not None,
    done_reads=["report"],
    limits=Limits(activation_timeout_s=30),
)


class Fan(BaseModel):
    a: Annotated[str | None, Key("ra")] = None
    b: Annotated[str | None, Key("rb")] = None
    report: Annotated[str | None, Key("agg")] = None


@agent("ra")
async def ra(ctx: Context) -> Output:
    return Output(updates={"a": "x"})


@agent("rb")
async def rb(ctx: Context) -> Output:
    await asyncio.sleep(0.05)  # ra's commit first, likely taken by the other replica
    return Output(updates={"b": "y"})


@agent("agg", reads=("a", "b"), triggers=(when_all("a", "b"),))
async def join(ctx: Context) -> Output:
    return Output(updates={"report": f"{ctx.board['a']}+{ctx.board['b']}"})


async def passes_slowly(view: Mapping[str, Any]) -> bool:
    await asyncio.sleep(0.3)
    return True


join_app = App(
    board=Fan,
    agents=[ra, rb, join],
    start=["ra", "rb"],
    audits=[Audit("slow", ("a", "b"), passes_slowly)],
    done=lambda b: b.get("report") is not None,
    done_reads=["report"],
    limits=Limits(activation_timeout_s=30),
)
"""A fan-out and a join; the branches' commits are audited slowly, so both replicas
read the board for routing after both branches committed."""
