"""Incidents: what happened to a board that a person should see (a rollback, a
compensation, a request for human input, a fatal error), appended to its incident
stream. Routing (``lua/route.lua``) records its own (a loop tripped, a budget spent)."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from blackboard.keys import GlobalKeys

__all__ = ["Incidents"]


class Incidents:
    def __init__(self, redis: Redis, keys: GlobalKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def record(
        self, board_id: str, kind: str, detail: str, version: int | None = None
    ) -> None:
        """Record an incident at ``version``, or (None) at the version the board is at."""
        bk = self.keys.board(board_id)
        if version is None:
            version = int(await self.redis.hget(bk.meta, "version") or 0)
        await self.redis.xadd(
            bk.incidents,
            {"kind": kind, "detail": detail, "version": version, "ts": int(time.time() * 1000)},
        )
