"""Many writers at once: no lost update, conflicts only where keys overlap, no gaps or
duplicates in the version sequence, and exactly-once effect per proposal id."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel

from blackboard import BoardSchema, BoardStore, ConflictError, Key, Proposal, connect

WRITER = Path(__file__).with_name("_writer.py")


class Shared(BaseModel):  # the same declaration as _writer.py's
    counter: Annotated[int, Key("counter")] = 0
    notes_a: Annotated[list[str], Key("a")] = []
    notes_b: Annotated[list[str], Key("b")] = []


async def assert_log_is_gapless(store: BoardStore, board: str) -> None:
    version = await store.version(board)
    assert [e.version for e in await store.history(board)] == list(range(1, version + 1))


async def increment(store: BoardStore, board: str, times: int) -> int:
    conflicts = 0
    for _ in range(times):
        while True:
            state = await store.read(board)
            try:
                await store.commit(
                    board,
                    Proposal.updates(
                        "counter", state.version, {"counter": state.data["counter"] + 1}
                    ),
                )
                break
            except ConflictError:
                conflicts += 1
    return conflicts


async def test_overlapping_read_modify_write_loses_no_update(store: BoardStore) -> None:
    await store.create("shared", BoardSchema.from_model(Shared))
    conflicts = await asyncio.gather(*(increment(store, "shared", 15) for _ in range(8)))
    assert await store.read_key("shared", "counter") == 120
    assert await store.version("shared") == 120
    assert sum(conflicts) > 0  # they did overlap, and each overlap was caught
    await assert_log_is_gapless(store, "shared")


async def test_disjoint_writers_never_conflict(store: BoardStore) -> None:
    """Writers of different keys commit concurrently from the same base: none conflicts,
    even when the base is stale by the time the script runs."""
    await store.create("shared", BoardSchema.from_model(Shared))
    versions: list[int] = []
    for round_ in range(20):
        base = await store.version("shared")
        results = await asyncio.gather(
            *(
                store.commit(
                    "shared", Proposal.updates(name, base, {f"notes_{name}": [str(round_)]})
                )
                for name in ("a", "b")
            )
        )
        versions += [r.version for r in results]
    assert sorted(versions) == list(range(1, 41))
    await assert_log_is_gapless(store, "shared")


async def test_same_proposal_three_times_commits_once(store: BoardStore, board: str) -> None:
    proposal = Proposal.updates("risk", 0, {"credit_score": 640}, proposal_id="once")
    first = await store.commit(board, proposal)
    await store.commit(board, Proposal.updates("docs", 1, {"loan_amount": 9.0}))
    second = await store.commit(board, proposal)
    third = await store.commit(board, proposal)
    assert (first.version, first.duplicate) == (1, False)
    assert [(r.version, r.duplicate) for r in (second, third)] == [(1, True), (1, True)]
    assert await store.version(board) == 2
    assert [e.proposal_id for e in await store.history(board)].count("once") == 1


async def test_same_proposal_concurrently_commits_once(store: BoardStore, board: str) -> None:
    proposal = Proposal(
        author="docs",
        base=0,
        proposal_id="dup-append",
        patch=[{"op": "add", "path": "/notes/-", "value": "only once"}],
    )
    results = await asyncio.gather(*(store.commit(board, proposal) for _ in range(3)))
    assert sorted(r.duplicate for r in results) == [False, True, True]
    assert {r.version for r in results} == {1}
    assert await store.read_key(board, "notes") == ["only once"]
    assert await store.version(board) == 1


def run_writers(url: str, board: str, specs: list[tuple[str, int, str]]) -> list[dict]:
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), url, board, mode, str(n), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode, n, name in specs
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out))
    return outputs


@pytest.mark.real_redis
@pytest.mark.slow
async def test_os_processes_overlapping_and_disjoint(redis_server) -> None:  # type: ignore[no-untyped-def]
    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client)
    await store.create("procs", BoardSchema.from_model(Shared))
    results = await asyncio.to_thread(
        run_writers,
        redis_server.url,
        "procs",
        [
            ("counter", 25, "c1"),
            ("counter", 25, "c2"),
            ("counter", 25, "c3"),
            ("disjoint", 25, "a"),
            ("disjoint", 25, "b"),
        ],
    )
    total = 5 * 25
    assert await store.read_key("procs", "counter") == 75  # no lost update across processes
    assert await store.version("procs") == total
    versions = sorted(v for r in results for v in r["committed"])
    assert versions == list(range(1, total + 1))  # no gap, no duplicate
    assert results[3]["conflicts"] == results[4]["conflicts"] == 0  # disjoint never conflict
    await assert_log_is_gapless(store, "procs")
    authors = [e.author for e in await store.history("procs")]
    assert (authors.count("counter"), authors.count("a"), authors.count("b")) == (75, 25, 25)
    await store.close()
