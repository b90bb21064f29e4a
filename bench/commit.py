"""Cost of a commit, on a private real redis-server, all figures from one run.

  (a) the raw commit script in a loop with precomputed arguments (the ceiling)
  (b) the library's full commit path (build proposal, validate, one script call)
  commit of one small key on a 1 KB board vs a 10 MB board
  read-at-version far from a snapshot vs at a snapshot
  Redis memory per commit, amortised with snapshots, vs patch bytes

Run: python -m bench.commit   (prints figures, then one TARGET line per target)
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import BaseModel

from bench._server import machine, percentile, redis_server, target
from blackboard import BoardSchema, BoardStore, Key, Proposal, Settings


class Board(BaseModel):
    score: Annotated[int, Key("agent")] = 0
    summary: Annotated[str, Key("agent")] = ""
    blobs: Annotated[dict[str, str], Key("loader")] = {}


SCHEMA = BoardSchema.from_model(Board)
Timed = Callable[[int], Awaitable[None]]


async def timed(fn: Timed, start: int, n: int) -> list[float]:
    samples = []
    for i in range(start, start + n):
        t0 = time.perf_counter()
        await fn(i)
        samples.append(time.perf_counter() - t0)
    return samples


def summary(name: str, samples: list[float]) -> dict[str, float]:
    row = {
        "per_s": len(samples) / sum(samples),
        "p50_us": percentile(samples, 50) * 1e6,
        "p99_us": percentile(samples, 99) * 1e6,
        "mean_us": sum(samples) / len(samples) * 1e6,
    }
    print(
        f"  {name:<34} {row['per_s']:>9,.0f}/s  p50 {row['p50_us']:7.1f} us  "
        f"p99 {row['p99_us']:7.1f} us"
    )
    return row


def ids() -> dict[str, str]:
    return {
        "proposal_id": uuid.uuid4().hex,
        "activation_id": uuid.uuid4().hex,
        "trace_id": uuid.uuid4().hex,
    }


Row = dict[str, float]
"""A summary's figures: per_s, p50_us, p99_us, mean_us."""


async def raw_vs_library(store: BoardStore, n: int, rounds: int) -> tuple[Row, Row]:
    """The raw commit script with the library's recorded arguments (a) and the
    library's commit path (b), one commit at a time, ``n`` each in ``rounds``
    interleaved blocks: their summaries."""
    await store.create("raw", SCHEMA)
    await store.create("lib", SCHEMA)
    # Record the exact script calls the library makes for n commits on board "raw"...
    script = store.committer.script
    recorded: list[tuple[list[str], list[Any]]] = []

    async def record(keys: list[str], args: list[Any]) -> list[Any]:
        recorded.append((keys, args))
        return ["ok", len(recorded), 0, "score"]

    store.committer.script = record  # type: ignore[assignment]
    for i in range(n * rounds):
        await store.commit("raw", Proposal.updates("agent", i, {"score": i}, **ids()))
    store.committer.script = script

    async def raw(i: int) -> None:
        keys, args = recorded[i]
        await script(keys=keys, args=args)

    async def library(i: int) -> None:
        await store.commit("lib", Proposal.updates("agent", i, {"score": i}, **ids()))

    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):  # interleaved blocks: both see the same machine noise
        a += await timed(raw, r * n, n)
        b += await timed(library, r * n, n)
    assert await store.version("raw") == await store.version("lib") == n * rounds
    print("commit throughput, sequential, 1 KB board:")
    ra = summary("(a) raw commit script (ceiling)", a)
    rb = summary("(b) library commit path", b)
    print(f"  ratio b/a = {rb['per_s'] / ra['per_s']:.2f}")
    return ra, rb


async def big_vs_small(store: BoardStore, n: int, rounds: int) -> float:
    chunk = "x" * (512 << 10)
    await store.create("small", SCHEMA, initial={"blobs": {"a": "y" * 900}})
    await store.create("big", SCHEMA, initial={"blobs": {}})
    big_version = 0
    for i in range(20):  # 20 x 512 KB = 10 MB, written through the commit path
        await store.commit(
            "big",
            Proposal(
                author="loader",
                base=big_version,
                patch=[{"op": "add", "path": f"/blobs/b{i}", "value": chunk}],
            ),
        )
        big_version += 1
    sizes = {b: (await store.info(b)).bytes for b in ("small", "big")}

    def writer(board: str, offset: int) -> Timed:
        async def commit(i: int) -> None:
            await store.commit(
                board, Proposal.updates("agent", offset + i, {"summary": f"step {i}"}, **ids())
            )

        return commit

    small: list[float] = []
    big: list[float] = []
    for r in range(rounds):
        small += await timed(writer("small", 0), r * n, n)
        big += await timed(writer("big", big_version), r * n, n)
    print(f"one small key committed, board of {sizes['small']:,} B vs {sizes['big']:,} B:")
    rs = summary("1 KB board", small)
    rl = summary("10 MB board", big)
    ratio = rl["mean_us"] / rs["mean_us"]
    print(f"  ratio 10 MB / 1 KB (mean commit time) = {ratio:.2f}")
    return ratio


async def read_at_version(store: BoardStore, n: int) -> None:
    await store.create("hist", SCHEMA, initial={"blobs": {"a": "z" * 4000}})
    for i in range(n):
        await store.commit("hist", Proposal.updates("agent", i, {"score": i}, **ids()))
    keys = store.keys("hist")
    snaps = [int(v) for v in await store.redis.zrange(keys.snapshot_index, 0, -1)]
    gaps = [(snaps[i + 1] - snaps[i], snaps[i]) for i in range(len(snaps) - 1)]
    width, start = max(gaps)
    far, near = start + width - 1, start

    async def read(v: int) -> list[float]:
        samples = []
        for _ in range(30):
            t0 = time.perf_counter()
            await store.read("hist", at=v)
            samples.append(time.perf_counter() - t0)
        return samples

    print(
        f"read-at-version, {n:,} versions, {len(snaps)} snapshots (largest gap {width} versions):"
    )
    summary(f"at a snapshot (v{near})", await read(near))
    summary(f"farthest from one (v{far}, {far - near} patches)", await read(far))
    summary("current version", await read(n))


async def memory_per_commit(store: BoardStore, n: int) -> tuple[float, float]:
    await store.create("mem", SCHEMA)
    keys = store.keys("mem")

    async def used() -> int:
        total = 0
        for key in keys.all():
            total += await store.redis.memory_usage(key, samples=0) or 0
        return total

    before = await used()
    patch_bytes = 0
    for i in range(n):
        text = f"step {i}: " + "applicant income verified against payslips " * 2
        proposal = Proposal.updates("agent", i, {"summary": text}, **ids())
        patch_bytes += len(str(proposal.patch).encode())  # ~ the JSON's size
        await store.commit("mem", proposal)
    per_commit = (await used() - before) / n
    avg_patch = patch_bytes / n
    print(
        f"Redis memory per commit ({n:,} commits of a ~{avg_patch:.0f} B patch, "
        f"with three 32-char ids each): {per_commit:.0f} B "
        f"(= {per_commit / avg_patch:.2f} x patch bytes)"
    )
    return per_commit, avg_patch


async def main() -> None:
    print(f"bench/commit.py  {datetime.date.today()}  {machine()}")
    with redis_server() as url:
        # One key holds the 10 MB payload: raise the per-value limit for this bench.
        store = BoardStore.from_url(url, Settings(redis_url=url, max_value_bytes=16 << 20))
        raw, library = await raw_vs_library(store, n=1000, rounds=5)
        ratio = library["per_s"] / raw["per_s"]
        size_ratio = await big_vs_small(store, n=500, rounds=4)
        await read_at_version(store, n=20_000)
        per_commit, patch = await memory_per_commit(store, n=20_000)
        await store.close()
    target("commit_path_vs_raw_script", ratio, ">=", 0.5)
    target("commit_10MB_vs_1KB_board", size_ratio, "<=", 1.5)
    target("memory_per_commit_bytes", per_commit, "<=", round(3 * patch + 200))


if __name__ == "__main__":
    asyncio.run(main())
