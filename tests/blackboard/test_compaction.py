"""Compacting a live board's history below a version (``BoardStore.compact``), on both
backends: what time travel still reaches afterwards, and what it refuses."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blackboard import BoardSchema, BoardStore, HistoryCompacted, Proposal, ValidationFailed
from blackboard.errors import BoardNotFound
from blackboard.lifecycle import export_board
from tests.blackboard.test_history import fill


async def snapshots(store: BoardStore, board: str) -> list[int]:
    return [int(v) for v in await store.redis.zrange(store.keys(board).snapshot_index, 0, -1)]


async def test_compact_keeps_every_version_from_the_snapshot_on(
    store: BoardStore, board: str
) -> None:
    states = await fill(store, board, 40)
    snaps = await snapshots(store, board)
    assert len(snaps) >= 4, snaps  # the test settings' small floor takes several
    keys = store.keys(board)
    before = {
        "log": await store.redis.xlen(keys.log),
        "snaps": await store.redis.hlen(keys.snapshots),
        "history": await store.history(board),
        "diffs": {v: await store.diff(board, v, 40) for v in range(41)},
    }
    below = snaps[3] - 1  # before the 4th snapshot: compaction stops at the 3rd
    assert await store.compact(board, below) == snaps[2]
    s = snaps[2]

    for v in range(s, 41):
        assert (await store.read(board, at=v)).data == states[v], v
        assert await store.read_key(board, "notes", at=v) == states[v]["notes"]
    for v in range(s, 41, 5):
        assert await store.diff(board, v, 40) == before["diffs"][v]
    assert await store.history(board) == [e for e in before["history"] if e.version >= s]
    assert await store.history(board, start=1, end=s) == [before["history"][s - 1]]
    assert await store.redis.xlen(keys.log) == before["log"] - (s - 1)
    assert await store.redis.hlen(keys.snapshots) == before["snaps"] - 2
    assert await snapshots(store, board) == snaps[2:]
    assert await store.redis.hget(keys.meta, "history_from") == str(s)


async def test_versions_below_the_compacted_history_raise_a_typed_error(
    store: BoardStore, board: str
) -> None:
    await fill(store, board, 40)
    s = await store.compact(board, 40)
    assert s > 0
    message = rf"board 'loan-1'\'s history before v{s} was compacted; versions {s}\.\.40"
    for read in (
        store.read(board, at=s - 1),
        store.read(board, at=0),
        store.read_key(board, "notes", at=s - 1),
        store.diff(board, 0, 40),
        store.history(board, start=1, end=s - 1),
    ):
        with pytest.raises(HistoryCompacted, match=message) as caught:
            await read
        assert (caught.value.history_from, caught.value.current) == (s, 40)
    with pytest.raises(HistoryCompacted):
        await store.rollback(board, to=s - 1, author="human:ann")
    assert await store.version(board) == 40  # the refused rollback wrote nothing
    with pytest.raises(ValidationFailed, match=r"versions 0\.\.40; version 41 does not exist"):
        await store.read(board, at=41)  # the range error is still the range error
    with pytest.raises(ValidationFailed, match="was compacted, and an export"):
        await export_board(store, board)


async def test_commits_and_rollbacks_carry_on_after_compaction(
    store: BoardStore, board: str
) -> None:
    states = await fill(store, board, 30)
    s = await store.compact(board, 30)
    await store.commit(board, Proposal.updates("risk", 30, {"credit_score": 777}))
    assert (await store.read(board, at=31)).data["credit_score"] == 777
    result = await store.rollback(board, to=s, author="human:ann")
    assert (await store.read(board)).data == states[s]
    assert (await store.read(board, at=result.version)).data == states[s]
    assert [e.version for e in await store.history(board)] == list(range(s, 33))


async def test_compact_is_idempotent_and_never_moves_back(store: BoardStore, board: str) -> None:
    await fill(store, board, 40)
    s = await store.compact(board, 40)
    keys = store.keys(board)
    sizes = (await store.redis.xlen(keys.log), await store.redis.hlen(keys.snapshots))
    assert await store.compact(board, 40) == s
    assert await store.compact(board, 0) == s  # a lower `below` drops nothing more
    assert (await store.redis.xlen(keys.log), await store.redis.hlen(keys.snapshots)) == sizes
    assert await store.compact(board, 0) == s


async def test_compact_refuses_versions_the_board_does_not_have(
    store: BoardStore, board: str
) -> None:
    await fill(store, board, 3)
    for below in (-1, 4):
        with pytest.raises(ValidationFailed, match=rf"versions 0\.\.3; version {below} does not"):
            await store.compact(board, below)
    assert await store.redis.hget(store.keys(board).meta, "history_from") is None
    assert await store.compact(board, 0) == 0  # version 0's snapshot: nothing to drop
    assert await store.redis.xlen(store.keys(board).log) == 3
    assert (await store.read(board, at=0)).version == 0
    with pytest.raises(BoardNotFound):
        await store.compact("no-such-board", 0)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cuts=st.lists(st.integers(min_value=0, max_value=25), min_size=1, max_size=3))
async def test_any_compactions_keep_exactly_the_versions_from_history_from(
    store: BoardStore, loan_schema: BoardSchema, cuts: list[int]
) -> None:
    board = f"loan-{uuid.uuid4().hex[:8]}"
    await store.create(board, loan_schema)
    states = await fill(store, board, 25)
    snaps = await snapshots(store, board)
    for below in cuts:
        since = await store.compact(board, below)
    assert since == max(v for v in snaps if v <= max(cuts))
    for v in range(26):
        if v < since:
            with pytest.raises(HistoryCompacted):
                await store.read(board, at=v)
        else:
            assert (await store.read(board, at=v)).data == states[v]


async def test_keep_compliant_never_drops_the_audit_rollback_target(
    store: BoardStore, board: str
) -> None:
    states = await fill(store, board, 40)
    snaps = await snapshots(store, board)
    compliant = snaps[2] + 1  # as the supervisor records it once audits passed there
    await store.redis.hset(store.keys(board).meta, "compliant", compliant)
    since = await store.compact(board, 40, keep_compliant=True)
    assert since == snaps[2]
    assert (await store.read(board, at=compliant)).data == states[compliant]
    await store.rollback(board, to=compliant, author="supervisor")
    assert (await store.read(board)).data == states[compliant]
    assert await store.compact(board, 40) > since  # without it: the newest snapshot
