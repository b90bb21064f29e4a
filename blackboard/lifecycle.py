"""A board's life outside its run: export, import, archive, delete and fork.

An **export** is one JSON document holding what is needed to rebuild a board: its
declaration, its content at version 0, every log entry (patch, undo, author, kind, ids,
reason, outcome), the metadata the supervisor keeps (status, compliant version, spend),
and the supervisor's records (activations, outcomes, held proposals, incidents).
**Import** rebuilds the board by replaying the log through the commit script, so every
version reads, diffs and lists in history as in the original (each entry's ``ts_ms`` is
the import's: the original times stay in the file). **Fork** is an import of the log up
to a version, under a new id, then a no-op commit saying where it was forked from (also
``forked_from`` in the metadata).

Replaying needs no Python board model: the values were validated when they were first
committed, so the replay checks only that each entry lands as the version it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError as PydanticValidationError

from blackboard import codec
from blackboard.errors import ConfigError, ValidationFailed
from blackboard.keys import GlobalKeys, check_board_id
from blackboard.records import BoardInfo, CommitResult, LogEntry, Proposal
from blackboard.schema import BoardSchema
from blackboard.status import BoardStatus
from blackboard.store import BoardStore

__all__ = [
    "EXPORT_FORMAT",
    "archive_board",
    "delete_board",
    "export_board",
    "fork_board",
    "import_board",
    "provenance",
    "read_export",
    "write_export",
]

EXPORT_FORMAT = "blackboard.board/1"
"""The ``format`` field of an export; import refuses anything else."""

_REPLAYED = frozenset({"version", "decl", "bytes", "tokens", "since_snap"})
"""Metadata the replay itself produces (and so is not copied from the export)."""

_JSON_HASHES = ("results", "activations", "held")
"""The supervisor's per-board hashes whose values are JSON documents."""


async def export_board(store: BoardStore, board_id: str) -> dict[str, Any]:
    """Everything needed to rebuild ``board_id`` (see the module docstring), as plain
    JSON-ready data.

    Raises:
        BoardNotFound: no such board (with close matches).
        ValidationFailed: the board's history was compacted (:meth:`BoardStore.compact`):
            an export starts from version 0, which it no longer has.
    """
    await store.info(board_id)
    keys = store.keys(board_id)
    since = cast("str | None", await store.redis.hget(keys.meta, "history_from"))
    if since is not None and int(since) > 0:
        raise ValidationFailed(
            f"board {board_id!r}'s history before v{since} was compacted, and an export "
            "(so archive and fork too) replays the whole history from version 0; it "
            f"cannot be exported. Its versions {since}..current still read in place.",
            rule="compacted",
            expected="a board whose history was never compacted",
        )
    declaration = await store.declaration(board_id)
    initial = await store.read(board_id, at=0)
    log = await store.history(board_id)
    redis = store.redis
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.meta)
    for name in _JSON_HASHES:
        pipe.hgetall(getattr(keys, name))
    pipe.hgetall(keys.tool_results)
    pipe.zrange(keys.passed, 0, -1, withscores=True)
    pipe.xrange(keys.incidents)
    pipe.lrange(keys.saga, 0, -1)
    meta, *hashes, tools, passed, incidents, saga = await pipe.execute()
    where = f"board {board_id!r}"
    return {
        "format": EXPORT_FORMAT,
        "board": board_id,
        "exported_ms": int(time.time() * 1000),
        "declaration": json.loads(declaration.to_json()),
        "meta": meta,
        "initial": initial.data,
        "log": [entry.model_dump() for entry in log],
        "records": {
            **{
                name: {k: codec.loads(v, f"the {name} of {where}") for k, v in raw.items()}
                for name, raw in zip(_JSON_HASHES, hashes, strict=True)
            },
            "tool_results": tools,
            "passed": [int(score) for _, score in passed],
            "incidents": [[entry_id, fields] for entry_id, fields in incidents],
            "saga": saga,
        },
    }


async def import_board(
    store: BoardStore, data: dict[str, Any], board_id: str | None = None
) -> BoardInfo:
    """Rebuild an exported board, as ``board_id`` (default: its original id).

    Raises:
        ConfigError: ``data`` is not an export this package wrote.
        BoardExists: the id is taken (delete that board, or import under another id).
        CorruptData: a log entry did not land as the version it was.
    """
    export = _checked(data)
    board_id = check_board_id(board_id or export["board"])
    replay, schema = _replaying(store, export["declaration"])
    await replay.create(board_id, schema, export["initial"])
    for entry in export["log"]:
        await _land(replay, board_id, entry)
    await _restore(store, board_id, export)
    return await store.info(board_id)


async def _land(store: BoardStore, board_id: str, entry: LogEntry) -> None:
    if not entry.patch:  # a rollback that found nothing to restore
        result = await store.rollback(
            board_id,
            to=entry.version - 1,
            author=entry.author,
            reason=entry.reason,
            trace_id=entry.trace_id,
            proposal_id=entry.proposal_id,
        )
        return _landed(board_id, entry, result)
    proposal = Proposal(
        author=entry.author,
        base=entry.version - 1,
        patch=entry.patch,
        proposal_id=entry.proposal_id,
        activation_id=entry.activation_id,
        trace_id=entry.trace_id,
        reason=entry.reason,
    )
    result = await store.commit(board_id, proposal, kind=entry.kind, outcome=entry.outcome)
    _landed(board_id, entry, result)


def _landed(board_id: str, entry: LogEntry, result: CommitResult) -> None:
    if result.version != entry.version or result.duplicate:
        raise codec.corrupt(
            f"entry {entry.version} of the export of board {board_id!r}",
            f"landed as version {result.version} (duplicate: {result.duplicate})",
        )


async def _restore(store: BoardStore, board_id: str, export: dict[str, Any]) -> None:
    """The metadata and records the replay does not produce, and the global indexes a
    stopped board is listed in."""
    keys = store.keys(board_id)
    gk = GlobalKeys(store.settings.key_prefix)
    records = export["records"]
    meta = {k: v for k, v in export["meta"].items() if k not in _REPLAYED}
    pipe = store.redis.pipeline(transaction=True)
    if meta:
        pipe.hset(keys.meta, mapping=meta)
    for name in _JSON_HASHES:
        if records[name]:
            mapping = {k: codec.dumps(v) for k, v in records[name].items()}
            pipe.hset(getattr(keys, name), mapping=mapping)
    if records["tool_results"]:
        pipe.hset(keys.tool_results, mapping=records["tool_results"])
    if records["passed"]:
        pipe.zadd(keys.passed, {str(v): v for v in records["passed"]})
    for entry_id, fields in records["incidents"]:
        pipe.xadd(keys.incidents, fields, id=entry_id)
    if records["saga"]:
        pipe.rpush(keys.saga, *records["saga"])
    status = meta.get("status")
    if status in (BoardStatus.ESCALATED, BoardStatus.AWAITING_APPROVAL):
        pipe.zadd(gk.escalations, {board_id: int(meta.get("updated") or time.time() * 1000)})
    if status == BoardStatus.ARCHIVED:
        pipe.zadd(gk.archived, {board_id: time.time() * 1000})
        pipe.zrem(gk.boards, board_id)
    await pipe.execute()


def _checked(data: Any) -> dict[str, Any]:
    """The export with its log as :class:`LogEntry` values, or a ConfigError saying
    what is wrong with it."""
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(
            f"not a board export (format {found!r}, expected {EXPORT_FORMAT!r}); make one "
            "with `blackboard archive BOARD --to FILE` or export_board()."
        )
    try:
        log = [LogEntry.model_validate(e) for e in data["log"]]
        for field, kind in (("initial", dict), ("meta", dict), ("records", dict)):
            if not isinstance(data[field], kind):
                raise TypeError(f"{field} is {type(data[field]).__name__}, not an object")
        records = {
            "tool_results": {},
            "passed": [],
            "incidents": [],
            "saga": [],
            **{name: {} for name in _JSON_HASHES},
            **data["records"],
        }
        board, declaration = str(data["board"]), data["declaration"]
    except (KeyError, TypeError, PydanticValidationError) as exc:
        raise ConfigError(
            f"the board export is incomplete or damaged ({exc}); export the board again."
        ) from exc
    if [e.version for e in log] != list(range(1, len(log) + 1)):
        raise ConfigError("the board export's log skips or repeats versions; export it again.")
    return {**data, "board": board, "declaration": declaration, "log": log, "records": records}


def _replaying(store: BoardStore, declaration: Any) -> tuple[BoardStore, BoardSchema]:
    """A store on ``store``'s client for replaying a log under ``declaration``, and the
    schema it validates with: every key accepts any JSON value, since what the log holds
    was validated when it was first committed. The schema is registered in this store
    alone, so no other writer ever validates with it."""
    schema = BoardSchema.accepting_any(codec.dumps(declaration), "the board's declaration")
    replay = BoardStore(store.redis, store.settings)
    replay.register(schema)
    return replay, schema


ARCHIVE_ATTEMPTS = 3
"""Exports :func:`archive_board` makes of a board that commits meanwhile, before it
gives up (nothing is removed then)."""


async def archive_board(store: BoardStore, board_id: str, path: str | Path) -> Path:
    """Export ``board_id`` to the JSON file ``path``, then remove it from Redis (the
    file is complete on disk, and holds every commit, before anything is removed).
    Returns the file's path. Meant for boards that are done or stopped.

    Raises:
        BoardNotFound, StoreUnavailable; OSError when the file cannot be written;
        ConfigError: the board kept committing (see :data:`ARCHIVE_ATTEMPTS`).
    """
    target = Path(path)
    for _ in range(ARCHIVE_ATTEMPTS):
        data = await export_board(store, board_id)
        await asyncio.to_thread(write_export, target, data)
        if await store.version(board_id) == len(data["log"]):
            break  # nothing committed meanwhile: the file holds all of it
    else:
        raise ConfigError(
            f"board {board_id!r} kept changing while it was archived; pause it "
            "(`blackboard pause`) or let it finish, then archive it."
        )
    await delete_board(store, board_id)
    return target


def write_export(path: str | Path, data: dict[str, Any]) -> None:
    """Write an export to ``path`` whole or not at all (a partial file, synced, then
    renamed over it)."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    with partial.open("w", encoding="utf-8") as out:
        json.dump(data, out, ensure_ascii=False)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(target)


async def delete_board(store: BoardStore, board_id: str) -> None:
    """Remove a board, its whole history and its place in the global indexes, for good.

    Raises:
        BoardNotFound: no such board.
    """
    await store.delete(board_id)
    gk = GlobalKeys(store.settings.key_prefix)
    pipe = store.redis.pipeline(transaction=False)
    pipe.zrem(gk.escalations, board_id)
    pipe.zrem(gk.watch, board_id)
    await pipe.execute()


async def fork_board(
    store: BoardStore, board_id: str, at: int, new_board_id: str, *, author: str = "system"
) -> BoardInfo:
    """A new board whose history is ``board_id``'s up to version ``at`` (so it reads the
    same at every version up to ``at``), then a commit by ``author`` that changes
    nothing and says ``forked from <board_id>@<at>`` (its provenance in history: a no-op
    rollback to ``at``; also ``forked_from`` in its metadata, :func:`provenance`). The
    original is not touched.
    A supervisor carries the fork on when told to ``resume`` it (the CLI's ``fork``
    does): it routes as after version ``at``.

    Raises:
        BoardNotFound, BoardExists; ValidationFailed: ``at`` is not a version of it,
        or its history was compacted (as :func:`export_board`).
    """
    check_board_id(new_board_id)
    data = await export_board(store, board_id)
    current = len(data["log"])
    if not 0 <= at <= current:
        raise ValidationFailed(
            f"board {board_id!r} has versions 0..{current}; cannot fork it at {at}.",
            rule="version",
            expected=f"0 <= version <= {current}",
        )
    kept = [e for e in data["log"] if e["version"] <= at]
    acts = {e["activation_id"] for e in kept if e["activation_id"]}
    records = data["records"]
    meta = {k: v for k, v in data["meta"].items() if k in ("deadline_ms",)}
    meta.update(
        status=BoardStatus.ACTIVE,
        compliant=str(_compliant_at(data, at)),
        forked_from=f"{board_id}@{at}",
    )
    data.update(
        board=new_board_id,
        log=kept,
        meta=meta,
        records={
            # what routing as after version `at` reads: the handoff of its activation
            "activations": {k: v for k, v in records["activations"].items() if k in acts},
            "passed": [v for v in records["passed"] if v <= at],
        },
    )
    await import_board(store, data, new_board_id)
    replay, _ = _replaying(store, data["declaration"])
    await replay.rollback(new_board_id, to=at, author=author, reason=f"forked from {board_id}@{at}")
    return await store.info(new_board_id)


def _compliant_at(data: dict[str, Any], at: int) -> int:
    """The compliant version of an export cut at ``at``: the board's compliant version if
    it is no newer, else the newest version up to ``at`` whose audits passed. A board
    with a compliant version but no passed one ran no audits (every version it has is
    compliant): ``at``."""
    compliant = int(data["meta"].get("compliant", 0))
    passed = data["records"]["passed"]
    if compliant <= at:
        return compliant
    if not passed:
        return at
    return max((v for v in passed if v <= at), default=0)


async def provenance(store: BoardStore, board_id: str) -> str | None:
    """``"<board>@<version>"`` for a board made by :func:`fork_board`, else None."""
    await store.info(board_id)
    raw = await store.redis.hget(store.keys(board_id).meta, "forked_from")
    return cast("str | None", raw)


def read_export(path: str | Path) -> dict[str, Any]:
    """An export file's content.

    Raises:
        ConfigError: the file cannot be read or is not JSON.
    """
    try:
        with Path(path).open(encoding="utf-8") as source:
            data = json.load(source)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); is it a board export?") from exc
    return cast("dict[str, Any]", data)
