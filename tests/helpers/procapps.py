"""Apps and helpers the real-process tests run in child processes."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Annotated

from blackboard.agents import Context, Output, agent
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
    asyncio.run(call_rate_limited(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
