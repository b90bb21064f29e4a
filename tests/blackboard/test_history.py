"""Time travel, diffs, rollback and the snapshot policy, on both backends."""

from __future__ import annotations

import json

import jsonpatch
import pytest

from blackboard import BoardSchema, BoardStore, Proposal, ValidationFailed


async def fill(store: BoardStore, board: str, n: int) -> list[dict]:
    """n commits mixing whole-key and sub-path writes; returns the state at each version."""
    states = [(await store.read(board)).data]
    for i in range(n):
        v = i
        if i % 3 == 0:
            p = Proposal(
                author="docs",
                base=v,
                patch=[{"op": "add", "path": "/notes/-", "value": f"note {i}"}],
            )
        elif i % 3 == 1:
            p = Proposal.updates("risk", v, {"credit_score": 300 + i})
        else:
            p = Proposal(
                author="risk",
                base=v,
                patch=[{"op": "add", "path": f"/details/k{i % 7}", "value": i}],
            )
        await store.commit(board, p)
        states.append((await store.read(board)).data)
    return states


async def test_read_at_every_version(store: BoardStore, board: str) -> None:
    states = await fill(store, board, 40)
    for v, expected in enumerate(states):
        assert (await store.read(board, at=v)).data == expected, v
        assert await store.read_key(board, "notes", at=v) == expected["notes"]


async def test_read_at_missing_version(store: BoardStore, board: str) -> None:
    await fill(store, board, 2)
    with pytest.raises(ValidationFailed, match=r"versions 0\.\.2; version 3 does not exist"):
        await store.read(board, at=3)
    with pytest.raises(ValidationFailed):
        await store.read(board, at=-1)


async def test_diff_is_an_rfc6902_patch_between_versions(store: BoardStore, board: str) -> None:
    states = await fill(store, board, 12)
    for v1, v2 in [(0, 12), (5, 3), (7, 7), (2, 9)]:
        patch = await store.diff(board, v1, v2)
        assert jsonpatch.apply_patch(states[v1], patch) == states[v2]
    assert await store.diff(board, 4, 4) == []


async def test_rollback_is_a_new_commit_and_keeps_history(store: BoardStore, board: str) -> None:
    states = await fill(store, board, 9)
    result = await store.rollback(board, to=3, author="human:alice", reason="bad extraction")
    assert result.version == 10
    assert (await store.read(board)).data == states[3]
    entry = (await store.history(board, start=10))[0]
    assert (entry.kind, entry.author, entry.reason, entry.outcome) == (
        "rollback",
        "human:alice",
        "bad extraction",
        "restored:3",
    )
    for v, expected in enumerate(states):  # nothing rewritten
        assert (await store.read(board, at=v)).data == expected
    # Undo of the rollback returns the rolled-back content.
    undone = jsonpatch.apply_patch(states[3], entry.undo)
    assert undone == states[9]


async def test_rollback_to_current_content_is_a_recorded_noop(
    store: BoardStore, board: str
) -> None:
    await fill(store, board, 2)
    result = await store.rollback(board, to=2, author="supervisor")
    assert result.keys == []
    entry = (await store.history(board))[-1]
    assert (entry.kind, entry.patch, entry.outcome) == ("rollback", [], "no-op")


async def test_rollback_restores_unset_keys(store: BoardStore, board: str) -> None:
    await store.commit(
        board, Proposal(author="docs", base=0, patch=[{"op": "remove", "path": "/notes"}])
    )
    await store.rollback(board, to=0, author="supervisor")
    assert await store.read_key(board, "notes") == []
    await store.rollback(board, to=1, author="supervisor")
    assert "notes" not in (await store.read(board)).data


async def test_rollback_idempotent_by_proposal_id(store: BoardStore, board: str) -> None:
    await fill(store, board, 4)
    first = await store.rollback(board, to=1, author="supervisor", proposal_id="rb-1")
    again = await store.rollback(board, to=1, author="supervisor", proposal_id="rb-1")
    assert (again.version, again.duplicate) == (first.version, True)
    assert await store.version(board) == first.version


async def test_rollback_to_unknown_version(store: BoardStore, board: str) -> None:
    with pytest.raises(ValidationFailed, match="version 4 does not exist"):
        await store.rollback(board, to=4, author="supervisor")


async def test_snapshots_bound_read_cost_and_storage(
    store: BoardStore, board: str, loan_schema: BoardSchema
) -> None:
    """Between a version and the snapshot before it lie at most about a board's worth of
    patch bytes (or the floor), and snapshot count follows change volume, not versions."""
    await fill(store, board, 150)
    keys = store.keys(board)
    snaps = [int(v) for v in await store.redis.zrange(keys.snapshot_index, 0, -1)]
    entries = await store.redis.xrange(keys.log)
    sizes = {int(i.split("-")[0]): len(f["patch"]) + len(f["undo"]) for i, f in entries}
    board_bytes = (await store.info(board)).bytes
    floor = store.settings.snapshot_min_bytes
    largest = max(sizes.values())
    for v in range(1, 151):
        nearest = max(s for s in snaps if s <= v)
        between = sum(sizes[u] for u in range(nearest + 1, v + 1))
        assert between <= max(board_bytes, floor) + largest, (v, nearest, between)
    history_bytes = sum(sizes.values())
    assert len(snaps) - 1 <= history_bytes // floor + 1
    assert 0 in snaps and len(snaps) > 2


async def test_snapshot_content_matches_state(store: BoardStore, board: str) -> None:
    await fill(store, board, 60)
    keys = store.keys(board)
    for v in await store.redis.zrange(keys.snapshot_index, 0, -1):
        snap = json.loads(await store.redis.hget(keys.snapshots, v))
        assert snap == (await store.read(board, at=int(v))).data


async def test_rollback_keeps_the_keys_it_is_told_to_keep(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("docs", 0, {"loan_amount": 1.0}))
    await store.commit(board, Proposal.updates("risk", 0, {"credit_score": 700}))
    await store.commit(board, Proposal.updates("docs", 2, {"loan_amount": 2.0}))
    result = await store.rollback(board, to=1, author="human:x", keep=["loan_amount"])
    data = (await store.read(board)).data
    assert (data["loan_amount"], data["credit_score"]) == (2.0, None)  # kept, restored
    assert result.keys == ["credit_score"]
