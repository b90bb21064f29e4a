"""Putting a dead letter back on the stream it came from.

It belongs with :class:`~blackboard.queues.WorkQueue` (``blackboard/queues.py``, which
writes dead letters); it stands apart only while that module is being reworked, and
moves there as is.
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from blackboard.errors import CorruptData, redis_failures

__all__ = ["retry_dead_letter"]


async def retry_dead_letter(redis: Redis, dead_letters: str, entry_id: str) -> str | None:
    """Re-queue dead letter ``entry_id`` of the stream ``dead_letters`` on the stream it
    came from (its ``dl_*`` fields dropped) and remove it, in one MULTI/EXEC watching
    the dead letters: two retries of one letter re-queue it once. Returns the new
    entry's id; None if there is no such dead letter (retried already, say).

    Raises:
        CorruptData: the letter does not say which stream it came from.
    """

    async def move(pipe: Pipeline) -> None:
        rows = cast(
            "list[tuple[str, dict[str, str]]]", await pipe.xrange(dead_letters, entry_id, entry_id)
        )
        if not rows:
            return
        fields = rows[0][1]
        stream = fields.get("dl_stream")
        if not stream:
            raise CorruptData(
                f"dead letter {entry_id} has no dl_stream field, so where it came from is "
                "unknown; it was not written by this package. Re-queue it by hand or drop it."
            )
        pipe.multi()  # type: ignore[no-untyped-call]
        pipe.xadd(stream, cast(Any, {k: v for k, v in fields.items() if not k.startswith("dl_")}))
        pipe.xdel(dead_letters, entry_id)

    async with redis_failures(f"retry dead letter {entry_id}"):
        done = await redis.transaction(move, dead_letters)
    return str(done[0]) if done else None
