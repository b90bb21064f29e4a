"""An app for kill -9 aimed at work in hand: ``first`` works a second (time to kill the
instance holding it), then hands off to ``second``; the board is done when ``second``
wrote. Timeouts as in the examples (30 s) and the default claim_idle_ms (30 s): work
held by a killed process must be taken over well before them."""

from __future__ import annotations

import asyncio
from typing import Annotated

from blackboard.agents import Context, Handoff, Output, agent
from pydantic import BaseModel

from blackboard import App, Key, Limits


class Relay(BaseModel):
    first: Annotated[int | None, Key("first")] = None
    second: Annotated[int | None, Key("second")] = None


@agent("first", handoffs=("second",))
async def first(ctx: Context) -> Output:
    await asyncio.sleep(1.0)  # a model call, during which the process may be killed
    return Output(updates={"first": 1}, handoff=Handoff(to="second"))


@agent("second", reads=("first",))
async def second(ctx: Context) -> Output:
    return Output(updates={"second": (ctx.board.get("first") or 0) + 1})


app = App(
    board=Relay,
    agents=[first, second],
    start=["first"],
    done=lambda b: b.get("second") is not None,
    done_reads=["second"],
    name="Aimed",
    limits=Limits(activation_timeout_s=30),
)
