"""The board store: create, list, read, roll back, archive and delete the boards of one
deployment (one Redis and key prefix).

A board is a handful of Redis keys under its hash tag (``keys.py``). Commits go through
the commit protocol (``commits.py``: validate, one atomic script, a typed answer); which
schema validates them is ``declarations.py``'s business. The store is the facade over
both: ``store.commit(...)``, ``store.prepare(...)`` and the other steps of the protocol
are its methods, handed straight to them.

(Past 500 lines on purpose: about 120 are those hand-offs and compaction's entry point;
they stay here because the store is the API users read, and its docstrings are that
API's documentation.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, cast

import jsonpatch
from pydantic import ValidationError as PydanticValidationError
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from blackboard import codec, history
from blackboard.commits import Committer, PreparedCommit, check_version, lua
from blackboard.config import Settings
from blackboard.connection import Command, connect
from blackboard.declarations import Declarations
from blackboard.errors import (
    BoardExists,
    BoardNotFound,
    ConfigError,
    ConflictError,
    HistoryCompacted,
    redis_failures,
)
from blackboard.keys import BoardKeys, GlobalKeys, check_board_id
from blackboard.readonly import ReadOnlyScript
from blackboard.records import (
    BoardInfo,
    BoardSize,
    BoardState,
    CommitKind,
    CommitResult,
    LogEntry,
    Preview,
    Proposal,
    ProposalFields,
    new_id,
)
from blackboard.schema import BoardSchema
from blackboard.status import BoardStatus

# PreparedCommit and redis_failures: imported from here by the supervisor.
__all__ = ["BoardStore", "PreparedCommit", "redis_failures"]

log = logging.getLogger(__name__)


class BoardStore:
    """All boards of one deployment (one Redis and key prefix).

    Args:
        redis: an asyncio client created with ``decode_responses=True``.
        settings: limits and snapshot policy; default from the environment.
    """

    CACHE_LIMIT = Declarations.CACHE_LIMIT
    """Bound of a per-board cache (see :attr:`Declarations.CACHE_LIMIT`); the supervisor
    bounds its own per-board caches by it too."""

    def __init__(self, redis: Redis, settings: Settings | None = None) -> None:
        if not redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ConfigError(
                "the Redis client must be created with decode_responses=True; "
                "or let BoardStore.from_url() create it."
            )
        self.redis = redis
        self.settings = settings or Settings.from_env()
        self._global = GlobalKeys(self.settings.key_prefix)
        self.declarations = Declarations(redis, self._global)
        """Which schema validates each board (registered here, cached per board)."""
        self.committer = Committer(redis, self.settings, self._global, self.declarations)
        """The commit protocol; the store's commit methods are its."""
        self._closed = False
        self._compact_script = redis.register_script(lua("compact.lua"))
        self._create_script = redis.register_script(lua("create.lua"))
        self._read_at_script = ReadOnlyScript(redis, lua("read_at.lua"))
        """Read-only: a user allowed only reads (the operator's) reads past versions."""

    @classmethod
    def from_url(cls, url: str | None = None, settings: Settings | None = None) -> BoardStore:
        """A store on ``url`` (``redis://``, ``unix://``), else ``BLACKBOARD_REDIS_URL``,
        else the embedded in-process Redis."""
        settings = settings or Settings.from_env(redis_url=url)
        client = connect(settings.redis_url if url is None else url, fast_io=settings.fast_io)
        return cls(client, settings)

    async def close(self) -> None:
        """Close the client (idempotent)."""
        if not self._closed:
            self._closed = True
            await self.redis.aclose()

    async def __aenter__(self) -> BoardStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def keys(self, board_id: str) -> BoardKeys:
        """The Redis key names of one board."""
        return self._global.board(board_id)

    # -- declarations ---------------------------------------------------------------

    def register(self, schema: BoardSchema) -> None:
        """Make a schema available to validate commits on boards declared with it."""
        self.declarations.register(schema)

    async def warm(self, board_ids: Iterable[str]) -> None:
        """Learn the declarations of boards not seen yet in one round trip (see
        :meth:`Declarations.warm`)."""
        await self.declarations.warm(board_ids)

    async def declaration(self, board_id: str) -> BoardSchema:
        """The board's declaration as stored in Redis (describes; cannot validate)."""
        return await self.declarations.declaration(board_id)

    async def not_found(self, board_id: str) -> BoardNotFound:
        """The error for a missing board, suggesting live ids close to ``board_id``."""
        return await self.declarations.not_found(board_id)

    # -- boards ---------------------------------------------------------------------

    async def create(
        self, board_id: str, schema: BoardSchema, initial: Mapping[str, Any] | None = None
    ) -> BoardInfo:
        """Create a board at version 0 from the keys' defaults, overridden by ``initial``.

        Raises:
            BoardExists: the id is taken.
            ValidationFailed: an initial value fails its key's type or size limit.
        """
        check_board_id(board_id)
        self.register(schema)
        state = schema.initial_state()
        for key, value in (initial or {}).items():
            state[key] = self.committer.checked_value(schema, key, value)
        keys = self.keys(board_id)
        flat: list[str] = []
        for k, v in state.items():
            flat += [k, v, codec.fingerprint(v)]
        snapshot = "{" + ",".join(f'"{k}":{v}' for k, v in state.items()) + "}"
        async with redis_failures(f"create board {board_id!r}"):
            # Index first: a crash between the two leaves an index entry without a board,
            # which listing skips, never a board that listing cannot find.
            await self.redis.zadd(self._global.boards, {board_id: time.time() * 1000}, nx=True)
            created = await self._create_script(
                keys=[
                    keys.meta,
                    keys.state,
                    keys.snapshots,
                    keys.snapshot_index,
                    keys.declaration,
                    keys.khash,
                ],
                args=[schema.digest, schema.to_json(), snapshot, len(state), *flat],
            )
        if not created:
            if await self.redis.zscore(self._global.archived, board_id) is not None:
                await self.redis.zrem(self._global.boards, board_id)  # undo our index entry
            raise BoardExists(board_id)
        self.declarations.remember(board_id, schema.digest)
        log.info("board created", extra={"board": board_id, "schema": schema.name})
        return await self.info(board_id)

    async def info(self, board_id: str) -> BoardInfo:
        """The board's metadata (status, version, sizes), without its content."""
        infos = await self.infos([board_id])
        if not infos:
            raise await self.not_found(board_id)
        return infos[0]

    async def boards(
        self, *, archived: bool = False, offset: int = 0, limit: int = 1000
    ) -> list[BoardInfo]:
        """Boards in creation order, from the board index (no key scans)."""
        index = self._global.archived if archived else self._global.boards
        async with redis_failures("list boards"):
            ids = cast("list[str]", await self.redis.zrange(index, offset, offset + limit - 1))
        return await self.infos(ids)

    _INFO = (
        "version",
        "status",
        "compliant",
        "decl",
        "bytes",
        "tokens",
        "created",
        "updated",
        "escalated_reason",
    )

    async def infos(self, board_ids: Iterable[str]) -> list[BoardInfo]:
        """The metadata of these boards in one round trip; ids of no board are skipped."""
        ids = list(board_ids)
        async with redis_failures("read board metadata"):
            pipe = self.redis.pipeline(transaction=False)
            for board_id in ids:
                self.info_reads(pipe, board_id)
            replies = await pipe.execute()
        infos = (self.info_from(b, replies[2 * i], replies[2 * i + 1]) for i, b in enumerate(ids))
        return [info for info in infos if info is not None]

    def info_reads(self, pipe: Pipeline, board_id: str) -> None:
        """Queue on ``pipe`` the two reads :meth:`info_from` makes a :class:`BoardInfo`
        of: for a caller that reads more about the board in the same transaction."""
        keys = self.keys(board_id)
        pipe.hmget(keys.meta, self._INFO)
        pipe.get(keys.declaration)

    def info_from(
        self, board_id: str, meta: list[str | None], decl: str | None
    ) -> BoardInfo | None:
        """The :class:`BoardInfo` of the replies to :meth:`info_reads` (None: no such
        board, or one whose creation did not finish)."""
        if meta[0] is None or decl is None:
            return None  # index entry of a board whose creation did not finish
        m = cast("dict[str, str]", dict(zip(self._INFO, meta, strict=True)))
        declaration = codec.loads(decl, f"the declaration of board {board_id!r}")
        try:
            status = BoardStatus(m["status"])
            return BoardInfo(
                board_id=board_id,
                schema_name=declaration["name"],
                digest=m["decl"],
                status=status,
                version=int(m["version"]),
                compliant=int(m["compliant"]),
                bytes=int(m["bytes"]),
                tokens=int(m["tokens"]),
                created_ms=int(m["created"]),
                updated_ms=int(m["updated"]),
                # left over after the board moved on (rolled back, say): not its reason
                escalated_reason=m["escalated_reason"] or ""
                if status is BoardStatus.ESCALATED
                else "",
            )
        except (KeyError, TypeError, ValueError) as exc:  # ValueError: pydantic's too
            raise codec.corrupt(
                f"the metadata of board {board_id!r}", f"is not what this package writes ({exc!r})"
            ) from exc

    async def archive(self, board_id: str) -> None:
        """Freeze a board: readable (content, history), refuses commits, listed apart."""
        await self.info(board_id)
        async with redis_failures(f"archive board {board_id!r}"):
            await self.redis.hset(self.keys(board_id).meta, "status", BoardStatus.ARCHIVED)
            await self.redis.zadd(self._global.archived, {board_id: time.time() * 1000})
            await self.redis.zrem(self._global.boards, board_id)

    async def delete(self, board_id: str) -> None:
        """Remove a board and its whole history. Irreversible; prefer :meth:`archive`."""
        await self.info(board_id)
        async with redis_failures(f"delete board {board_id!r}"):
            await self.redis.unlink(*self.keys(board_id).all())
            await self.redis.zrem(self._global.boards, board_id)
            await self.redis.zrem(self._global.archived, board_id)
        self.declarations.forget(board_id)

    # -- reads ----------------------------------------------------------------------

    async def version(self, board_id: str) -> int:
        async with redis_failures(f"read board {board_id!r}"):
            raw = await self.redis.hget(self.keys(board_id).meta, "version")
        if raw is None:
            raise await self.not_found(board_id)
        return int(raw)

    async def read(self, board_id: str, *, at: int | None = None) -> BoardState:
        """The whole board, now or at version ``at`` (one round trip either way)."""
        keys = self.keys(board_id)
        if at is not None:
            async with redis_failures(f"read board {board_id!r} at version {at}"):
                reply = await self._read_at_script(
                    keys=[keys.meta, keys.snapshots, keys.snapshot_index, keys.log, keys.state],
                    args=[at],
                )
            if reply[0] == "notfound":
                raise await self.not_found(board_id)
            if reply[0] == "range":
                check_version(board_id, at, int(reply[1]))
            if reply[0] == "compacted":
                raise HistoryCompacted(board_id, at, int(reply[1]), int(reply[2]))
            return BoardState(
                board_id=board_id,
                version=at,
                data=history.state_from_reply(reply, f"board {board_id!r} at version {at}"),
            )
        async with redis_failures(f"read board {board_id!r}"):
            pipe = self.redis.pipeline(transaction=True)
            pipe.hget(keys.meta, "version")
            pipe.hgetall(keys.state)
            version, raw = await pipe.execute()
            if version is None:
                raise await self.not_found(board_id)
        data = {k: codec.loads(v, f"key {k!r} of board {board_id!r}") for k, v in raw.items()}
        return BoardState(board_id=board_id, version=int(version), data=data)

    async def read_key(self, board_id: str, key: str, *, at: int | None = None) -> Any:
        """One key's value (``None`` if unset), without loading the rest of the board."""
        if at is not None:
            return (await self.read(board_id, at=at)).data.get(key)
        keys = self.keys(board_id)
        async with redis_failures(f"read board {board_id!r}"):
            pipe = self.redis.pipeline(transaction=True)
            pipe.hget(keys.meta, "decl")
            pipe.hget(keys.state, key)
            digest, raw = await pipe.execute()
        if digest is None:
            raise await self.not_found(board_id)
        if raw is None:  # unset, or not a key at all: tell the two apart
            schema = self.declarations.registered(digest) or await self.declaration(board_id)
            schema.check_key(key)
            return None
        return codec.loads(raw, f"key {key!r} of board {board_id!r}")

    async def sizes(self, board_id: str) -> BoardSize:
        """Bytes and approximate tokens per board and per key, from the commit's
        incremental accounting (HSTRLEN per key: values are not loaded)."""
        schema = await self.declaration(board_id)
        keys = self.keys(board_id)
        names = list(schema.keys)
        async with redis_failures(f"read sizes of board {board_id!r}"):
            pipe = self.redis.pipeline(transaction=True)
            pipe.hmget(keys.meta, "version", "bytes", "tokens")
            for name in names:
                pipe.hstrlen(keys.state, name)
            replies = await pipe.execute()
        (version, nbytes, ntokens), lengths = replies[0], replies[1:]
        per_key = {
            n: (ln, codec.approx_tokens(ln)) for n, ln in zip(names, lengths, strict=True) if ln
        }
        return BoardSize(
            board_id=board_id,
            version=int(version),
            bytes=int(nbytes),
            tokens=int(ntokens),
            keys=per_key,
        )

    async def fingerprint(self, board_id: str) -> str:
        """A hash of the board's content (not its version): equal content, equal
        fingerprint, whatever the JSON member order. Built from the per-key hashes the
        commit keeps, so it costs O(keys), not O(board bytes); the supervisor's loop
        detection (route.lua) compares the same per-key hashes inside its script."""
        async with redis_failures(f"read board {board_id!r}"):
            hashes = cast("dict[str, str]", await self.redis.hgetall(self.keys(board_id).khash))
        return codec.content_hash(",".join(f"{k}={hashes[k]}" for k in sorted(hashes)))

    async def history(
        self, board_id: str, *, start: int = 1, end: int | None = None, limit: int | None = None
    ) -> list[LogEntry]:
        """Log entries with ``start <= version <= end``, oldest first.

        On a compacted board (:meth:`compact`) the log starts at its ``history_from``:
        a range reaching below it lists from there; one wholly below it raises
        :class:`HistoryCompacted`."""
        if (limit is not None and limit < 1) or (end is not None and end < 0):
            raise ConfigError(
                f"history(start={start}, end={end}, limit={limit}): end must be "
                ">= 0 and limit >= 1."
            )
        keys = self.keys(board_id)
        async with redis_failures(f"read the history of board {board_id!r}"):
            version, since = await self.redis.hmget(keys.meta, "version", "history_from")
        if version is None:
            raise await self.not_found(board_id)
        history_from = int(since or 0)
        if end is not None and end < history_from:
            raise HistoryCompacted(board_id, end, history_from, int(version))
        hi = "+" if end is None else f"{end}-0"
        async with redis_failures(f"read the history of board {board_id!r}"):
            rows = cast(
                "list[tuple[str, dict[str, str]]]",
                await self.redis.xrange(
                    keys.log, f"{max(start, history_from, 1)}-0", hi, count=limit
                ),
            )
        where = f"the log of board {board_id!r}"
        return [history.entry_from_stream(i, f, where) for i, f in rows]

    async def compact(self, board_id: str, below: int, *, keep_compliant: bool = False) -> int:
        """Drop the board's history below version ``below``, as far as a snapshot allows,
        and return S, the oldest version it can still rebuild (its ``history_from``).

        S is the newest snapshot at or below ``below`` (version 0 always has one): log
        entries and snapshots older than S go, in one atomic script; every version from
        S on reads, diffs and lists exactly as before, and commits carry on. Reading a
        version below S raises :class:`HistoryCompacted`. Running it again with the same
        or a lower ``below`` changes nothing.

        ``keep_compliant``: never go past the board's compliant version, the target of the
        supervisor's audit rollback (``below`` is lowered to it, in the same script); the
        CLI's ``compact`` always sets it, as should anything compacting a supervised board.

        Raises:
            BoardNotFound; ValidationFailed: ``below`` is not in ``0..current``.
        """
        keys = self.keys(board_id)
        async with redis_failures(f"compact board {board_id!r} below version {below}"):
            reply = await self._compact_script(
                keys=[keys.meta, keys.snapshots, keys.snapshot_index, keys.log],
                args=[below, "1" if keep_compliant else "0"],
            )
        if reply[0] == "notfound":
            raise await self.not_found(board_id)
        if reply[0] == "range":
            check_version(board_id, below, int(reply[1]))
        history_from = int(reply[1])
        log.info(
            "compacted board %s below v%d: history from v%d (%d log entries, %d snapshots dropped)",
            board_id,
            below,
            history_from,
            int(reply[2]),
            int(reply[3]),
        )
        return history_from

    async def diff(self, board_id: str, v1: int, v2: int) -> list[dict[str, Any]]:
        """RFC 6902 patch taking the board at ``v1`` to the board at ``v2``."""
        a = await self.read(board_id, at=v1)
        b = await self.read(board_id, at=v2)
        ops: list[dict[str, Any]] = jsonpatch.make_patch(a.data, b.data).patch
        return ops

    # -- commits (the protocol is commits.Committer's) -------------------------------
    # commit awaits the protocol's steps as it always did; the other steps are plain
    # methods returning the committer's coroutine, awaited by the caller directly, so
    # the supervisor's commit path costs no extra coroutine.

    async def commit(
        self,
        board_id: str,
        proposal: Proposal,
        *,
        kind: CommitKind = "write",
        outcome: str = "",
    ) -> CommitResult:
        """Validate and commit one proposal atomically.

        ``kind="write"`` requires the author to own every key written. Other kinds are
        the supervisor's own commits (rollback, summary, approval, system), authorised
        by it; the author is recorded as given.

        Raises:
            BoardNotFound, ValidationFailed, OwnershipError, ConflictError,
            ProposalRejected (archived board), StoreUnavailable.
        """
        prepared = await self.committer.prepare(board_id, proposal, kind, outcome)
        if isinstance(prepared, CommitResult):
            return prepared
        return await self.committer.run(board_id, proposal, prepared)

    def prepare(
        self,
        board_id: str,
        proposal: ProposalFields,
        *,
        kind: CommitKind = "write",
        outcome: str = "",
    ) -> Coroutine[Any, Any, PreparedCommit | CommitResult]:
        """Validate a proposal and compute the commit script's KEYS and ARGV without
        running it (or the earlier commit, for a proposal id already committed).

        :meth:`commit` is ``prepare`` + the script + :meth:`finish`; the supervisor uses
        the parts to run the commit and its routing as one script.
        """
        return self.committer.prepare(board_id, proposal, kind, outcome)

    def finish(
        self,
        board_id: str,
        proposal: ProposalFields,
        reply: list[Any],
        *,
        replicas: int | None = None,
    ) -> Coroutine[Any, Any, CommitResult]:
        """Turn the commit script's reply into a result (or the typed rejection).

        With ``Settings.wait_replicas``, ``replicas`` is the reply of the
        :meth:`wait_command` the caller sent right after the script, on the same
        connection (WAIT counts the replicas that have that connection's writes)."""
        return self.committer.finish(board_id, proposal, reply, replicas=replicas)

    def commit_command(self, prepared: PreparedCommit) -> Command:
        """The commit script call for :meth:`prepare`'s result, to send with other
        commands (:class:`~blackboard.connection.Pipeliner`); :meth:`finish` reads its
        reply."""
        return self.committer.commit_command(prepared)

    def wait_command(self) -> tuple[str, int, int]:
        """The WAIT to send after a commit when ``Settings.wait_replicas`` is set."""
        return self.committer.wait_command()

    def preview(
        self,
        board_id: str,
        proposal: Proposal,
        *,
        extra: Iterable[str] = (),
        kind: CommitKind = "write",
    ) -> Coroutine[Any, Any, Preview]:
        """The board as it would be after ``proposal``, limited to the keys it touches,
        reads and ``extra`` (e.g. the keys policies read), without committing.

        Validates like :meth:`commit` (shape, keys, ownership for ``write``, types,
        sizes) and reports per-key versions so the caller can decide about staleness.
        """
        return self.committer.preview(board_id, proposal, extra=extra, kind=kind)

    async def rollback(
        self,
        board_id: str,
        *,
        to: int,
        author: str,
        reason: str = "",
        trace_id: str = "",
        proposal_id: str | None = None,
        keep: Sequence[str] = (),
    ) -> CommitResult:
        """Restore the content of version ``to`` as a new ``rollback`` commit. History
        is never rewritten; the log records who rolled back, why, and from where.

        ``keep``: keys left as they are now (a flag keeps what people set, say); every
        other key gets exactly version ``to``'s content.

        A concurrent commit landing meanwhile makes it recompute on fresh state (bounded
        by ``settings.conflict_retries``), never overwrite blindly.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ConflictError),
            stop=stop_after_attempt(self.settings.conflict_retries + 1),
            reraise=True,
        )
        proposal_id = proposal_id or new_id()
        try:
            Proposal(
                author=author,
                base=0,
                patch=[],
                proposal_id=proposal_id,
                reason=reason,
                trace_id=trace_id,
            )
        except PydanticValidationError as exc:
            raise ConfigError(
                f"invalid rollback argument: {exc.errors()[0]['msg']} "
                f"({exc.errors()[0]['loc'][0]})."
            ) from exc
        schema = await self.declarations.schema_for(board_id)
        async for attempt in retrying:
            with attempt:
                current = await self.read(board_id)
                check_version(board_id, to, current.version)
                target = await self.read(board_id, at=to)
                ops: list[dict[str, Any]] = []
                for key in sorted(set(current.data) | set(target.data)):
                    if key in keep:
                        continue
                    if key not in target.data:
                        ops.append({"op": "remove", "path": f"/{key}"})
                    elif key not in current.data or codec.dumps(current.data[key]) != codec.dumps(
                        target.data[key]
                    ):
                        ops.append({"op": "add", "path": f"/{key}", "value": target.data[key]})
                why = reason or f"rollback to version {to}"
                # Keys left alone join the read set: a commit to any of them racing this
                # rollback is a conflict (and a recomputation), so the result is exactly
                # version `to`'s content.
                written = {o["path"][1:] for o in ops}
                untouched = [k for k in schema.keys if k not in written and k not in keep]
                proposal = Proposal(
                    author=author,
                    base=current.version,
                    patch=ops,
                    reads=untouched,
                    reason=why,
                    trace_id=trace_id,
                    proposal_id=proposal_id,
                )
                if not ops:  # already identical: still recorded, as a no-op rollback
                    return await self.committer.record_noop(
                        board_id, proposal, kind="rollback", outcome="no-op"
                    )
                return await self.commit(
                    board_id, proposal, kind="rollback", outcome=f"restored:{to}"
                )
        raise AssertionError("unreachable")  # pragma: no cover
