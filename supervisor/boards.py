"""What one supervisor process keeps per board: the locks that make a board's
submissions go one at a time in this process, the status it last saw, and the board's
deadline. Each cache is bounded like the store's (cleared when full: a miss only costs a
read)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from blackboard.app import Limits
from blackboard.keys import GlobalKeys
from blackboard.status import STOPPED

__all__ = ["Boards"]


class Boards:
    """Per-board locks and caches of one supervisor process.

    Args:
        redis: where a board's deadline is read on a miss.
        keys: the deployment's key names.
        limits: the app's limits (whether it sets a board deadline at all).
        limit: the most boards a cache holds.
    """

    def __init__(self, redis: Redis, keys: GlobalKeys, limits: Limits, *, limit: int) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits
        self.limit = limit
        self.locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        """Board id -> its lock and how many hold or await it (gone when none does)."""
        self._status: dict[str, str] = {}
        self._deadlines: dict[str, int] = {}

    # -- one submission at a time per board ---------------------------------------

    @contextlib.asynccontextmanager
    async def serial(self, board_id: str) -> AsyncIterator[None]:
        """One submission at a time per board in this process (from the stream or from
        agents in this process): a join must see its branches' commits one after the
        other, or two of them could both find every branch done and fire it twice."""
        lock, users = self.locks.setdefault(board_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self.locks[board_id]

    async def hold(self, board_id: str) -> bool:
        """Take the board's :meth:`serial` lock if nobody holds or awaits it (without
        waiting); False if somebody does. :meth:`unhold` lets it go."""
        if board_id in self.locks:
            return False
        lock = asyncio.Lock()
        await lock.acquire()  # free: returns at once
        self.locks[board_id] = (lock, [1])
        return True

    def unhold(self, board_id: str) -> None:
        lock, users = self.locks[board_id]
        lock.release()
        users[0] -= 1
        if not users[0]:
            del self.locks[board_id]

    # -- the status last seen -------------------------------------------------------

    def saw(self, board_id: str, status: str) -> None:
        """Note the status a routing step left the board in."""
        if len(self._status) >= self.limit:
            self._status.clear()
        self._status[board_id] = status

    def stopped(self, board_id: str) -> bool:
        """Whether this process last saw the board escalated, done or failed."""
        return self._status.get(board_id) in STOPPED

    # -- deadlines ------------------------------------------------------------------

    def started(self, board_id: str, deadline: int) -> None:
        """Note the deadline a board was given as it started."""
        self._deadlines[board_id] = deadline

    async def deadline(self, board_id: str) -> int:
        """A board's deadline (ms; 0: none) is fixed when it starts: cached."""
        if self.limits.deadline_s is None:
            return 0  # this app sets none
        if board_id not in self._deadlines:
            raw = await self.redis.hget(self.keys.board(board_id).meta, "deadline_ms")
            if len(self._deadlines) >= self.limit:
                self._deadlines.clear()
            self._deadlines[board_id] = int(raw or 0)
        return self._deadlines[board_id]
