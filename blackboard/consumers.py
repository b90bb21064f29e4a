"""Who consumes a queue, read for people: each consumer with its liveness (the
heartbeats of :class:`~blackboard.queues.Liveness`), what it holds, and the queue's
backlog (entries in flight and entries no consumer has been given yet)."""

from __future__ import annotations

import time
from typing import Any, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from blackboard.keys import GlobalKeys
from blackboard.store import redis_failures
from blackboard.views import Instance

__all__ = ["QueueState", "consumers"]

QueueState = tuple[list[Instance], int, int]
"""A queue's consumers, entries in flight (delivered, not acknowledged), entries waiting
(not delivered to the group yet)."""


async def consumers(
    redis: Redis, keys: GlobalKeys, queues: list[tuple[str, str]]
) -> list[QueueState]:
    """The state of each (stream, consumer group), in two round trips for all (three
    if Redis cannot count a group's backlog).

    Raises:
        StoreUnavailable: Redis is unreachable or refused.
    """
    if not queues:
        return []
    async with redis_failures("read the queues"):
        pipe = redis.pipeline(transaction=False)
        for stream, group in queues:
            pipe.xinfo_groups(stream)
            pipe.xinfo_consumers(stream, group)
            pipe.xlen(stream)
        replies = await pipe.execute(raise_on_error=False)
        found: list[tuple[dict[str, Any] | None, list[dict[str, Any]], int]] = []
        for i, (_, group) in enumerate(queues):
            groups, members, length = replies[3 * i : 3 * i + 3]
            mine = [g for g in _ok(groups, []) if str(g["name"]) == group]
            found.append((mine[0] if mine else None, _ok(members, []), _ok(length, 0)))
        pipe = redis.pipeline(transaction=False)
        for _, members, _ in found:
            for c in members:
                pipe.exists(keys.live(str(c["name"])))
                pipe.zscore(keys.consumers, str(c["name"]))
        beats = iter(await pipe.execute())
        now = int(time.time() * 1000)
        out = []
        for (stream, _), (info, members, length) in zip(queues, found, strict=True):
            instances = []
            for c in members:
                alive, last = next(beats), next(beats)
                instances.append(
                    Instance(
                        name=str(c["name"]),
                        alive=bool(alive),
                        beat_age_ms=None if last is None else max(0, now - int(last)),
                        in_flight=int(c["pending"]),
                    )
                )
            out.append((instances, *await _backlog(redis, stream, info, length)))
    return out


async def _backlog(
    redis: Redis, stream: str, group: dict[str, Any] | None, length: int
) -> tuple[int, int]:
    """(in flight, waiting) of a queue's group; with no group yet, every entry waits."""
    if group is None:
        return 0, length
    lag = group.get("lag")
    if lag is None:  # Redis cannot tell after deletions: count what follows
        after = f"({group['last-delivered-id']}"
        lag = len(cast(list[Any], await redis.xrange(stream, after, "+", count=100_000)))
    return int(group["pending"]), int(lag)


def _ok(reply: Any, default: Any) -> Any:
    """A pipelined reply, or ``default`` where Redis answered an error (no such stream
    or group yet: nothing consumed it)."""
    if isinstance(reply, redis_errors.ResponseError):
        return default
    if isinstance(reply, Exception):
        raise reply
    return reply
