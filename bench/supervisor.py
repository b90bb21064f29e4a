"""The supervisor's validated path, with the supervisor in its own OS process.

  raw commit script called sequentially (one round trip at a time): the reference
  validated proposals/s through one supervisor process, 100 boards, submitted by a
      separate agent process
  handoff latency: agent A submits (with a handoff to B) -> supervisor validates and
      commits -> B's activation received, p50/p99, sequential

The Redis server runs with AOF (appendfsync everysec), as a deployment would.
Run: python -m bench.supervisor
"""

from __future__ import annotations

import asyncio
import datetime
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

from blackboard.agents import Context, Output, agent
from pydantic import BaseModel

from bench._server import machine, percentile, redis_server, target
from blackboard import App, BoardStore, Key, Limits, Proposal, Settings
from blackboard.keys import GlobalKeys
from blackboard.queues import submit
from blackboard.records import Handoff, Submission


class Board(BaseModel):
    x: Annotated[int, Key("a")] = 0
    y: Annotated[int, Key("b")] = 0


@agent("a", handoffs=["b"])
async def agent_a(ctx: Context) -> Output:
    return Output()


@agent("b")
async def agent_b(ctx: Context) -> Output:
    return Output()


app = App(
    board=Board,
    agents=[agent_a, agent_b],
    limits=Limits(max_activations=10_000_000, activation_timeout_s=600),
)

BOARDS = 100
SENT = 100
"""Submissions per pipeline the load generator sends."""


def spawn_supervisor(
    url: str, wrapper: Sequence[str] = (), stderr: int | None = None, *, fast_io: bool = True
) -> subprocess.Popen[bytes]:
    """A supervisor process for :data:`app` on ``url``; ``wrapper``: a command that runs
    it (valgrind, say); ``fast_io``: its Redis I/O (``Settings.fast_io``)."""
    root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "BLACKBOARD_REDIS_URL": url,
        "BLACKBOARD_FAST_IO": "1" if fast_io else "0",
        "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    return subprocess.Popen(
        [
            *wrapper,
            sys.executable,
            "-m",
            "blackboard",
            "supervisor",
            "--app",
            "bench.supervisor:app",
            "--replace-declaration",
        ],
        env=env,
        stderr=stderr,
    )


Call = tuple[list[str], list[Any]]
"""A commit script call: its KEYS and ARGV."""


async def recorded_commits(
    store: BoardStore, commits: Iterable[tuple[str, Proposal]]
) -> list[Call]:
    """The commit script's calls for ``commits`` (board, proposal), built by the library
    as for a real commit, recorded instead of sent: what the raw figures replay."""
    script = store.committer.script
    calls: list[Call] = []
    versions: Counter[str] = Counter()

    async def record(keys: list[str], args: list[Any]) -> list[Any]:
        calls.append((keys, args))
        return ["ok", versions[keys[0]], 0, "x"]

    store.committer.script = record  # type: ignore[assignment]
    try:
        for board, proposal in commits:
            versions[store.keys(board).meta] += 1
            await store.commit(board, proposal)
    finally:
        store.committer.script = script
    return calls


async def pipelined(
    store: BoardStore, sha: str, calls: list[Call], width: int, took: list[float] | None = None
) -> list[Any]:
    """Replay ``calls`` of the script ``sha``, ``width`` per pipeline; the last replies.
    ``took``: each pipeline's round trip (seconds) is appended to it."""
    replies: list[Any] = []
    for i in range(0, len(calls), width):
        started = time.perf_counter()
        pipe = store.redis.pipeline(transaction=False)
        for keys, args in calls[i : i + width]:
            pipe.evalsha(sha, len(keys), *keys, *args)
        replies = await pipe.execute()
        if took is not None:
            took.append(time.perf_counter() - started)
    return replies


async def raw_sequential(store: BoardStore, n: int) -> float:
    await store.create("raw", app.schema)
    recorded = await recorded_commits(
        store,
        (
            ("raw", Proposal.updates("a", i, {"x": i + 1}, proposal_id=uuid.uuid4().hex))
            for i in range(n)
        ),
    )
    script = store.committer.script
    t0 = time.perf_counter()
    for keys, args in recorded:
        await script(keys=keys, args=args)
    rate = n / (time.perf_counter() - t0)
    print(f"  raw commit script, sequential      {rate:>9,.0f} commits/s")
    return rate


async def wait_outcomes(store: BoardStore, boards: list[str], each: int, timeout: float) -> None:
    """Until every board has ``each`` outcomes. The wait must not steal the cores it
    measures, nor add to the time measured: it blocks (XREAD) until the last board
    submitted to logs its last commit (its proposals came after the others', so it
    finishes last, near enough), then counts every board's outcomes in one round trip;
    any not done yet are waited for the same way. A board whose last proposal was
    refused logs no commit: the block ends after 50 ms and the count finds it done."""
    deadline = time.monotonic() + timeout
    pending = list(boards)
    while pending:
        await store.redis.xread({store.keys(pending[-1]).log: f"{each - 1}-0"}, block=50)
        pipe = store.redis.pipeline(transaction=False)
        for b in pending:
            pipe.hlen(store.keys(b).results)
        counts = await pipe.execute()
        pending = [b for b, n in zip(pending, counts, strict=True) if n < each]
        if pending and time.monotonic() > deadline:
            raise SystemExit("supervisor did not finish in time")


async def throughput(
    store: BoardStore, boards: int, per_board: int, *, tag: str = "t"
) -> tuple[float, int]:
    """Validated proposals/s through the running supervisor(s): submissions for
    ``boards`` boards are appended :data:`SENT` per pipeline, then their outcomes
    awaited. Returns the rate and how many proposals committed."""
    ids = [f"{tag}-{b}" for b in range(boards)]
    for b in ids:
        await store.create(b, app.schema)
    stream = GlobalKeys(store.settings.key_prefix).submissions("a", 0)
    # Serialised before the clock starts, as the raw figures' script calls are built
    # before theirs: what is timed is sending them and the supervisor's work.
    subs = [
        Submission(
            kind="proposal",
            board_id=b,
            author="a",
            base=i,
            patch=[{"op": "replace", "path": "/x", "value": i + 1}],
        ).model_dump_json()
        for i in range(per_board)
        for b in ids
    ]
    t0 = time.perf_counter()
    # Sent as agents would, a pipeline of SENT at a time (the raw ceiling's width), not
    # as one pipeline of thousands that the supervisor would wait for in full.
    for i in range(0, len(subs), SENT):
        pipe = store.redis.pipeline(transaction=False)
        for s in subs[i : i + SENT]:
            pipe.xadd(stream, {"s": s})
        await pipe.execute()
    await wait_outcomes(store, ids, per_board, timeout=600)
    rate = len(subs) / (time.perf_counter() - t0)
    return rate, sum([(await store.version(b)) for b in ids])


async def handoff_latency(store: BoardStore, n: int) -> tuple[float, float]:
    await store.create("h", app.schema)
    keys = GlobalKeys(store.settings.key_prefix)
    queue_b = keys.queue("b")
    await store.redis.xgroup_create(queue_b, "lat", id="$", mkstream=True)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        await submit(
            store.redis,
            keys.prefix,
            Submission(
                kind="proposal",
                board_id="h",
                author="a",
                base=i,
                patch=[{"op": "replace", "path": "/x", "value": i + 1}],
                handoff=Handoff(to="b", reason="go"),
            ),
        )
        reply = await store.redis.xreadgroup("lat", "me", {queue_b: ">"}, count=1, block=5000)
        samples.append(time.perf_counter() - t0)
        assert reply, "no activation received"
        await store.redis.xack(queue_b, "lat", reply[0][1][0][0])
    samples = samples[n // 10 :]  # warm-up
    p50, p99 = percentile(samples, 50) * 1000, percentile(samples, 99) * 1000
    print(
        f"  handoff latency (submit -> commit -> next activation received): "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )
    return p50, p99


async def main() -> None:
    print(f"bench/supervisor.py  {datetime.date.today()}  {machine()}")
    with redis_server("--appendonly", "yes", "--appendfsync", "everysec") as url:
        store = BoardStore.from_url(url, Settings(redis_url=url))
        from blackboard.supervisor import Supervisor

        await Supervisor(app, store).publish(replace=True)
        raw = await raw_sequential(store, 3000)
        proc = spawn_supervisor(url)
        try:
            p50, p99 = await handoff_latency(store, 1000)
            rate, committed = await throughput(store, BOARDS, per_board=30)
            print(
                f"  validated proposals through one supervisor, {BOARDS} boards: "
                f"{rate:,.0f}/s ({committed:,} committed of {BOARDS * 30:,})"
            )
        finally:
            proc.terminate()
            proc.wait(30)
        await store.close()
    target("validated_vs_raw_sequential", rate / raw, ">=", 0.5)
    target("handoff_p50_ms", p50, "<=", 2)
    target("handoff_p99_ms", p99, "<=", 10)


if __name__ == "__main__":
    asyncio.run(main())
