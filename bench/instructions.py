"""Instructions per commit: the raw commit script vs the validated path, in Redis and
in the supervisor process.

Wall time on a shared 2-core VM swings by a third from one run to the next; the count
of instructions a process executes does not. redis-server runs under valgrind's
callgrind with counting switched on only around each measured part:

  raw commit script, pipelined across 50 boards (the ceiling of ``python -m bench``)
  the supervisor's commit-and-route script alone, the same way (the calls it plans)
  the whole validated path: a supervisor process consumes submissions for 50 boards
      (the stream, the script, the acknowledgement), everything Redis does for them
  the same path for 100 boards, counted in the supervisor process instead (under
      callgrind itself, against a redis-server that is not)

The Redis ratios bound what the throughput target can reach while Redis is the busier
side: at 2.0 or more, Redis alone keeps validated commits under half the ceiling. The
supervisor's count is its share of the same two cores.
Needs valgrind (apt-get install valgrind). Run: python -m bench.instructions
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from blackboard.supervisor import Supervisor

from bench import supervisor as sbench
from bench._server import machine, redis_server
from blackboard import BoardStore, Proposal, Settings
from blackboard.records import Submission

BOARDS, PER_BOARD = 50, 10


Count = Callable[[Callable[[], Awaitable[int]]], Awaitable[float]]


@contextmanager
def callgrind(
    workdir: str, start: Callable[[list[str]], subprocess.Popen[bytes]]
) -> Iterator[tuple[subprocess.Popen[bytes], Count]]:
    """A process run under callgrind, counting nothing until asked: ``start`` starts it
    given the command that wraps it. Yields the process and ``count(fn)``: the
    instructions it ran while ``fn`` did, divided by what ``fn`` returns."""
    out = os.path.join(workdir, "callgrind.out")
    proc = start(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    )

    def control(*args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(proc.pid)], check=True, capture_output=True)

    async def count(fn: Callable[[], Awaitable[int]]) -> float:
        control("--zero")
        control("--instr=on")
        n = await fn()
        control("--instr=off")
        before = set(glob.glob(out + "*"))
        control("--dump")
        deadline = time.monotonic() + 30
        while not (set(glob.glob(out + "*")) - before) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        (dump,) = set(glob.glob(out + "*")) - before
        await asyncio.sleep(0.2)  # written in full
        with open(dump) as f:
            totals = [line for line in f if line.startswith(("summary:", "totals:"))]
        return int(totals[-1].split()[1]) / n

    try:
        yield proc, count
    finally:
        proc.terminate()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def counted_server() -> Iterator[tuple[str, Count]]:
    """redis-server under :func:`callgrind`; yields its URL and ``count``."""
    workdir = tempfile.mkdtemp(prefix="bb-instr-")
    sock = os.path.join(workdir, "redis.sock")
    argv = [
        "redis-server",
        *("--port", "0", "--unixsocket", sock, "--save", "", "--dir", workdir),
        *("--appendonly", "yes", "--appendfsync", "everysec"),
        *("--auto-aof-rewrite-percentage", "0"),  # no rewrite (a fork) mid-count
    ]

    def start(wrapper: list[str]) -> subprocess.Popen[bytes]:
        quiet = subprocess.DEVNULL
        return subprocess.Popen([*wrapper, *argv], stdout=quiet, stderr=quiet)

    try:
        with callgrind(workdir, start) as (proc, count):
            deadline = time.monotonic() + 60
            while not os.path.exists(sock):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("redis-server did not start under valgrind")
                time.sleep(0.05)
            yield f"unix://{sock}", count
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def boards(store: BoardStore) -> list[str]:
    ids = [f"i{uuid.uuid4().hex[:6]}-{b}" for b in range(BOARDS)]
    for b in ids:
        await store.create(b, sbench.app.schema)
    await store.warm(dict.fromkeys(ids))
    return ids


def replay(store: BoardStore, sha: str, calls: list[sbench.Call]) -> Any:
    async def run() -> int:
        replies = await sbench.pipelined(store, sha, calls, BOARDS)
        assert replies[-1][0] in ("ok", "both"), replies[-1]
        return len(calls)

    return run


async def raw_calls(store: BoardStore) -> list[sbench.Call]:
    """The commit script's calls for BOARDS x PER_BOARD commits."""
    ids = await boards(store)
    commits = ((b, Proposal.updates("a", i, {"x": i + 1})) for i in range(PER_BOARD) for b in ids)
    return await sbench.recorded_commits(store, commits)


def submission(board: str, i: int) -> Submission:
    patch = [{"op": "replace", "path": "/x", "value": i + 1}]
    return Submission(kind="proposal", board_id=board, author="a", base=i, patch=patch)


async def routed_calls(store: BoardStore, sup: Supervisor) -> list[sbench.Call]:
    """The commit-and-route calls the supervisor plans for the same commits."""
    ids, calls = await boards(store), []
    for i in range(PER_BOARD):
        for b in ids:
            planned = await sup.fast.plan_routed(submission(b, i), "")
            assert planned is not None
            _, keys, args = planned.commands[-1][1]
            calls.append((keys, args))
    return calls


async def main() -> None:
    print(f"bench/instructions.py  {machine()}")
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("  skipped: needs valgrind (apt-get install valgrind)")
        return
    with counted_server() as (url, count):
        store = BoardStore.from_url(url, Settings(redis_url=url))
        sup = Supervisor(sbench.app, store)
        await sup.publish(replace=True)
        script = store.committer.script
        await store.redis.script_load(script.script)
        raw = await count(replay(store, script.sha, await raw_calls(store)))
        await store.redis.script_load(sup.router.commit_route_script.script)
        routed = await count(
            replay(store, sup.router.commit_route_script.sha, await routed_calls(store, sup))
        )
        proc = sbench.spawn_supervisor(url)
        try:
            await sbench.throughput(store, 5, 2, tag="warm")  # import, join, load
            whole = await count(lambda: _through(store))
        finally:
            proc.terminate()
            proc.wait(60)
        await store.close()
    supervisor = await supervisor_count()
    print(f"  raw commit script, pipelined              {raw:>9,.0f} instructions/commit")
    print(
        f"  commit-and-route script, pipelined        {routed:>9,.0f}   ({routed / raw:.2f} x raw)"
    )
    print(f"  validated path, all Redis work, 1 process {whole:>9,.0f}   ({whole / raw:.2f} x raw)")
    print(
        f"  validated path, the supervisor process    {supervisor:>9,.0f}"
        f"   ({supervisor / raw:.2f} x raw; instructions/proposal, 100 boards)"
    )


async def supervisor_count() -> float:
    """Instructions the supervisor process runs per validated proposal (under callgrind,
    against a redis-server of its own that is not)."""
    workdir = tempfile.mkdtemp(prefix="bb-instr-")
    try:
        with redis_server("--appendonly", "yes", "--appendfsync", "everysec") as url:
            store = BoardStore.from_url(url, Settings(redis_url=url))

            def start(wrapper: list[str]) -> subprocess.Popen[bytes]:
                return sbench.spawn_supervisor(url, wrapper, stderr=subprocess.DEVNULL)

            async def through() -> int:  # 100 boards, as the throughput ceiling's
                return (await sbench.throughput(store, 100, 20, tag=uuid.uuid4().hex[:6]))[1]

            with callgrind(workdir, start) as (_, count):
                await sbench.throughput(store, 5, 2, tag="warm")  # import, join, load
                counted = await count(through)
            await store.close()
        return counted
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _through(store: BoardStore) -> int:
    _, committed = await sbench.throughput(store, BOARDS, PER_BOARD, tag=uuid.uuid4().hex[:6])
    return committed


if __name__ == "__main__":
    asyncio.run(main())
