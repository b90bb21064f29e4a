"""The board store: create, read, commit, roll back, archive boards in Redis.

Every change goes through one atomic server-side script (``lua/commit.lua``): it
re-checks per-key versions of the keys written and read (serializable commits: no lost
update, no write skew), writes only the changed keys, bumps the version, appends the log
entry, records the proposal id, keeps size accounting and snapshots, and publishes an
event. The store validates before it: patch shape, declared keys, ownership, types and
size limits. A rejected proposal changes nothing.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast, get_args

import jsonpatch
from pydantic import ValidationError as PydanticValidationError
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from blackboard import codec, history
from blackboard import patch as patches
from blackboard.config import Settings
from blackboard.connection import Command, connect
from blackboard.errors import (
    AlreadyDecided,
    BoardExists,
    BoardNotFound,
    BoardStopped,
    ConfigError,
    ConflictError,
    OwnershipError,
    ProposalRejected,
    StoreUnavailable,
    ValidationFailed,
)
from blackboard.keys import BoardKeys, GlobalKeys, check_board_id
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

__all__ = ["BoardStore", "PreparedCommit", "redis_failures"]

log = logging.getLogger(__name__)

_COMMIT_KINDS: tuple[str, ...] = get_args(CommitKind)
_COMMITTED = "a value of the board being committed to"  # (no message built per commit)


def _lua(name: str) -> str:
    return resources.files("blackboard").joinpath("lua", name).read_text()


@dataclass(frozen=True)
class PreparedCommit:
    """The commit script's KEYS and ARGV for one validated proposal (see ``prepare``)."""

    keys: list[str]
    args: list[Any]


@asynccontextmanager
async def redis_failures(what: str) -> AsyncIterator[None]:
    """Redis failures surface as StoreUnavailable, the redis error kept as the cause
    (``what``: what was being done, for the message)."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise StoreUnavailable(
            f"Redis unreachable while trying to {what}: {str(exc).rstrip('.')}. Check that "
            "the server is up and BLACKBOARD_REDIS_URL points at it."
        ) from exc
    except redis_errors.RedisError as exc:
        raise StoreUnavailable(f"Redis refused to {what}: {str(exc).rstrip('.')}.") from exc


class BoardStore:
    """All boards of one deployment (one Redis and key prefix).

    Args:
        redis: an asyncio client created with ``decode_responses=True``.
        settings: limits and snapshot policy; default from the environment.
    """

    def __init__(self, redis: Redis, settings: Settings | None = None) -> None:
        if not redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ConfigError(
                "the Redis client must be created with decode_responses=True; "
                "or let BoardStore.from_url() create it."
            )
        self.redis = redis
        self.settings = settings or Settings.from_env()
        self._global = GlobalKeys(self.settings.key_prefix)
        self._schemas: dict[str, BoardSchema] = {}
        self._board_digest: dict[str, str] = {}
        self._closed = False
        self._commit_script = redis.register_script(_lua("commit.lua"))
        self._create_script = redis.register_script(_lua("create.lua"))
        self._read_at_script = redis.register_script(_lua("read_at.lua"))

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
        return self._global.board(board_id)

    # -- declarations ---------------------------------------------------------------

    def register(self, schema: BoardSchema) -> None:
        """Make a schema available to validate commits on boards declared with it."""
        if schema.model is None:
            raise ConfigError(
                f"schema {schema.name} has no Python model; build it with "
                "BoardSchema.from_model to validate writes."
            )
        self._schemas[schema.digest] = schema

    CACHE_LIMIT = 10_000
    """Boards whose declaration digest is cached; past it the cache starts over, so a
    long-running process does not grow with every board it ever saw."""

    def _remember(self, board_id: str, digest: str) -> None:
        if len(self._board_digest) >= self.CACHE_LIMIT:
            self._board_digest.clear()
        self._board_digest[board_id] = digest

    async def warm(self, board_ids: Iterable[str]) -> None:
        """Learn which declaration each board not seen yet is under, all in one round
        trip: a supervisor about to commit to a hundred new boards reads them together,
        not one at a time. Only a speed-up: a board it cannot read (not a board, an
        error reply) is left to fail where it is used, with that board's own error."""
        cold = []
        for board_id in dict.fromkeys(board_ids):
            if board_id not in self._board_digest:
                with suppress(ConfigError):  # not even a valid id
                    cold.append((board_id, self.keys(board_id).meta))
        if not cold:
            return
        pipe = self.redis.pipeline(transaction=False)
        for _, meta in cold:
            pipe.hget(meta, "decl")
        async with redis_failures(f"read the declarations of {len(cold)} boards"):
            digests = await pipe.execute(raise_on_error=False)
        for (board_id, _), digest in zip(cold, digests, strict=True):
            # Not over what was learnt meanwhile (a board re-created under another
            # declaration while this round trip was out): that is newer.
            if isinstance(digest, str) and board_id not in self._board_digest:
                self._remember(board_id, digest)

    async def declaration(self, board_id: str) -> BoardSchema:
        """The board's declaration as stored in Redis (describes; cannot validate)."""
        async with redis_failures(f"read the declaration of board {board_id!r}"):
            text = cast("str | None", await self.redis.get(self.keys(board_id).declaration))
        if text is None:
            raise await self._not_found(board_id)
        return BoardSchema.from_json(text, f"the declaration of board {board_id!r}")

    async def _schema_for(self, board_id: str) -> BoardSchema:
        digest = self._board_digest.get(board_id)
        if digest is None:
            async with redis_failures(f"read board {board_id!r}"):
                digest = cast("str | None", await self.redis.hget(self.keys(board_id).meta, "decl"))
            if digest is None:
                raise await self._not_found(board_id)
            self._remember(board_id, digest)
        schema = self._schemas.get(digest)
        if schema is None:
            stored = await self.declaration(board_id)
            raise ConfigError(
                f"board {board_id!r} is declared with schema {stored.name!r} (digest "
                f"{digest}), which this process has not registered; register the same "
                "board model (store.register(BoardSchema.from_model(Model))). A different "
                "digest means this process runs a different version of the model."
            )
        return schema

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
            state[key] = self._checked_value(schema, key, value)
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
        self._remember(board_id, schema.digest)
        log.info("board created", extra={"board": board_id, "schema": schema.name})
        return await self.info(board_id)

    async def info(self, board_id: str) -> BoardInfo:
        infos = await self._infos([board_id])
        if not infos:
            raise await self._not_found(board_id)
        return infos[0]

    async def boards(
        self, *, archived: bool = False, offset: int = 0, limit: int = 1000
    ) -> list[BoardInfo]:
        """Boards in creation order, from the board index (no key scans)."""
        index = self._global.archived if archived else self._global.boards
        async with redis_failures("list boards"):
            ids = cast("list[str]", await self.redis.zrange(index, offset, offset + limit - 1))
        return await self._infos(ids)

    _INFO = ("version", "status", "compliant", "decl", "bytes", "tokens", "created", "updated")

    async def _infos(self, board_ids: Iterable[str]) -> list[BoardInfo]:
        ids = list(board_ids)
        async with redis_failures("read board metadata"):
            pipe = self.redis.pipeline(transaction=False)
            for board_id in ids:
                self._read_info(pipe, board_id)
            replies = await pipe.execute()
        infos = (self._info(b, replies[2 * i], replies[2 * i + 1]) for i, b in enumerate(ids))
        return [info for info in infos if info is not None]

    def _read_info(self, pipe: Pipeline, board_id: str) -> None:
        """Queue the two reads :meth:`_info` makes a :class:`BoardInfo` of."""
        keys = self.keys(board_id)
        pipe.hmget(keys.meta, self._INFO)
        pipe.get(keys.declaration)

    def _info(self, board_id: str, meta: list[str | None], decl: str | None) -> BoardInfo | None:
        if meta[0] is None or decl is None:
            return None  # index entry of a board whose creation did not finish
        m = cast("dict[str, str]", dict(zip(self._INFO, meta, strict=True)))
        declaration = codec.loads(decl, f"the declaration of board {board_id!r}")
        try:
            return BoardInfo(
                board_id=board_id,
                schema_name=declaration["name"],
                digest=m["decl"],
                status=m["status"],
                version=int(m["version"]),
                compliant=int(m["compliant"]),
                bytes=int(m["bytes"]),
                tokens=int(m["tokens"]),
                created_ms=int(m["created"]),
                updated_ms=int(m["updated"]),
            )
        except (KeyError, TypeError, ValueError) as exc:  # ValueError: pydantic's too
            raise codec.corrupt(
                f"the metadata of board {board_id!r}", f"is not what this package writes ({exc!r})"
            ) from exc

    async def archive(self, board_id: str) -> None:
        """Freeze a board: readable (content, history), refuses commits, listed apart."""
        await self.info(board_id)
        async with redis_failures(f"archive board {board_id!r}"):
            await self.redis.hset(self.keys(board_id).meta, "status", "archived")
            await self.redis.zadd(self._global.archived, {board_id: time.time() * 1000})
            await self.redis.zrem(self._global.boards, board_id)

    async def delete(self, board_id: str) -> None:
        """Remove a board and its whole history. Irreversible; prefer :meth:`archive`."""
        await self.info(board_id)
        async with redis_failures(f"delete board {board_id!r}"):
            await self.redis.unlink(*self.keys(board_id).all())
            await self.redis.zrem(self._global.boards, board_id)
            await self.redis.zrem(self._global.archived, board_id)
        self._board_digest.pop(board_id, None)

    async def _not_found(self, board_id: str) -> BoardNotFound:
        try:
            known = cast("list[str]", await self.redis.zrange(self._global.boards, 0, 9999))
        except redis_errors.RedisError:
            known = []
        return BoardNotFound(board_id, difflib.get_close_matches(board_id, known, n=3))

    # -- reads ----------------------------------------------------------------------

    async def version(self, board_id: str) -> int:
        async with redis_failures(f"read board {board_id!r}"):
            raw = await self.redis.hget(self.keys(board_id).meta, "version")
        if raw is None:
            raise await self._not_found(board_id)
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
                raise await self._not_found(board_id)
            if reply[0] == "range":
                self._check_version(board_id, at, int(reply[1]))
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
                raise await self._not_found(board_id)
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
            raise await self._not_found(board_id)
        if raw is None:  # unset, or not a key at all: tell the two apart
            schema = self._schemas.get(digest) or await self.declaration(board_id)
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
        """Log entries with ``start <= version <= end``, oldest first."""
        if (limit is not None and limit < 1) or (end is not None and end < 0):
            raise ConfigError(
                f"history(start={start}, end={end}, limit={limit}): end must be "
                ">= 0 and limit >= 1."
            )
        keys = self.keys(board_id)
        await self.version(board_id)
        hi = "+" if end is None else f"{end}-0"
        async with redis_failures(f"read the history of board {board_id!r}"):
            rows = cast(
                "list[tuple[str, dict[str, str]]]",
                await self.redis.xrange(keys.log, f"{max(start, 1)}-0", hi, count=limit),
            )
        where = f"the log of board {board_id!r}"
        return [history.entry_from_stream(i, f, where) for i, f in rows]

    async def diff(self, board_id: str, v1: int, v2: int) -> list[dict[str, Any]]:
        """RFC 6902 patch taking the board at ``v1`` to the board at ``v2``."""
        a = await self.read(board_id, at=v1)
        b = await self.read(board_id, at=v2)
        ops: list[dict[str, Any]] = jsonpatch.make_patch(a.data, b.data).patch
        return ops

    @staticmethod
    def _check_version(board_id: str, at: int, current: int) -> None:
        if not 0 <= at <= current:
            raise ValidationFailed(
                f"board {board_id!r} has versions 0..{current}; version {at} does not exist.",
                rule="version",
                expected=f"0 <= version <= {current}",
            )

    # -- writes ---------------------------------------------------------------------

    def _checked_value(self, schema: BoardSchema, key: str, value: Any) -> str:
        text = codec.dumps(value)
        limit = self.settings.max_value_bytes
        if (size := codec.utf8_len(text)) > limit:
            raise ValidationFailed(
                f"value of key {key!r} is {size} bytes, over the "
                f"{limit}-byte limit (max_value_bytes). Store less (summarise, or keep a "
                "reference to the data instead of the data).",
                key=key,
                rule="max_value_bytes",
                expected=f"<= {limit} bytes",
            )
        schema.validate_json(key, text)
        return text

    def _check_author(self, schema: BoardSchema, author: str, keys: Iterable[str]) -> None:
        keys = tuple(keys)
        if keys and all(schema.owner(k) == author for k in keys):
            return  # the common case, without building the ownership map
        owned = schema.owners()
        if author not in owned:
            raise OwnershipError(
                f"author {author!r} owns no key of board schema {schema.name}; known "
                f"authors are {', '.join(sorted(owned))}. Propose as the agent that owns "
                "the key.",
                author=author,
            )
        for key in keys:
            if schema.owner(key) != author:
                raise OwnershipError(
                    f"author {author!r} may not write key {key!r}: it is owned by "
                    f"{schema.owner(key)!r}. Write only your own keys, or hand off to "
                    "its owner.",
                    author=author,
                    key=key,
                )

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
        prepared = await self.prepare(board_id, proposal, kind=kind, outcome=outcome)
        if isinstance(prepared, CommitResult):
            return prepared
        return await self._run(board_id, proposal, prepared)

    async def _run(self, board_id: str, proposal: Proposal, call: PreparedCommit) -> CommitResult:
        """Run the commit script (with WAIT after it if asked) and read its reply."""
        acked = None
        async with redis_failures(f"commit to board {board_id!r}"):
            if not self.settings.wait_replicas:
                reply = await self._commit_script(keys=call.keys, args=call.args)
            else:  # WAIT counts replicas that have this connection's writes: send it
                # on the connection that ran the script, right after it
                pipe = self.redis.pipeline(transaction=False)
                await self._commit_script(keys=call.keys, args=call.args, client=pipe)
                pipe.execute_command(*self.wait_command())
                reply, acked = await pipe.execute()
        return await self.finish(board_id, proposal, reply, replicas=acked)

    async def prepare(
        self,
        board_id: str,
        proposal: ProposalFields,
        *,
        kind: CommitKind = "write",
        outcome: str = "",
    ) -> PreparedCommit | CommitResult:
        """Validate a proposal and compute the commit script's KEYS and ARGV without
        running it (or the earlier commit, for a proposal id already committed).

        :meth:`commit` is ``prepare`` + the script + :meth:`finish`; the supervisor uses
        the parts to run the commit and its routing as one script.
        """
        if kind not in _COMMIT_KINDS:
            raise ConfigError(
                f"unknown commit kind {kind!r}; use one of {', '.join(_COMMIT_KINDS)}."
            )
        schema = await self._schema_for(board_id)
        patch_text = codec.dumps(proposal.patch)
        if (size := codec.utf8_len(patch_text)) > self.settings.max_patch_bytes:
            raise ValidationFailed(
                f"patch is {size} bytes, over the "
                f"{self.settings.max_patch_bytes}-byte limit (max_patch_bytes). Split it "
                "or store less.",
                rule="max_patch_bytes",
                expected=f"<= {self.settings.max_patch_bytes} bytes",
            )
        plan = patches.plan(proposal.patch, schema)
        if kind == "write":
            self._check_author(schema, proposal.author, plan.writes)
        reads = [schema.check_key(k).name for k in proposal.reads]
        if plan.blind:
            writes = []
            for op in plan.ops:
                key = op["path"][1:]
                if op["op"] == "remove":
                    writes.append((key, "remove", ""))
                else:
                    action = "set" if op["op"] == "add" else "replace"
                    writes.append((key, action, self._checked_value(schema, key, op["value"])))
            undo = ""
        else:
            applied = await self._apply(board_id, schema, proposal, plan)
            if isinstance(applied, CommitResult):
                return applied
            writes, unchanged, undo = applied
            reads += unchanged
        return self._commit_call(
            board_id,
            schema,
            proposal,
            kind,
            outcome,
            patch_text,
            writes,
            # Every key involved but not sent as a write is re-checked by the script,
            # including written keys whose value turned out unchanged.
            [*dict.fromkeys(k for k in [*reads, *plan.reads] if k not in {w[0] for w in writes})],
            undo,
        )

    async def finish(
        self,
        board_id: str,
        proposal: ProposalFields,
        reply: list[Any],
        *,
        replicas: int | None = None,
    ) -> CommitResult:
        """Turn the commit script's reply into a result (or the typed rejection).

        With ``Settings.wait_replicas``, ``replicas`` is the reply of the
        :meth:`wait_command` the caller sent right after the script, on the same
        connection (WAIT counts the replicas that have that connection's writes)."""
        result = await self._answer(board_id, proposal, reply)
        if self.settings.wait_replicas and not result.duplicate:
            if replicas is None:
                raise ConfigError(
                    "wait_replicas is set but no WAIT reply was given: send wait_command() "
                    "after the commit script, on its connection, and pass its reply."
                )
            result.replicas = self._replicated(board_id, result.version, int(replicas))
        return result

    def commit_command(self, prepared: PreparedCommit) -> Command:
        """The commit script call for :meth:`prepare`'s result, to send with other
        commands (:class:`~blackboard.connection.Pipeliner`); :meth:`finish` reads its
        reply."""
        return ("script", (self._commit_script, prepared.keys, prepared.args), {})

    def wait_command(self) -> tuple[str, int, int]:
        """The WAIT to send after a commit when ``Settings.wait_replicas`` is set."""
        return ("WAIT", self.settings.wait_replicas, self.settings.wait_timeout_ms)

    async def _duplicate(self, board_id: str, version: int) -> CommitResult:
        """The answer to a proposal id that already committed: its version and keys."""
        rows = await self.redis.xrange(self.keys(board_id).log, f"{version}-0", f"{version}-0")
        keys = cast("list[tuple[str, dict[str, str]]]", rows)[0][1].get("keys", "") if rows else ""
        return CommitResult(
            board_id=board_id, version=version, duplicate=True, keys=keys.split(",") if keys else []
        )

    async def preview(
        self,
        board_id: str,
        proposal: Proposal,
        *,
        extra: Iterable[str] = (),
        kind: CommitKind = "write",
    ) -> Preview:
        """The board as it would be after ``proposal``, limited to the keys it touches,
        reads and ``extra`` (e.g. the keys policies read), without committing.

        Validates like :meth:`commit` (shape, keys, ownership for ``write``, types,
        sizes) and reports per-key versions so the caller can decide about staleness.
        """
        schema = await self._schema_for(board_id)
        plan = patches.plan(proposal.patch, schema)
        if kind == "write":
            self._check_author(schema, proposal.author, plan.writes)
        wanted = [*dict.fromkeys([*plan.writes, *plan.reads, *proposal.reads, *extra])]
        for key in wanted:
            schema.check_key(key)
        version, values, kvers, earlier = await self._fetch(board_id, wanted, proposal)
        before = {
            k: codec.loads(v, _COMMITTED)
            for k, v in zip(wanted, values, strict=True)
            if v is not None
        }
        touched = {k: before[k] for k in [*plan.writes, *plan.reads] if k in before}
        after = patches.apply_to(plan.ops, touched)
        view = {k: v for k, v in before.items() if k not in plan.writes}
        for key in plan.writes:
            if key in after:
                self._checked_value(schema, key, after[key])
                view[key] = after[key]
        return Preview(
            version=int(version),
            kvers={k: int(v or 0) for k, v in zip(wanted, kvers, strict=True)},
            view=view,
            writes=list(plan.writes),
            reads=list(plan.reads),
            duplicate_of=None if earlier is None else int(earlier),
            duplicate_keys=[]
            if earlier is None
            else (await self._duplicate(board_id, int(earlier))).keys,
        )

    async def _fetch(
        self, board_id: str, names: list[str], proposal: ProposalFields
    ) -> tuple[str, list[str | None], list[str | None], str | None]:
        """One consistent read: version, values and key versions of ``names``, and the
        version this proposal id committed as (if it did)."""
        keys = self.keys(board_id)
        async with redis_failures(f"read board {board_id!r}"):
            pipe = self.redis.pipeline(transaction=True)
            pipe.hget(keys.meta, "version")
            pipe.hmget(keys.state, names)
            pipe.hmget(keys.kver, names)
            pipe.hget(keys.proposals, proposal.proposal_id)
            version, values, kvers, earlier = await pipe.execute()
        if version is None:
            raise await self._not_found(board_id)
        return version, values, kvers, earlier

    async def _apply(
        self, board_id: str, schema: BoardSchema, proposal: ProposalFields, plan: patches.PatchPlan
    ) -> tuple[list[tuple[str, str, str]], list[str], str] | CommitResult:
        """Apply a non-blind patch to the current values of the keys it touches.

        Returns the writes, or the earlier commit if this proposal id already committed
        (checked first: a redelivered proposal must not turn into a conflict)."""
        touched = [*plan.writes, *plan.reads]
        version, values, kvers, earlier = await self._fetch(board_id, touched, proposal)
        if earlier is not None:
            return await self._duplicate(board_id, int(earlier))
        if proposal.base > int(version):
            self._check_version(board_id, proposal.base, int(version))
        changed = {
            k: int(v) for k, v in zip(touched, kvers, strict=True) if v and int(v) > proposal.base
        }
        if changed:
            raise ConflictError(board_id, proposal.base, changed)
        before = {
            k: codec.loads(v, _COMMITTED)
            for k, v in zip(touched, values, strict=False)
            if v is not None
        }
        after = patches.apply_to(plan.ops, before)
        writes: list[tuple[str, str, str]] = []
        unchanged: list[str] = []
        old_texts = dict(zip(touched, values, strict=False))
        for key in plan.writes:
            if key not in after:
                if key in before:
                    writes.append((key, "remove", ""))
                else:  # unset before and after (e.g. add then remove): no change
                    unchanged.append(key)
                continue
            text = self._checked_value(schema, key, after[key])
            if text == old_texts[key]:
                unchanged.append(key)
            else:
                writes.append((key, "set", text))
        changed_keys = [k for k, _, _ in writes]
        undo = patches.inverse(
            {k: before[k] for k in changed_keys if k in before},
            {k: after[k] for k in changed_keys if k in after},
        )
        return writes, unchanged, codec.dumps(undo)

    def _commit_call(
        self,
        board_id: str,
        schema: BoardSchema,
        proposal: ProposalFields,
        kind: CommitKind,
        outcome: str,
        patch_text: str,
        writes: list[tuple[str, str, str]],
        reads: list[str],
        undo: str,
    ) -> PreparedCommit:
        keys = self.keys(board_id)
        args: list[Any] = [
            schema.digest,
            proposal.base,
            proposal.proposal_id,
            self.settings.snapshot_min_bytes,
            keys.events,
            len(writes),
            len(reads),
            proposal.author,
            codec.dumps(proposal.author),
            kind,
            patch_text,
            undo,
            proposal.activation_id,
            proposal.trace_id,
            proposal.reason,
            outcome,
            board_id,
        ]
        for key, action, value in writes:
            args += [
                key,
                action,
                value,
                codec.fingerprint(value) if value else "",
            ]
        args.extend(reads)
        return PreparedCommit(keys=list(keys.commit), args=args)

    def _replicated(self, board_id: str, version: int, acked: int) -> int:
        wanted = self.settings.wait_replicas
        if acked < wanted:
            log.warning(
                "commit acknowledged by %d of %d replicas within %d ms",
                acked,
                wanted,
                self.settings.wait_timeout_ms,
                extra={"board": board_id, "version": version},
            )
        return acked

    async def _answer(
        self, board_id: str, proposal: ProposalFields, reply: list[Any]
    ) -> CommitResult:
        status = reply[0]
        if status == "ok":
            if log.isEnabledFor(logging.DEBUG):  # not building the record's fields otherwise
                log.debug(
                    "commit",
                    extra={
                        "board": board_id,
                        "version": int(reply[1]),
                        "author": proposal.author,
                        "trace": proposal.trace_id,
                    },
                )
            return CommitResult(
                board_id=board_id,
                version=int(reply[1]),
                snapshot=bool(reply[2]),
                keys=list(reply[3:]),
            )
        if status == "dup":
            return CommitResult(
                board_id=board_id, version=int(reply[1]), duplicate=True, keys=list(reply[2:])
            )
        if status == "conflict":
            changed = {reply[i]: int(reply[i + 1]) for i in range(1, len(reply), 2)}
            raise ConflictError(board_id, proposal.base, changed)
        if status == "missing":
            raise ValidationFailed(
                f"cannot {reply[2]} key {reply[1]!r}: it is not set on board {board_id!r}. "
                "Use 'add' to set a key that may be unset.",
                key=reply[1],
                rule="json_patch",
                expected="add for an unset key",
            )
        if status == "ahead":
            self._check_version(board_id, proposal.base, int(reply[1]))
        if status == "decided":
            raise AlreadyDecided(
                f"proposal {proposal.proposal_id} on board {board_id!r} was "
                "already decided by the supervisor; see its recorded outcome."
            )
        if status == "stopped":
            raise BoardStopped(
                f"board {board_id!r} is {reply[1]}; it accepts no writes until an "
                "operator resumes it."
            )
        if status == "archived":
            raise ProposalRejected(
                f"board {board_id!r} is archived and accepts no commits; "
                "create a new board to continue the case."
            )
        if status == "decl":
            self._board_digest.pop(board_id, None)
            raise ConfigError(
                f"board {board_id!r} was re-declared (digest {reply[1]}) "
                "since this process read it; reload the board's schema."
            )
        self._board_digest.pop(board_id, None)
        raise await self._not_found(board_id)

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
        schema = await self._schema_for(board_id)
        async for attempt in retrying:
            with attempt:
                current = await self.read(board_id)
                self._check_version(board_id, to, current.version)
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
                if not ops:  # already identical: still recorded, as a no-op rollback
                    return await self._record_noop(
                        board_id, current.version, author, why, trace_id, proposal_id, untouched
                    )
                proposal = Proposal(
                    author=author,
                    base=current.version,
                    patch=ops,
                    reads=untouched,
                    reason=why,
                    trace_id=trace_id,
                    proposal_id=proposal_id,
                )
                return await self.commit(
                    board_id, proposal, kind="rollback", outcome=f"restored:{to}"
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _record_noop(
        self,
        board_id: str,
        base: int,
        author: str,
        reason: str,
        trace_id: str,
        proposal_id: str,
        reads: list[str],
    ) -> CommitResult:
        schema = await self._schema_for(board_id)
        proposal = Proposal(
            author=author,
            base=base,
            patch=[],
            reason=reason,
            trace_id=trace_id,
            proposal_id=proposal_id,
        )
        call = self._commit_call(
            board_id, schema, proposal, "rollback", "no-op", "[]", [], reads, "[]"
        )
        return await self._run(board_id, proposal, call)
