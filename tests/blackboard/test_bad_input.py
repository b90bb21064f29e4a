"""Bad input from outside: ids and names are checked whole (a pattern's ``$`` matches
before a final newline, so ``"abc\\n"`` once passed), and stored JSON that does not
decode surfaces as a typed error, never as a raw ``json.JSONDecodeError``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pydantic
import pytest
from blackboard.agents import agent
from blackboard.agents.tools import Tool, ToolRegistry
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, create_model

from blackboard import (
    App,
    BoardSchema,
    BoardStore,
    ConfigError,
    CorruptData,
    Key,
    Outcome,
    Proposal,
    Settings,
    Submission,
    codec,
    connect,
)
from blackboard.cli import main
from blackboard.keys import check_board_id

GOOD = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
BAD_CHARS = st.sampled_from(["\n", "\r", "\r\n", "\t", "\x00", "\x1b", "\x7f", "\u2028", " ", '"'])


@st.composite
def bad_names(draw: st.DrawFn) -> str:
    """A good name with one bad character put in, at its end as often as not."""
    name, bad = draw(GOOD), draw(BAD_CHARS)
    at = len(name) if draw(st.booleans()) else draw(st.integers(1, len(name)))
    return name[:at] + bad + name[at:]


HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HYPOTHESIS
@given(bad=bad_names())
@example(bad="abc\n")
async def test_board_ids_with_control_characters_are_refused(
    store: BoardStore, loan_schema: BoardSchema, bad: str
) -> None:
    with pytest.raises(ConfigError, match="invalid board id"):
        check_board_id(bad)
    with pytest.raises(ConfigError, match="invalid board id"):
        await store.create(bad, loan_schema)
    with pytest.raises(ConfigError, match="invalid board id"):
        await store.read(bad)
    assert await store.boards() == []
    # A submission naming such a board is not a valid submission (the supervisor
    # dead-letters it instead of failing on it later).
    with pytest.raises(pydantic.ValidationError, match="board_id"):
        Submission(kind="proposal", board_id=bad, author="docs")


def _model_with_key(key: str, owner: str = "docs") -> type[BaseModel]:
    fields: dict[str, Any] = {key: (Annotated[int, Key(owner)], 0)}
    return create_model("Case", **fields)


@HYPOTHESIS
@given(bad=bad_names())
@example(bad="a\n")
def test_names_with_control_characters_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="key names must be plain identifiers"):
        BoardSchema.from_model(_model_with_key(bad))
    with pytest.raises(ConfigError, match="not a valid name"):
        BoardSchema.from_model(_model_with_key("amount", owner=bad))

    @agent(bad)
    async def worker(ctx: Any) -> None:
        return None

    with pytest.raises(ConfigError, match="agent name"):
        App(board=_model_with_key("amount", owner="docs"), agents=[worker])

    class Io(BaseModel):
        x: int = 0

    async def call(_: Io) -> Io:
        return Io()

    with pytest.raises(ConfigError, match="tool name"):
        ToolRegistry([Tool(bad, call, Io, Io)])
    # Ids checked by the records' patterns (pydantic's regex engine matches the whole
    # text: its `$` is the end of the text, not a line's).
    with pytest.raises(pydantic.ValidationError, match="proposal_id"):
        Proposal(author="docs", base=0, patch=[], proposal_id=bad)
    with pytest.raises(pydantic.ValidationError, match="activation_id"):
        Submission(kind="proposal", board_id="b", author="docs", activation_id=bad)
    with pytest.raises(ConfigError, match="key_prefix"):
        Settings.from_env({}, key_prefix=bad)


async def test_corrupt_stored_value_is_a_typed_error(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("counter", 0, {"counter": 1}))
    keys = store.keys(board)
    await store.redis.hset(keys.state, "counter", "{not json")
    with pytest.raises(CorruptData, match=r"key 'counter' of board 'loan-1'.*not valid JSON"):
        await store.read(board)
    with pytest.raises(CorruptData, match="key 'counter' of board 'loan-1'"):
        await store.read_key(board, "counter")
    with pytest.raises(CorruptData, match="board 'loan-1'"):
        await store.read(board, at=1)  # the current version: read from the state


async def test_corrupt_log_and_snapshot_are_typed_errors(store: BoardStore, board: str) -> None:
    await store.commit(board, Proposal.updates("counter", 0, {"counter": 1}))
    await store.commit(board, Proposal.updates("counter", 1, {"counter": 2}))
    keys = store.keys(board)
    # Stream entries cannot be edited: the log is written again, its first patch broken.
    entries = await store.redis.xrange(keys.log)
    await store.redis.delete(keys.log)
    for n, (entry_id, fields) in enumerate(entries):
        await store.redis.xadd(
            keys.log, {**fields, "patch": "[{oops"} if n == 0 else fields, id=entry_id
        )
    with pytest.raises(CorruptData, match="log of board 'loan-1'"):
        await store.history(board)
    with pytest.raises(CorruptData, match="board 'loan-1' at version 1"):
        await store.read(board, at=1)
    await store.redis.hset(keys.snapshots, "0", '{"counter":')
    with pytest.raises(CorruptData, match="board 'loan-1' at version 0"):
        await store.read(board, at=0)


async def test_corrupt_declaration_is_a_typed_error(store: BoardStore, board: str) -> None:
    await store.redis.set(store.keys(board).declaration, "\x00")
    with pytest.raises(CorruptData, match="declaration of board 'loan-1'"):
        await store.info(board)
    with pytest.raises(CorruptData, match="declaration of board 'loan-1'"):
        await store.declaration(board)


async def test_corrupt_metadata_is_a_typed_error(store: BoardStore, board: str) -> None:
    await store.redis.hset(store.keys(board).meta, "created", "yesterday")
    with pytest.raises(CorruptData, match="metadata of board 'loan-1'"):
        await store.info(board)


async def test_a_status_outside_the_vocabulary_is_corrupt_metadata(
    store: BoardStore, board: str
) -> None:
    await store.redis.hset(store.keys(board).meta, "status", "sleeping")
    with pytest.raises(CorruptData, match=r"metadata of board 'loan-1'.*'sleeping'"):
        await store.info(board)


def test_corrupt_record_is_a_typed_error() -> None:
    with pytest.raises(
        CorruptData, match=r"the outcome of x stored in Redis is not a valid Outcome \(status"
    ):
        codec.load_model(Outcome, '{"status": "maybe"}', "the outcome of x")
    with pytest.raises(CorruptData, match="the outcome of x stored in Redis is not valid JSON"):
        codec.loads("{", "the outcome of x")


@pytest.mark.real_redis
def test_cli_reports_corrupt_data_in_one_line(redis_server: Any, loan_schema: Any) -> None:
    async def corrupt() -> None:
        store = BoardStore(connect(redis_server.url))
        await store.redis.flushdb()
        await store.create("loan-1", loan_schema)
        await store.redis.hset(store.keys("loan-1").state, "counter", "[1,")
        await store.close()

    asyncio.run(corrupt())  # the command runs its own event loop
    result = CliRunner().invoke(main, ["--redis", redis_server.url, "show", "loan-1"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: key 'counter' of board 'loan-1' stored in Redis is not valid JSON "
        "(unexpected end of data: line 1 column 4 (char 3)): something other than this package "
        "wrote it, or it was damaged. Restore it from a backup or delete the board; check "
        "that nothing else writes under this key prefix."
    ]
