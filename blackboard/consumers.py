"""Who consumes a queue, read for people: each consumer with its liveness (the
heartbeats of :class:`~blackboard.queues.Liveness`), what it holds, and the queue's
backlog (entries in flight and entries no consumer has been given yet).

A consumer group lists a consumer only once it has been given an entry (Redis 7.0
creates none for an empty read), so a process that beats is also counted as a queue's
consumer by its name: ``NAME-…`` for an agent NAME's instances, ``sup-…`` for the
supervisor replicas (their default names; a custom ``--name`` is seen once it has
been given work)."""

from __future__ import annotations

import time
from typing import Any, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from blackboard.keys import GlobalKeys
from blackboard.store import redis_failures
from blackboard.views import Instance

__all__ = ["QueueState", "consumers", "sharing"]

QueueState = tuple[list[Instance], int, int]
"""A queue's consumers, entries in flight (delivered, not acknowledged), entries waiting
(not delivered to the group yet)."""


async def consumers(
    redis: Redis, keys: GlobalKeys, queues: list[tuple[str, str, str]]
) -> list[QueueState]:
    """The state of each (stream, consumer group, name prefix of its consumers), in
    two round trips for all (three if Redis cannot count a group's backlog).

    Raises:
        StoreUnavailable: Redis is unreachable or refused.
    """
    if not queues:
        return []
    async with redis_failures("read the queues"):
        pipe = redis.pipeline(transaction=False)
        pipe.zrange(keys.consumers, 0, -1, withscores=True)
        for stream, group, _ in queues:
            pipe.xinfo_groups(stream)
            pipe.xinfo_consumers(stream, group)
            pipe.xlen(stream)
        beating, *replies = await pipe.execute(raise_on_error=False)
        last_beat = {str(n): int(s) for n, s in _ok(beating, [])}
        mine = _by_prefix(list(last_beat), [prefix for _, _, prefix in queues])
        found: list[tuple[dict[str, Any] | None, dict[str, int], int]] = []
        for i, (_, group, _) in enumerate(queues):
            groups, members, length = replies[3 * i : 3 * i + 3]
            matching = [g for g in _ok(groups, []) if str(g["name"]) == group]
            holding = {n: 0 for n in mine[i]} | {
                str(c["name"]): int(c["pending"]) for c in _ok(members, [])
            }
            found.append((matching[0] if matching else None, holding, _ok(length, 0)))
        names = [name for _, holding, _ in found for name in holding]
        pipe = redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(keys.live(name))
        alive = dict(zip(names, await pipe.execute(), strict=True))
        now = int(time.time() * 1000)
        out = []
        for (stream, _, _), (info, holding, length) in zip(queues, found, strict=True):
            instances = [
                Instance(
                    name=name,
                    alive=bool(alive[name]),
                    beat_age_ms=max(0, now - last_beat[name]) if name in last_beat else None,
                    in_flight=held,
                )
                for name, held in sorted(holding.items())
            ]
            out.append((instances, *await _backlog(redis, stream, info, length)))
    return out


async def sharing(
    redis: Redis, keys: GlobalKeys, streams: list[str], group: str, prefix: str
) -> QueueState:
    """The state of several streams one consumer group reads together (the supervisor
    replicas read every submission stream), as one queue: each consumer once, holding
    what it holds on all of them, the backlogs added up.

    Raises:
        StoreUnavailable: Redis is unreachable or refused.
    """
    states = await consumers(redis, keys, [(s, group, prefix) for s in streams])
    by_name: dict[str, Instance] = {}
    for instances, _, _ in states:
        for instance in instances:
            seen = by_name.get(instance.name)
            if seen is not None:
                instance = seen.model_copy(
                    update={"in_flight": seen.in_flight + instance.in_flight}
                )
            by_name[instance.name] = instance
    return (
        [by_name[name] for name in sorted(by_name)],
        sum(in_flight for _, in_flight, _ in states),
        sum(waiting for _, _, waiting in states),
    )


def _by_prefix(names: list[str], prefixes: list[str]) -> list[list[str]]:
    """Per prefix, the names that are it or start with it and a dash (the longest
    prefix wins: ``risk-2-host-1-abc`` is agent ``risk-2``'s, not ``risk``'s)."""
    out: list[list[str]] = [[] for _ in prefixes]
    for name in names:
        best = max(
            (i for i, p in enumerate(prefixes) if name == p or name.startswith(p + "-")),
            key=lambda i: len(prefixes[i]),
            default=None,
        )
        if best is not None:
            out[best].append(name)
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
