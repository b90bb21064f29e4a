"""Where a durable step's time goes: the 4-step chain (bench/workflows.py), supervisor and
agents in this process, on a private redis-server, under cProfile. Prints the time
spent in each part of the code (own time of its functions, so the parts add up to the
whole) per step, and the functions that cost most.

Run: python -m bench.profile [--runs N] [--plain] [--fan] (``--plain``: Settings.fast_io
off; ``--fan``: the 8-way fan-out and its join instead of the chain).
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import time
import uuid
from collections import defaultdict
from typing import Any

from blackboard.supervisor import Deployment

from bench._server import redis_server
from bench.workflows import FAN, chain, fan
from blackboard import BoardStore, Settings

PARTS = (  # the first that matches a function's file names its part
    ("blackboard/codec", "codec (JSON)"),
    ("blackboard/connection", "connection (Pipeliner)"),
    ("blackboard/store", "store (commit protocol)"),
    ("blackboard/patch", "store (commit protocol)"),
    ("blackboard/schema", "schema validation"),
    ("blackboard/supervisor", "supervisor"),
    ("supervisor/", "supervisor"),
    ("blackboard/agents", "agents runtime"),
    ("agents/", "agents runtime"),
    ("blackboard/", "blackboard (other)"),
    ("bench/", "the workflow's agents"),
    ("pydantic", "pydantic"),
    ("jsonpatch", "jsonpatch"),
    ("jsonpointer", "jsonpatch"),
    ("redis/", "redis-py"),
    ("hiredis", "redis-py"),
    ("asyncio", "asyncio"),
    ("selectors", "asyncio"),
    ("socket", "asyncio"),
)


async def run(url: str, app: Any, runs: int, fast_io: bool) -> tuple[float, cProfile.Profile]:
    store = BoardStore.from_url(url, Settings(redis_url=url, fast_io=fast_io))
    profile = cProfile.Profile()
    async with Deployment(app, store) as d:
        boards = [f"p-{uuid.uuid4().hex[:6]}-{r}" for r in range(runs + 5)]
        for board in boards:
            await store.create(board, app.schema, {"payload": "x" * 16})
        for board in boards[:5]:  # warm up: imports, caches, scripts loaded
            await d.supervisor.activate_start(board)
            await d.settle(board, 60)
        started = time.perf_counter()
        profile.enable()
        for board in boards[5:]:
            await d.supervisor.activate_start(board)
            await d.settle(board, 60)
        profile.disable()
        spent = time.perf_counter() - started
    await store.close()
    return spent, profile


def part(filename: str) -> str:
    for fragment, name in PARTS:
        if fragment in filename:
            return name
    return "builtins and other" if filename.startswith("~") else "other Python"


def report(spent: float, profile: cProfile.Profile, runs: int, steps_per_run: int) -> None:
    stats = pstats.Stats(profile)
    own: dict[str, float] = defaultdict(float)
    rows = []
    for (filename, line, function), (_, calls, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        own[part(filename)] += tottime
        rows.append((tottime, calls, f"{filename.split('site-packages/')[-1]}:{line}({function})"))
    steps = runs * steps_per_run
    total = sum(own.values())
    print(f"{spent / steps * 1e6:.0f} us per step wall, profiled ({runs} runs of {steps_per_run})")
    print(f"{'part':<28} {'us/step':>8} {'share':>6}")
    for name, seconds in sorted(own.items(), key=lambda kv: -kv[1]):
        print(f"{name:<28} {seconds / steps * 1e6:8.1f} {seconds / total:6.1%}")
    print("\nfunctions by own time (us per step, calls per step):")
    for tottime, calls, where in sorted(rows, reverse=True)[:30]:
        print(f"{tottime / steps * 1e6:8.1f} {calls / steps:7.1f}  {where}")


def main() -> None:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 200
    app, steps = (fan, FAN + 1) if "--fan" in sys.argv else (chain, 4)
    with redis_server("--appendonly", "yes", "--appendfsync", "everysec") as url:
        spent, profile = asyncio.run(run(url, app, runs, "--plain" not in sys.argv))
    report(spent, profile, runs, steps)


if __name__ == "__main__":
    main()
