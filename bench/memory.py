"""Bounded memory under a steady load (issue 23).

  memory: Redis ``used_memory`` over PROPOSALS proposals on BOARDS boards that finish
      and are archived as they go (the supervisor's retention: streams trimmed behind
      what is pending, finished boards exported then removed), sampled every
      SAMPLE proposals. TARGET: the last half of the run grows by <= 5%.
  reuse: the commit rate on boards that already hold many commits (their proposal
      records grown) against fresh boards. TARGET: within 10%.

The archive step here is a stand-in for ``blackboard.lifecycle.archive_board`` (export
the log as JSON lines, then delete the board). Run: python -m bench.memory [--quick]
[--control] (--control: the memory run again with the streams left untrimmed).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from blackboard.agents import Context, Output, agent
from blackboard.supervisor import Supervisor
from blackboard.supervisor.retention import ArchivePolicy
from pydantic import BaseModel

from bench._server import machine, note, redis_server, target
from blackboard import App, BoardStore, Key, Limits
from blackboard.keys import GlobalKeys
from blackboard.queues import submission_stream
from blackboard.records import Submission

QUICK = "--quick" in sys.argv
PROPOSALS = 20_000 if QUICK else 200_000
BOARDS = 100 if QUICK else 1_000
SAMPLE = 2_000 if QUICK else 10_000
PER_BOARD = PROPOSALS // BOARDS
SENT = 200
"""Submissions per pipeline."""


class Board(BaseModel):
    x: Annotated[int, Key("a")] = 0


@agent("a")
async def agent_a(ctx: Context) -> Output:
    return Output()


def make_app(per_board: int) -> App:
    return App(
        board=Board,
        agents=[agent_a],
        done=lambda b: b.get("x") == per_board,
        done_reads=["x"],
        limits=Limits(max_activations=10_000_000, activation_timeout_s=600),
    )


async def archive(store: BoardStore, board_id: str, directory: Path) -> Path:
    """Export the board's log as JSON lines, then delete it."""
    path = directory / f"{board_id}.jsonl"
    entries = await store.history(board_id)
    path.write_text("".join(e.model_dump_json() + "\n" for e in entries))
    await store.delete(board_id)
    return path


async def send(store: BoardStore, boards: list[str], start: int, count: int) -> None:
    """``count`` proposals per board, from version ``start``, in pipelines."""
    prefix = store.settings.key_prefix
    subs = [
        Submission(
            kind="proposal",
            board_id=b,
            author="a",
            base=start + i,
            patch=[{"op": "replace", "path": "/x", "value": start + i + 1}],
        )
        for i in range(count)
        for b in boards
    ]
    keys = GlobalKeys(prefix)
    for i in range(0, len(subs), SENT):
        pipe = store.redis.pipeline(transaction=False)  # in order: each on its base
        for s in subs[i : i + SENT]:
            pipe.xadd(submission_stream(keys, s), {"s": s.model_dump_json()})
        await pipe.execute()


async def wait_gone(store: BoardStore, boards: list[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while any([await store.redis.exists(store.keys(b).meta) for b in boards]):
        if time.monotonic() > deadline:
            raise SystemExit(f"boards not archived in {timeout:g} s")
        await asyncio.sleep(0.05)


async def wait_version(store: BoardStore, boards: list[str], version: int) -> None:
    deadline = time.monotonic() + 600
    while min([await store.version(b) for b in boards]) < version:
        if time.monotonic() > deadline:
            raise SystemExit("proposals not committed in time")
        await asyncio.sleep(0.01)


async def memory_run(url: str, out: Path, *, trim: bool = True) -> tuple[list[int], bool]:
    """used_memory every SAMPLE proposals; whether the last half grew by <= 5%. Without
    ``trim`` the streams are not trimmed (boards are still archived): the control."""
    app = make_app(PER_BOARD)
    store = BoardStore.from_url(url)
    sup = Supervisor(app, store)
    sup.retention.every_s = 0.2
    if not trim:
        sup.retention.streams = []
    sup.retention.policy = ArchivePolicy(out, after_s=0, per_round=1_000, archive=archive)
    stop = asyncio.Event()
    task = asyncio.create_task(sup.run(stop))
    samples: list[int] = []
    wave = max(1, SAMPLE // PER_BOARD)  # boards per sample
    try:
        for first in range(0, BOARDS, wave):
            boards = [f"m{b}" for b in range(first, min(first + wave, BOARDS))]
            for b in boards:
                await store.create(b, app.schema)
            await send(store, boards, 0, PER_BOARD)
            await wait_gone(store, boards)
            # sampled once the supervisor's trimming has caught up with this wave (its
            # schedule is a round every 0.2 s: a sample taken just before a round sees
            # up to a wave of trimmable entries, noise of ~20% around a flat line)
            await sup.retention.round()
            info = await store.redis.info("memory")
            samples.append(int(info["used_memory"]))
            done = (first + len(boards)) * PER_BOARD
            print(f"  {done:>8,} proposals  used_memory {samples[-1] / 1e6:8.2f} MB", flush=True)
    finally:
        stop.set()
        await task
        await store.close()
    mid = samples[len(samples) // 2 - 1]
    growth = (samples[-1] - mid) / mid
    note(
        f"used_memory every {SAMPLE:,} proposals{'' if trim else ', streams untrimmed'} (MB)",
        " ".join(f"{m / 1e6:.2f}" for m in samples),
    )
    if not trim:
        print(f"  without trimming: the last half grew {growth * 100:.1f}%")
        return samples, growth <= 0.05
    return samples, target("memory_last_half_growth", growth * 100, "<=", 5.0)


async def rate(store: BoardStore, boards: list[str], start: int, count: int) -> float:
    t0 = time.perf_counter()
    await send(store, boards, start, count)
    await wait_version(store, boards, start + count)
    return len(boards) * count / (time.perf_counter() - t0)


async def reuse_run(url: str) -> tuple[float, float, bool]:
    """Commit rate on fresh boards, then on the same boards grown by GROW commits each."""
    per, grow, n = (200, 2_000, 20) if QUICK else (500, 5_000, 50)
    app = make_app(10**9)
    store = BoardStore.from_url(url)
    sup = Supervisor(app, store)
    stop = asyncio.Event()
    task = asyncio.create_task(sup.run(stop))
    try:
        boards = [f"r{b}" for b in range(n)]
        for b in boards:
            await store.create(b, app.schema)
        fresh = await rate(store, boards, 0, per)
        await send(store, boards, per, grow)
        await wait_version(store, boards, per + grow)
        reused = await rate(store, boards, per + grow, per)
    finally:
        stop.set()
        await task
        await store.close()
    return fresh, reused, target("reused_vs_fresh_rate", reused / fresh, ">=", 0.9)


async def main() -> None:
    print(machine())
    with redis_server() as url, tempfile.TemporaryDirectory() as out:
        print(f"memory: {PROPOSALS:,} proposals on {BOARDS:,} boards, archived as they finish")
        await memory_run(url, Path(out))
    if "--control" in sys.argv:
        with redis_server() as url, tempfile.TemporaryDirectory() as out:
            print("control: the same, streams not trimmed")
            await memory_run(url, Path(out), trim=False)
    with redis_server() as url:
        fresh, reused, _ = await reuse_run(url)
        print(f"reuse: fresh {fresh:,.0f}/s, reused {reused:,.0f}/s ({reused / fresh:.2f})")
        note("commits/s on fresh / reused boards", f"{fresh:,.0f} / {reused:,.0f}")


def run() -> Any:
    return asyncio.run(main())


if __name__ == "__main__":
    run()
