"""Which schema each board is declared with.

A board stores its declaration (JSON Schema and ownership) and its digest; a process
validates commits with the Python model it registered under the same digest. This
module keeps the registered schemas, a bounded cache of board -> digest (so a commit
does not read the digest again), and says "no such board" with close ids as hints.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from contextlib import suppress
from typing import cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from blackboard.errors import BoardNotFound, ConfigError, redis_failures
from blackboard.keys import GlobalKeys
from blackboard.schema import BoardSchema

__all__ = ["Declarations"]


class Declarations:
    """The schemas of one store's boards.

    Args:
        redis: the store's client (``decode_responses=True``).
        keys: the store's global keys (the board index, for suggestions).
    """

    CACHE_LIMIT = 10_000
    """Boards whose declaration digest is cached; past it the cache starts over, so a
    long-running process does not grow with every board it ever saw."""

    def __init__(self, redis: Redis, keys: GlobalKeys) -> None:
        self.redis = redis
        self._global = keys
        self._schemas: dict[str, BoardSchema] = {}
        self._digests: dict[str, str] = {}

    def register(self, schema: BoardSchema) -> None:
        """Make a schema available to validate commits on boards declared with it."""
        if schema.model is None:
            raise ConfigError(
                f"schema {schema.name} has no Python model; build it with "
                "BoardSchema.from_model to validate writes."
            )
        self._schemas[schema.digest] = schema

    def registered(self, digest: str) -> BoardSchema | None:
        """The schema registered under ``digest``, if this process registered one."""
        return self._schemas.get(digest)

    def remember(self, board_id: str, digest: str) -> None:
        """Note that ``board_id`` is declared under ``digest`` (newest wins)."""
        if len(self._digests) >= self.CACHE_LIMIT:
            self._digests.clear()
        self._digests[board_id] = digest

    def forget(self, board_id: str) -> None:
        """Drop what is known of ``board_id`` (deleted, re-declared): read it again."""
        self._digests.pop(board_id, None)

    def known(self, board_id: str) -> str | None:
        """The digest cached for ``board_id`` (None: not cached)."""
        return self._digests.get(board_id)

    def __len__(self) -> int:
        """How many boards' digests are cached."""
        return len(self._digests)

    async def warm(self, board_ids: Iterable[str]) -> None:
        """Learn which declaration each board not seen yet is under, all in one round
        trip: a supervisor about to commit to a hundred new boards reads them together,
        not one at a time. Only a speed-up: a board it cannot read (not a board, an
        error reply) is left to fail where it is used, with that board's own error."""
        cold = []
        for board_id in dict.fromkeys(board_ids):
            if board_id not in self._digests:
                with suppress(ConfigError):  # not even a valid id
                    cold.append((board_id, self._global.board(board_id).meta))
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
            if isinstance(digest, str) and board_id not in self._digests:
                self.remember(board_id, digest)

    async def declaration(self, board_id: str) -> BoardSchema:
        """The board's declaration as stored in Redis (describes; cannot validate)."""
        async with redis_failures(f"read the declaration of board {board_id!r}"):
            key = self._global.board(board_id).declaration
            text = cast("str | None", await self.redis.get(key))
        if text is None:
            raise await self.not_found(board_id)
        return BoardSchema.from_json(text, f"the declaration of board {board_id!r}")

    async def schema_for(self, board_id: str) -> BoardSchema:
        """The registered schema that validates commits to ``board_id``.

        Raises:
            BoardNotFound: no such board.
            ConfigError: this process registered no schema of the board's digest.
        """
        digest = self._digests.get(board_id)
        if digest is None:
            async with redis_failures(f"read board {board_id!r}"):
                meta = self._global.board(board_id).meta
                digest = cast("str | None", await self.redis.hget(meta, "decl"))
            if digest is None:
                raise await self.not_found(board_id)
            self.remember(board_id, digest)
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

    async def not_found(self, board_id: str) -> BoardNotFound:
        """The error for a missing board, suggesting live ids close to ``board_id``."""
        try:
            known = cast("list[str]", await self.redis.zrange(self._global.boards, 0, 9999))
        except redis_errors.RedisError:
            known = []
        return BoardNotFound(board_id, difflib.get_close_matches(board_id, known, n=3))
