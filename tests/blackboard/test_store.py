"""The board store's contract: every test runs on fakeredis and on a real redis-server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from bbtest import count_into
from redis.asyncio import Redis

from blackboard import (
    BoardExists,
    BoardNotFound,
    BoardSchema,
    BoardStore,
    ConfigError,
    ConflictError,
    OwnershipError,
    Proposal,
    ProposalRejected,
    Settings,
    StoreRefused,
    StoreUnavailable,
    ValidationFailed,
    connect,
)
from blackboard.status import BoardStatus


async def snapshot_of(store: BoardStore, board_id: str) -> tuple[int, dict[str, Any], int]:
    state = await store.read(board_id)
    return state.version, state.data, len(await store.history(board_id))


async def test_create_starts_at_version_zero_with_defaults(
    store: BoardStore, loan_schema: BoardSchema
) -> None:
    info = await store.create("loan-7", loan_schema, initial={"loan_amount": 5000.0})
    assert (info.version, info.status, info.compliant, info.schema_name) == (0, "active", 0, "Loan")
    assert info.status is BoardStatus.ACTIVE  # the enum, not a bare string
    assert info.escalated_reason == ""
    state = await store.read("loan-7")
    assert state.version == 0
    assert state.data == {
        "loan_amount": 5000.0,
        "tax_id": None,
        "notes": [],
        "credit_score": None,
        "risk_rating": None,
        "details": {},
        "decision": None,
        "counter": 0,
    }
    assert await store.history("loan-7") == []


async def test_create_twice_is_refused(
    store: BoardStore, board: str, loan_schema: BoardSchema
) -> None:
    await store.commit(board, Proposal.updates("docs", 0, {"loan_amount": 1.0}))
    with pytest.raises(BoardExists, match="already exists"):
        await store.create(board, loan_schema)
    assert (await store.read(board)).data["loan_amount"] == 1.0


async def test_create_validates_initial_values(store: BoardStore, loan_schema: BoardSchema) -> None:
    with pytest.raises(ValidationFailed) as err:
        await store.create("bad", loan_schema, initial={"credit_score": 9000})
    assert err.value.key == "credit_score"
    assert await store.boards() == []


async def test_declaration_is_stored_as_json_schema_and_ownership(
    store: BoardStore, board: str, loan_schema: BoardSchema
) -> None:
    raw = json.loads(await store.redis.get(store.keys(board).declaration))
    assert raw["owners"] == {
        "docs": ["loan_amount", "tax_id", "notes"],
        "risk": ["credit_score", "risk_rating", "details"],
        "compliance": ["decision"],
        "counter": ["counter"],
    }
    assert raw["keys"]["credit_score"]["schema"]["anyOf"][0] == {
        "maximum": 850,
        "minimum": 300,
        "type": "integer",
    }
    assert raw["keys"]["notes"]["summarisable"] is True
    stored = await store.declaration(board)
    assert stored == loan_schema  # same name, keys and digest; no Python model needed


async def test_list_boards_uses_the_index(store: BoardStore, loan_schema: BoardSchema) -> None:
    for i in range(3):
        await store.create(f"case-{i}", loan_schema)
    await store.commit("case-1", Proposal.updates("risk", 0, {"credit_score": 700}))
    infos = await store.boards()
    assert [(b.board_id, b.version) for b in infos] == [("case-0", 0), ("case-1", 1), ("case-2", 0)]
    assert await store.boards(offset=1, limit=1) == [infos[1]]


async def test_commit_whole_key_updates(store: BoardStore, board: str) -> None:
    result = await store.commit(
        board, Proposal.updates("risk", 0, {"credit_score": 720, "risk_rating": "low"})
    )
    assert (result.version, result.keys, result.duplicate) == (
        1,
        ["credit_score", "risk_rating"],
        False,
    )
    assert await store.read_key(board, "credit_score") == 720
    entry = (await store.history(board))[0]
    assert (entry.version, entry.author, entry.kind, entry.keys) == (
        1,
        "risk",
        "write",
        ["credit_score", "risk_rating"],
    )
    assert entry.undo == [
        {"op": "add", "path": "/credit_score", "value": None},
        {"op": "add", "path": "/risk_rating", "value": None},
    ]


async def test_commit_sub_path_patch_and_its_undo(store: BoardStore, board: str) -> None:
    await store.commit(
        board,
        Proposal(
            author="docs",
            base=0,
            patch=[
                {"op": "add", "path": "/notes/-", "value": "income verified"},
                {"op": "add", "path": "/notes/-", "value": "id checked"},
            ],
        ),
    )
    await store.commit(
        board,
        Proposal(
            author="docs",
            base=1,
            patch=[
                {"op": "test", "path": "/notes/0", "value": "income verified"},
                {"op": "replace", "path": "/notes/1", "value": "id verified"},
            ],
        ),
    )
    assert await store.read_key(board, "notes") == ["income verified", "id verified"]
    entry = (await store.history(board, start=2))[0]
    assert entry.undo == [{"op": "replace", "path": "/notes/1", "value": "id checked"}]


async def test_log_entry_records_ids_reason_and_outcome(store: BoardStore, board: str) -> None:
    proposal = Proposal.updates(
        "compliance",
        0,
        {"decision": "approve"},
        proposal_id="p-1",
        activation_id="act-9",
        trace_id="tr-3",
        reason="all clear",
    )
    await store.commit(board, proposal, outcome="policies:ok")
    entry = (await store.history(board))[0]
    assert (
        entry.proposal_id,
        entry.activation_id,
        entry.trace_id,
        entry.reason,
        entry.outcome,
    ) == ("p-1", "act-9", "tr-3", "all clear", "policies:ok")
    assert entry.ts_ms > 1_600_000_000_000
    assert entry.patch == proposal.patch


async def test_unchanged_value_is_not_a_change(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("risk", 0, {"credit_score": 700}))
    again = await store.commit(board, Proposal.updates("risk", 1, {"credit_score": 700}))
    assert (again.version, again.keys) == (2, [])
    kver = await store.redis.hget(store.keys(board).kver, "credit_score")
    assert kver == "1"


async def test_read_one_key_and_unknown_key(store: BoardStore, board: str) -> None:
    assert await store.read_key(board, "notes") == []
    assert await store.read_key(board, "tax_id") is None


async def test_events_are_published(store: BoardStore, board: str) -> None:
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(store.keys(board).events)
    await pubsub.get_message(timeout=1)  # subscription confirmation
    await store.commit(board, Proposal.updates("risk", 0, {"risk_rating": "high"}))
    message = None
    for _ in range(50):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message is not None:
            break
    await pubsub.aclose()
    assert message is not None
    assert json.loads(message["data"]) == {
        "board": "loan-1",
        "version": 1,
        "kind": "write",
        "author": "risk",
        "keys": ["risk_rating"],
    }


async def test_size_accounting_is_incremental(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("docs", 0, {"notes": ["x" * 100]}))
    await store.commit(board, Proposal.updates("risk", 1, {"details": {"a": 1}}))
    sizes = await store.sizes(board)
    state = await store.read(board)
    expected = {
        k: len(json.dumps(v, separators=(",", ":")).encode()) for k, v in state.data.items()
    }
    assert {k: b for k, (b, _) in sizes.keys.items()} == expected
    assert sizes.bytes == sum(expected.values())
    assert sizes.tokens == sum((b + 3) // 4 for b in expected.values())
    assert sizes.keys["notes"] == (104, 26)
    info = await store.info(board)
    assert (info.bytes, info.tokens) == (sizes.bytes, sizes.tokens)


async def test_commit_times_are_the_servers_clock_in_ms(store: BoardStore, board: str) -> None:
    """The script builds the millisecond stamp from TIME's seconds and microseconds as
    text: checked with a microsecond count of six digits and with one of fewer (the
    first 90 ms of a second, waited for), where a missing zero would shrink it tenfold."""
    windows = [(0, 90_000), (100_000, 1_000_000)]
    version = 0
    deadline = asyncio.get_running_loop().time() + 5  # each window comes once a second
    while windows:
        seconds, micros = await store.redis.time()
        low, high = windows[0]
        if not low <= micros < high - 5_000:  # polls the server's clock until it is in
            assert asyncio.get_running_loop().time() < deadline, f"never in {windows[0]} µs"
            continue
        windows.pop(0)
        await store.commit(
            board, Proposal.updates("risk", version, {"credit_score": 600 + version})
        )
        version += 1
        later, later_micros = await store.redis.time()
        entry = (await store.history(board, start=version))[0]
        assert seconds * 1000 + micros // 1000 <= entry.ts_ms
        assert entry.ts_ms <= later * 1000 + later_micros // 1000
        assert (await store.info(board)).updated_ms == entry.ts_ms


async def test_archive_keeps_history_but_refuses_commits(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("risk", 0, {"risk_rating": "low"}))
    await store.archive(board)
    with pytest.raises(ProposalRejected, match="archived"):
        await store.commit(board, Proposal.updates("risk", 1, {"risk_rating": "high"}))
    assert (await store.read(board)).data["risk_rating"] == "low"
    assert [b.board_id for b in await store.boards(archived=True)] == [board]
    assert await store.boards() == []
    assert (await store.info(board)).status is BoardStatus.ARCHIVED


async def test_delete_removes_every_key(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("risk", 0, {"risk_rating": "low"}))
    await store.delete(board)
    assert await store.redis.exists(*store.keys(board).all()) == 0
    with pytest.raises(BoardNotFound):
        await store.read(board)
    assert await store.boards() == []


async def test_all_keys_of_a_board_share_one_cluster_slot(store: BoardStore, board: str) -> None:
    from redis.crc import key_slot

    slots = {key_slot(k.encode()) for k in store.keys(board).all()}
    assert len(slots) == 1
    assert all("{loan-1}" in k for k in store.keys(board).all())


async def test_script_cache_flush_is_survived(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("risk", 0, {"risk_rating": "low"}))
    await store.redis.script_flush()
    result = await store.commit(board, Proposal.updates("risk", 1, {"risk_rating": "high"}))
    assert result.version == 2


# -- bad input: a typed error that says what to do, and nothing changes ----------------

BAD_PROPOSALS: list[tuple[str, Proposal, type[Exception], str]] = [
    (
        "malformed op",
        Proposal(author="risk", base=0, patch=[{"op": "upsert", "path": "/details"}]),
        ValidationFailed,
        "malformed JSON Patch",
    ),
    (
        "no value",
        Proposal(author="risk", base=0, patch=[{"op": "add", "path": "/details"}]),
        ValidationFailed,
        "has no 'value'",
    ),
    (
        "whole board",
        Proposal(author="risk", base=0, patch=[{"op": "add", "path": "", "value": {}}]),
        ValidationFailed,
        "targets the whole board",
    ),
    ("empty patch", Proposal(author="risk", base=0, patch=[]), ValidationFailed, "non-empty list"),
    (
        "unknown key",
        Proposal.updates("risk", 0, {"colour": "red"}),
        ValidationFailed,
        "has no key 'colour'",
    ),
    (
        "bad type",
        Proposal.updates("risk", 0, {"credit_score": "high"}),
        ValidationFailed,
        "fails its type",
    ),
    (
        "bad range",
        Proposal.updates("risk", 0, {"credit_score": 90}),
        ValidationFailed,
        "greater than or equal to 300",
    ),
    (
        "nested bad type",
        Proposal(
            author="risk", base=0, patch=[{"op": "add", "path": "/details/x", "value": "one"}]
        ),
        ValidationFailed,
        "at details/x",
    ),
    (
        "path missing",
        Proposal(
            author="docs", base=0, patch=[{"op": "replace", "path": "/notes/3", "value": "x"}]
        ),
        ValidationFailed,
        "does not apply",
    ),
    (
        "failed test",
        Proposal(
            author="docs",
            base=0,
            patch=[
                {"op": "test", "path": "/notes", "value": ["y"]},
                {"op": "add", "path": "/notes/-", "value": "x"},
            ],
        ),
        ValidationFailed,
        "'test' operation",
    ),
    (
        "unknown author",
        Proposal.updates("mallory", 0, {"risk_rating": "low"}),
        OwnershipError,
        "owns no key",
    ),
    (
        "not owner",
        Proposal.updates("docs", 0, {"risk_rating": "low"}),
        OwnershipError,
        "owned by 'risk'",
    ),
    (
        "base ahead",
        Proposal.updates("risk", 5, {"risk_rating": "low"}),
        ValidationFailed,
        "version 5 does not exist",
    ),
    (
        "replace unset",
        Proposal(
            author="docs",
            base=0,
            patch=[
                {"op": "remove", "path": "/loan_amount"},
            ],
        ),
        None,
        "",
    ),
    (
        "not json",
        Proposal.updates("risk", 0, {"details": {"a": float("nan")}}),
        ValidationFailed,
        "not JSON",
    ),
    (
        "unknown read",
        Proposal.updates("risk", 0, {"risk_rating": "low"}, reads=["colour"]),
        ValidationFailed,
        "has no key 'colour'",
    ),
]


@pytest.mark.parametrize(
    ("name", "proposal", "error", "message"),
    [p for p in BAD_PROPOSALS if p[2] is not None],
    ids=[p[0] for p in BAD_PROPOSALS if p[2] is not None],
)
async def test_bad_proposals_are_rejected_and_change_nothing(
    store: BoardStore,
    board: str,
    name: str,
    proposal: Proposal,
    error: type[Exception],
    message: str,
) -> None:
    before = await snapshot_of(store, board)
    with pytest.raises(error, match=message) as err:
        await store.commit(board, proposal)
    assert await snapshot_of(store, board) == before
    assert "." in str(err.value)  # a full sentence, with what to do


async def test_remove_of_unset_key_is_rejected(store: BoardStore, board: str) -> None:
    await store.commit(
        board, Proposal(author="docs", base=0, patch=[{"op": "remove", "path": "/loan_amount"}])
    )
    before = await snapshot_of(store, board)
    with pytest.raises(ValidationFailed, match=r"cannot remove key 'loan_amount'.*Use 'add'"):
        await store.commit(
            board, Proposal(author="docs", base=1, patch=[{"op": "remove", "path": "/loan_amount"}])
        )
    with pytest.raises(ValidationFailed, match="cannot replace key 'loan_amount'"):
        await store.commit(
            board,
            Proposal(
                author="docs",
                base=1,
                patch=[{"op": "replace", "path": "/loan_amount", "value": 3.0}],
            ),
        )
    assert await snapshot_of(store, board) == before


async def test_oversized_value_and_patch(redis_client: Redis, loan_schema: BoardSchema) -> None:
    store = BoardStore(redis_client, Settings(max_value_bytes=100, max_patch_bytes=300))
    await store.create("b", loan_schema)
    with pytest.raises(ValidationFailed, match="over the 100-byte limit") as err:
        await store.commit("b", Proposal.updates("docs", 0, {"notes": ["x" * 200]}))
    assert (err.value.key, err.value.rule) == ("notes", "max_value_bytes")
    # Bytes, not characters: 60 characters of 2 bytes each are over the limit.
    with pytest.raises(ValidationFailed, match="is 124 bytes, over the 100-byte limit"):
        await store.commit("b", Proposal.updates("docs", 0, {"notes": ["é" * 60]}))
    with pytest.raises(ValidationFailed, match="max_patch_bytes"):
        await store.commit("b", Proposal.updates("docs", 0, {"notes": ["x"] * 100}))
    patch = Proposal.updates("docs", 0, {"notes": ["é" * 130]})  # 173 characters
    with pytest.raises(ValidationFailed, match="patch is 303 bytes, over the 300-byte"):
        await store.commit("b", patch)
    assert (await store.version("b"), await store.read_key("b", "notes")) == (0, [])


async def test_a_lone_surrogate_is_refused(store: BoardStore, board: str) -> None:
    """Model output can carry half a UTF-16 pair: it is no valid UTF-8, so it is refused
    as a value, and nothing is written."""
    before = await snapshot_of(store, board)
    with pytest.raises(ValidationFailed, match="not JSON-serialisable") as err:
        await store.commit(board, Proposal.updates("docs", 0, {"notes": ["half \ud800 pair"]}))
    assert err.value.rule == "json"
    assert await snapshot_of(store, board) == before


async def test_stale_base_on_overlapping_key_is_a_conflict(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("risk", 0, {"credit_score": 700}))
    before = await snapshot_of(store, board)
    with pytest.raises(ConflictError) as err:
        await store.commit(board, Proposal.updates("risk", 0, {"credit_score": 650}))
    assert err.value.changed == {"credit_score": 1}
    assert "Re-read the board" in str(err.value)
    # The same stale base through the read-modify-write path.
    with pytest.raises(ConflictError):
        await store.commit(
            board,
            Proposal(
                author="risk",
                base=0,
                patch=[{"op": "add", "path": "/details/x", "value": 1}],
                reads=["credit_score"],
            ),
        )
    assert await snapshot_of(store, board) == before


async def test_stale_base_on_disjoint_key_commits(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("risk", 0, {"credit_score": 700}))
    result = await store.commit(board, Proposal.updates("docs", 0, {"loan_amount": 10.0}))
    assert result.version == 2


async def test_read_set_change_is_a_conflict_no_write_skew(store: BoardStore, board: str) -> None:
    """Two writers each read the other's key: only one may commit from the same base."""
    await store.commit(
        board, Proposal.updates("docs", 0, {"loan_amount": 100.0}, reads=["credit_score"])
    )
    with pytest.raises(ConflictError) as err:
        await store.commit(
            board, Proposal.updates("risk", 0, {"credit_score": 600}, reads=["loan_amount"])
        )
    assert err.value.changed == {"loan_amount": 1}


async def test_unknown_board(store: BoardStore, board: str) -> None:
    with pytest.raises(BoardNotFound, match=r"'loan-2' does not exist\. Did you mean 'loan-1'"):
        await store.commit("loan-2", Proposal.updates("risk", 0, {"risk_rating": "low"}))
    with pytest.raises(BoardNotFound):
        await store.read("nothing-like-it")


async def test_invalid_board_id(store: BoardStore, loan_schema: BoardSchema) -> None:
    with pytest.raises(ConfigError, match="invalid board id"):
        await store.create("has{brace}", loan_schema)


async def test_unregistered_schema_is_a_clear_error(
    redis_client: Redis, store: BoardStore, board: str
) -> None:
    other = BoardStore(redis_client, store.settings)
    with pytest.raises(ConfigError, match="has not registered"):
        await other.commit(board, Proposal.updates("risk", 0, {"risk_rating": "low"}))


async def test_client_must_decode_responses() -> None:
    import fakeredis

    with pytest.raises(ConfigError, match="decode_responses=True"):
        BoardStore(fakeredis.FakeAsyncRedis())


async def test_unreachable_redis_is_store_unavailable(tmp_path: Any) -> None:
    store = BoardStore(connect(f"unix://{tmp_path}/nothing.sock"), Settings())
    with pytest.raises(StoreUnavailable, match="Redis unreachable") as err:
        await store.boards()
    assert err.value.__cause__ is not None
    await store.close()


async def test_concurrent_creates_of_one_id(store: BoardStore, loan_schema: BoardSchema) -> None:
    results = await asyncio.gather(
        *(store.create("same", loan_schema) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, BoardExists) for r in results if isinstance(r, Exception))


async def test_fingerprint_follows_content_not_versions(store: BoardStore, board: str) -> None:
    empty = await store.fingerprint(board)
    await store.commit(board, Proposal.updates("risk", 0, {"risk_rating": "low"}))
    changed = await store.fingerprint(board)
    await store.commit(board, Proposal.updates("risk", 1, {"risk_rating": None}))
    assert changed != empty
    assert await store.fingerprint(board) == empty  # same content again, same fingerprint
    await store.rollback(board, to=1, author="supervisor")
    assert await store.fingerprint(board) == changed
    await store.commit(
        board, Proposal(author="docs", base=3, patch=[{"op": "remove", "path": "/notes"}])
    )
    assert await store.fingerprint(board) not in (empty, changed)


async def test_read_of_undeclared_key_and_history_misuse(store: BoardStore, board: str) -> None:
    with pytest.raises(ValidationFailed, match="has no key 'colour'"):
        await store.read_key(board, "colour")
    with pytest.raises(ConfigError, match="limit >= 1"):
        await store.history(board, limit=0)


async def test_declaration_cache_is_bounded(store: BoardStore, loan_schema: BoardSchema) -> None:
    store.declarations.CACHE_LIMIT = 2  # type: ignore[misc]
    for i in range(5):
        await store.create(f"c{i}", loan_schema)
        await store.commit(f"c{i}", Proposal.updates("risk", 0, {"risk_rating": "low"}))
    assert len(store.declarations) <= 2
    other = BoardStore(store.redis, store.settings)
    other.register(loan_schema)
    other.declarations.CACHE_LIMIT = 2  # type: ignore[misc]
    for i in range(5):  # a fresh process rebuilds what it needs from Redis
        result = await other.commit(f"c{i}", Proposal.updates("risk", 1, {"risk_rating": "high"}))
        assert result.version == 2
    assert len(other.declarations) <= 2


async def test_warm_reads_new_boards_declarations_in_one_round_trip(
    store: BoardStore, loan_schema: BoardSchema
) -> None:
    for b in ("w1", "w2", "w3"):
        await store.create(b, loan_schema)
    fresh = BoardStore(store.redis, store.settings)  # another process: nothing cached
    fresh.register(loan_schema)
    sent: list[int] = []
    pipeline = fresh.redis.pipeline
    fresh.redis.pipeline = lambda *a, **k: count_into(pipeline(*a, **k), sent)  # type: ignore[method-assign]
    await fresh.warm(["w1", "w2", "w1", "missing", "not a board id!", "w3"])
    assert sent == [4]  # w1, w2, missing, w3: once each, in one pipeline
    await fresh.warm(["w2", "w3"])
    assert sent == [4]  # known now: no round trip

    async def no_reads(*args: Any) -> Any:
        raise AssertionError("read a declaration that warm() had read")

    hget, fresh.redis.hget = fresh.redis.hget, no_reads  # type: ignore[method-assign]
    result = await fresh.commit("w2", Proposal.updates("risk", 0, {"credit_score": 700}))
    assert result.version == 1
    fresh.redis.hget = hget  # type: ignore[method-assign]
    fresh.redis.pipeline = pipeline  # type: ignore[method-assign]
    with pytest.raises(BoardNotFound):  # still reported where used
        await fresh.commit("missing", Proposal.updates("risk", 0, {"credit_score": 700}))


async def test_warm_is_only_a_speed_up_and_keeps_what_was_learnt_meanwhile(
    store: BoardStore, loan_schema: BoardSchema
) -> None:
    await store.create("w1", loan_schema)
    await store.redis.set(store.keys("odd").meta, "not a hash")  # an error reply for it
    fresh = BoardStore(store.redis, store.settings)
    fresh.register(loan_schema)
    await fresh.warm(["odd", "w1"])  # no error: odd is reported where it is used
    assert fresh.declarations.known("odd") is None
    assert fresh.declarations.known("w1") == loan_schema.digest
    with pytest.raises(StoreRefused, match="WRONGTYPE"):  # not an outage: no retrying
        await fresh.commit("odd", Proposal.updates("risk", 0, {"credit_score": 700}))
    # w2 re-created under another declaration while warm's round trip was out: the
    # digest learnt meanwhile is newer than the one warm read, and stays.
    await store.create("w2", loan_schema)
    pipeline = fresh.redis.pipeline

    def racing(*a: Any, **k: Any) -> Any:
        pipe = pipeline(*a, **k)
        execute = pipe.execute

        async def run(*ea: Any, **ek: Any) -> Any:
            replies = await execute(*ea, **ek)
            fresh.declarations.remember("w2", "newer")
            return replies

        pipe.execute = run
        return pipe

    fresh.redis.pipeline = racing  # type: ignore[method-assign]
    try:
        await fresh.warm(["w2"])
    finally:
        fresh.redis.pipeline = pipeline  # type: ignore[method-assign]
    assert fresh.declarations.known("w2") == "newer"
