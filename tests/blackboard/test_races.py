"""Races made deterministic: another commit is injected between a commit's reads and
its script (regressions found in review; both backends)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from blackboard import BoardStore, ConfigError, ConflictError, Proposal, ValidationFailed


def inject_before_script(store: BoardStore, action: Callable[[], Awaitable[Any]]) -> None:
    """Run ``action`` (another commit) right before the next commit script call."""
    script = store.committer.script
    fired = False

    async def wrapped(keys: list[str], args: list[Any]) -> Any:
        nonlocal fired
        if not fired:
            fired = True
            await action()
        return await script(keys=keys, args=args)

    store.committer.script = wrapped  # type: ignore[assignment]


async def test_written_but_unchanged_key_is_still_checked(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("risk", 0, {"details": {"a": 1}}))
    test_and_set = Proposal(
        author="risk",
        base=1,
        patch=[
            {"op": "test", "path": "/details/a", "value": 1},
            {"op": "replace", "path": "/details/a", "value": 1},  # details ends unchanged
            {"op": "add", "path": "/credit_score", "value": 700},
        ],
    )
    other = Proposal.updates("risk", 1, {"details": {"a": 5}})
    inject_before_script(store, lambda: store.commit(board, other))
    with pytest.raises(ConflictError) as err:
        await store.commit(board, test_and_set)
    assert err.value.changed == {"details": 2}
    state = await store.read(board)
    assert (state.version, state.data["details"], state.data["credit_score"]) == (2, {"a": 5}, None)


async def test_rollback_racing_a_commit_still_restores_the_version(
    store: BoardStore, board: str
) -> None:
    await store.commit(board, Proposal.updates("risk", 0, {"credit_score": 500}))
    await store.commit(board, Proposal.updates("docs", 1, {"loan_amount": 10.0}))
    racer = Proposal.updates("risk", 2, {"credit_score": 800})
    inject_before_script(store, lambda: store.commit(board, racer))
    result = await store.rollback(board, to=1, author="supervisor")
    assert (await store.read(board)).data == (await store.read(board, at=1)).data
    assert result.version == 4  # v3 was the racer; the rollback recomputed on top of it


async def test_noop_rollback_racing_a_commit_is_recomputed(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("risk", 0, {"credit_score": 500}))
    racer = Proposal.updates("risk", 1, {"credit_score": 800})
    inject_before_script(store, lambda: store.commit(board, racer))
    await store.rollback(board, to=1, author="supervisor")
    assert await store.read_key(board, "credit_score") == 500


async def test_add_then_remove_of_unset_key_is_a_noop(store: BoardStore, board: str) -> None:
    await store.commit(
        board, Proposal(author="docs", base=0, patch=[{"op": "remove", "path": "/notes"}])
    )
    result = await store.commit(
        board,
        Proposal(
            author="docs",
            base=1,
            patch=[
                {"op": "add", "path": "/notes", "value": ["x"]},
                {"op": "remove", "path": "/notes"},
            ],
        ),
    )
    assert (result.version, result.keys) == (2, [])
    assert "notes" not in (await store.read(board)).data


async def test_redelivery_after_archive_is_a_duplicate(store: BoardStore, board: str) -> None:
    proposal = Proposal.updates("risk", 0, {"risk_rating": "low"})
    first = await store.commit(board, proposal)
    await store.archive(board)
    again = await store.commit(board, proposal)
    assert (again.version, again.duplicate) == (first.version, True)


async def test_create_on_archived_id_keeps_it_out_of_the_live_index(
    store: BoardStore, board: str, loan_schema: Any
) -> None:
    from blackboard import BoardExists

    await store.archive(board)
    with pytest.raises(BoardExists):
        await store.create(board, loan_schema)
    assert await store.boards() == []
    assert [b.board_id for b in await store.boards(archived=True)] == [board]


@pytest.mark.parametrize(
    "patch",
    [
        [{"op": ["add"], "path": "/details", "value": {}}],
        [{"op": {"x": 1}, "path": "/details", "value": {}}],
        [{"op": "add", "path": "/details", "value": {"a": "\ud800"}}],
    ],
)
async def test_unusual_bad_input_is_typed(store: BoardStore, board: str, patch: Any) -> None:
    with pytest.raises(ValidationFailed):
        await store.commit(board, Proposal(author="risk", base=0, patch=patch))
    assert await store.version(board) == 0


async def test_bad_rollback_arguments_and_kind_are_config_errors(
    store: BoardStore, board: str
) -> None:
    with pytest.raises(ConfigError, match="invalid rollback argument"):
        await store.rollback(board, to=0, author="")
    with pytest.raises(ConfigError, match="unknown commit kind 'bogus'"):
        await store.commit(board, Proposal.updates("risk", 0, {"risk_rating": "low"}), kind="bogus")  # type: ignore[arg-type]
    assert await store.version(board) == 0


async def test_fingerprint_ignores_member_order(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("risk", 0, {"details": {"a": 1, "b": 2}}))
    first = await store.fingerprint(board)
    await store.commit(board, Proposal.updates("risk", 1, {"details": {"b": 2, "a": 1}}))
    assert await store.fingerprint(board) == first
