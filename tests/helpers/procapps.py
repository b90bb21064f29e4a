"""Apps and helpers the real-process tests run in child processes."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Annotated, Any

from blackboard.agents import Context, Handoff, Output, agent
from blackboard.agents.tools import Tool, ToolRegistry
from pydantic import BaseModel

from blackboard import App, BoardStore, Key, Limits


class Job(BaseModel):
    result: Annotated[str | None, Key("slow")] = None


@agent("slow")
async def slow(ctx: Context) -> Output:
    await asyncio.sleep(1.0)  # a long model call, during which the process may die
    return Output(updates={"result": f"done by {ctx.activation_id}"})


kill_app = App(
    board=Job,
    agents=[slow],
    start=["slow"],
    done=lambda b: b.get("result") is not None,
    done_reads=["result"],
    limits=Limits(claim_idle_ms=300, activation_timeout_s=60),
)


class Relay(BaseModel):
    a: Annotated[int | None, Key("a")] = None
    b: Annotated[int | None, Key("b")] = None
    c: Annotated[int | None, Key("c")] = None


def _relay(name: str, reads: tuple[str, ...], to: str | None, pause: float) -> Any:
    @agent(name, reads=reads, handoffs=(to,) if to else ())
    async def run(ctx: Context) -> Output:
        await asyncio.sleep(pause)  # b: long enough for the process to be killed meanwhile
        seen = sum(ctx.board.get(k) or 0 for k in reads)
        return Output(updates={name: seen + 1}, handoff=Handoff(to=to) if to else None)

    return run


relay_app = App(
    board=Relay,
    agents=[_relay("a", (), "b", 0), _relay("b", ("a",), "c", 2.0), _relay("c", ("b",), None, 0)],
    start=["a"],
    name="Relay",
    limits=Limits(activation_timeout_s=60),
)


async def run_embedded(url: str, board_id: str) -> None:
    """An embedded deployment of relay_app that starts a board and runs until killed."""
    from blackboard.supervisor import Deployment

    async with Deployment(relay_app, BoardStore.from_url(url)) as d:
        await d.start(board_id)
        await asyncio.sleep(3600)


class Ping(BaseModel):
    n: int


async def call_rate_limited(url: str, calls: int, name: str) -> None:
    """Call a tool limited to 5 per 0.5 s; print the local times of the calls."""
    times: list[float] = []

    async def ping(p: Ping) -> Ping:
        times.append(time.time())
        return p

    registry = ToolRegistry([Tool("ping", ping, Ping, Ping, rate_limit=(5, 0.5))])
    store = BoardStore.from_url(url)
    tools = registry.bind(
        store.redis, store.settings.key_prefix, agent=name, board_id="r", activation_id=name
    )
    for n in range(calls):
        await tools.call("ping", {"n": n})
    await store.close()
    print(json.dumps(times))


if __name__ == "__main__":
    if sys.argv[1] == "embedded":
        asyncio.run(run_embedded(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(call_rate_limited(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
