"""A work queue on one Redis Stream with one consumer group.

At-least-once delivery: an entry stays pending until acknowledged. An entry held by a
consumer known to be dead (its process stopped beating: :class:`Liveness`) is claimed by
the next consumer that asks, seconds after the death, well before any activation timeout
it could trip; an entry left pending longer than ``claim_idle_ms`` (a consumer that never
beat, presumably dead) is claimed too. Every delivery is counted by Redis, and an entry
delivered more than ``max_deliveries`` times goes to the dead-letter stream, written
*before* the ack so a crash between the two duplicates a dead letter rather than losing
the entry.
Consumers survive a Redis restart: a missing group is recreated.

Known traps handled here (DESIGN §11): streams are never trimmed past an entry any
group still holds pending; blocking reads stay well under any socket timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from blackboard.keys import GlobalKeys
from blackboard.outages import OUTAGE
from blackboard.records import Submission

__all__ = [
    "LIVENESS_MS",
    "OUTAGE",
    "RUNNING_FIELD",
    "Delivery",
    "Liveness",
    "WorkQueue",
    "shard_of",
    "submission_stream",
    "submit",
    "trim_floor",
    "trim_stream",
]


log = logging.getLogger(__name__)

LIVENESS_MS = 5_000
"""How long a consumer counts as alive after its last beat. A process beats five times
in that time, so only a process that stopped (killed, frozen, cut off) loses it; its
pending entries are then taken over within about this long, well below the timeouts
they could trip (the examples' activations: 30 s)."""
RUNNING_FIELD = "run"
"""Field of an entry on an agent's submission stream carrying its 'running' mark: the
activation record as the agent started it, which the supervisor writes (an agent's Redis
user cannot write the board's activation records; see ``supervisor/authentication.py``)."""
FORGET_MS = 86_400_000
"""A consumer that has not beaten for a day is dropped from the set of known consumers
(the idle-time reclaim took its entries long ago)."""


class Liveness:
    """Keeps one consumer name alive while its process runs: a key with a short TTL,
    refreshed every fifth of it, and the name in the set of consumers that beat. A
    consumer in that set whose key expired is dead, and the entries it holds are taken
    over by the next consumer of their queue that asks (:meth:`WorkQueue.take`), instead
    of waiting for ``claim_idle_ms`` of idle time.

    Args:
        redis: client with ``decode_responses=True``.
        keys: the deployment's key names.
        consumer: the consumer name (one per process, on all its queues).
        ttl_ms: see :data:`LIVENESS_MS`.
    """

    def __init__(
        self, redis: Redis, keys: GlobalKeys, consumer: str, *, ttl_ms: int = LIVENESS_MS
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.ttl_ms = ttl_ms
        self._beats = 0

    async def beat(self) -> None:
        now = int(time.time() * 1000)
        # The beat's time first: a reader in between sees a consumer not yet alive,
        # never one alive that has not beaten.
        await self.redis.zadd(self.keys.consumers, {self.consumer: now})
        await self.redis.set(self.keys.live(self.consumer), now, px=self.ttl_ms)
        self._beats += 1
        if self._beats % 1000 == 1:  # now and then: the long-gone are forgotten
            await self.redis.zremrangebyscore(self.keys.consumers, "-inf", now - FORGET_MS)

    async def run(self, stop: asyncio.Event) -> None:
        """Beat until ``stop`` is set (surviving outages), then let go of the name: what
        this consumer still holds is taken over at once."""
        every = self.ttl_ms / 5000
        try:
            while not stop.is_set():
                try:
                    await self.beat()
                except OUTAGE as exc:  # the next beat may get through
                    log.warning("consumer %s: liveness beat failed: %s", self.consumer, exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)
        finally:
            with contextlib.suppress(*OUTAGE):
                await self.redis.delete(self.keys.live(self.consumer))


@dataclass(frozen=True)
class Delivery:
    entry_id: str
    fields: dict[str, str]
    deliveries: int
    """How many times Redis has delivered this entry, this delivery included."""


class WorkQueue:
    """One stream + one consumer group.

    Args:
        redis: client with ``decode_responses=True``.
        stream: the stream key.
        group: the consumer group (all instances of one consumer role share it).
        dead_letters: stream receiving entries that exhausted their deliveries.
        max_deliveries: deliveries before dead-lettering.
        claim_idle_ms: idle time after which a pending entry is reclaimed.
        keys: the deployment's key names; with them, the entries of a consumer known
            to be dead (:class:`Liveness`) are reclaimed as soon as it is.
        liveness_ms: the consumers' :class:`Liveness` TTL.
    """

    def __init__(
        self,
        redis: Redis,
        stream: str,
        group: str,
        *,
        dead_letters: str,
        max_deliveries: int = 5,
        claim_idle_ms: int = 30_000,
        keys: GlobalKeys | None = None,
        liveness_ms: int = LIVENESS_MS,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.dead_letters = dead_letters
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self.keys = keys
        self.liveness_ms = liveness_ms
        source = resources.files("blackboard").joinpath("lua", "forget_consumer.lua")
        self._forget = redis.register_script(source.read_text())
        self._beat_s = min(liveness_ms / 5000, 1.0)
        """The longest time between two looks for entries to reclaim."""
        self._ready = False
        self._next_reclaim = 0.0

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._ready = True

    async def put(self, fields: dict[str, Any]) -> str:
        return cast(str, await self.redis.xadd(self.stream, cast(Any, fields)))

    async def take(self, consumer: str, *, count: int = 10, block_ms: int = 500) -> list[Delivery]:
        """Reclaimed entries of dead consumers first, then new ones (blocking up to
        ``block_ms`` when there is nothing to reclaim). Reclaiming is checked at most
        every half ``claim_idle_ms``, and at least every second."""
        if not self._ready:
            await self.ensure_group()
        try:
            now = time.monotonic()
            if now >= self._next_reclaim:
                self._next_reclaim = now + min(self.claim_idle_ms / 2000, self._beat_s)
                reclaimed = await self._reclaim(consumer, count)
                if reclaimed:
                    self._next_reclaim = 0.0  # there may be more
                    return reclaimed
        except redis_errors.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the server restarted without persistence
                self._ready = False
                return []
            raise
        return await self.take_new(consumer, count=count, block_ms=block_ms)

    def reclaim_due(self) -> bool:
        """Whether :meth:`take` would look for entries to reclaim."""
        return time.monotonic() >= self._next_reclaim

    async def take_new(
        self, consumer: str, *, count: int = 10, block_ms: int | None = None
    ) -> list[Delivery]:
        """New entries only, none reclaimed (without ``block_ms``, at once: maybe none).
        A consumer reads its next batch this way while still working on the last one:
        reclaiming then could hand it an entry it is working on."""
        if not self._ready:
            await self.ensure_group()
        entries = await self._read(consumer, ">", count, block_ms)
        return [Delivery(i, f, 1) for i, f in entries if f is not None]

    async def holds(self, consumer: str) -> bool:
        """Whether ``consumer`` holds entries (read, not acknowledged): what a process
        restarted under the name of one that was killed must work on first."""
        if not self._ready:
            await self.ensure_group()
        info = await self.redis.xpending(self.stream, self.group)
        return bool(info["pending"]) and any(str(c["name"]) == consumer for c in info["consumers"])

    async def take_own(self, consumer: str, *, after: str = "0", count: int = 10) -> list[Delivery]:
        """This consumer's own pending entries (read, not acknowledged) after ``after``,
        oldest first. After an outage in the middle of a batch they come before
        anything new, so that what was read keeps its order. Each is at least its
        second delivery. Entries trimmed from the stream meanwhile are acknowledged."""
        if not self._ready:
            await self.ensure_group()
        entries = await self._read(consumer, after, count, None)
        gone = [i for i, f in entries if not f]
        if gone:
            await self.redis.xack(self.stream, self.group, *gone)
        return [Delivery(i, f, 2) for i, f in entries if f]

    async def _read(
        self, consumer: str, after: str, count: int, block_ms: int | None
    ) -> list[tuple[str, dict[str, str] | None]]:
        """XREADGROUP from ``after`` (">": new entries); none if the group is gone."""
        try:
            reply = await self.redis.xreadgroup(
                self.group, consumer, {self.stream: after}, count=count, block=block_ms
            )
        except redis_errors.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the server restarted without persistence
                self._ready = False
                return []
            raise
        rows = cast(Any, reply)
        return cast("list[tuple[str, dict[str, str] | None]]", rows[0][1] if rows else [])

    async def _reclaim(self, consumer: str, count: int) -> list[Delivery]:
        dead = await self._reclaim_dead(consumer, count)
        if dead:
            return dead
        claimed = await self.redis.xautoclaim(
            self.stream, self.group, consumer, self.claim_idle_ms, "0-0", count=count
        )
        entries = [(i, f) for i, f in claimed[1] if f is not None]
        for deleted in claimed[2] if len(claimed) > 2 else []:
            await self.redis.xack(self.stream, self.group, deleted)  # trimmed away: nothing to do
        return await self._counted(consumer, entries)

    async def dead_consumers(self, consumer: str) -> list[str]:
        """Consumers other than ``consumer`` holding entries of this queue whose process
        stopped beating (in the set of consumers that beat, their liveness key gone)."""
        if self.keys is None:
            return []
        info = await self.redis.xpending(self.stream, self.group)
        if not info["pending"]:
            return []
        names = [str(c["name"]) for c in info["consumers"] if str(c["name"]) != consumer]
        if not names:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.zscore(self.keys.consumers, name)
            pipe.exists(self.keys.live(name))
        replies = await pipe.execute()
        return [
            name
            for i, name in enumerate(names)
            if replies[2 * i] is not None and not replies[2 * i + 1]
        ]

    async def _reclaim_dead(self, consumer: str, count: int) -> list[Delivery]:
        """The entries of dead consumers (:meth:`dead_consumers`), claimed at once. Two
        consumers claiming the same one: XCLAIM's minimum idle time (half the TTL, which
        a dead consumer's entries have all passed) lets only the first have it."""
        entries: list[tuple[str, dict[str, str]]] = []
        counts: dict[str, int] = {}
        for name in await self.dead_consumers(consumer):
            rows = cast(
                "list[dict[str, Any]]",
                await self.redis.xpending_range(
                    self.stream, self.group, min="-", max="+", count=count, consumername=name
                ),
            )
            ids: list[Any] = [str(r["message_id"]) for r in rows]
            if not ids:
                continue
            counts.update({str(r["message_id"]): int(r["times_delivered"]) + 1 for r in rows})
            claimed = cast(
                "list[tuple[str, dict[str, str] | None]]",
                await self.redis.xclaim(
                    self.stream, self.group, consumer, self.liveness_ms // 2, ids
                ),
            )
            gone = [i for i, f in claimed if not f]
            if gone:  # trimmed away (older servers return them): nothing to do
                await self.redis.xack(self.stream, self.group, *gone)
            entries += [(i, f) for i, f in claimed if f]
            log.info(
                "took over %d entries of dead consumer %s on %s", len(claimed), name, self.stream
            )
            if len(rows) < count:  # all it held: the group forgets it (unless it read more)
                await self._forget(keys=[self.stream], args=[self.group, name])
            if len(entries) >= count:
                break
        entries.sort(key=lambda e: tuple(map(int, e[0].split("-"))))  # stream order
        return await self._counted(consumer, entries, counts)

    async def _counted(
        self,
        consumer: str,
        entries: list[tuple[str, dict[str, str]]],
        counts: dict[str, int] | None = None,
    ) -> list[Delivery]:
        """Reclaimed entries with their delivery counts (read here unless given); those
        past ``max_deliveries`` dead-lettered instead."""
        if not entries:
            return []
        if counts is None:
            counts = await self._counts(consumer, entries)
        result = []
        for entry_id, fields in entries:
            delivery = Delivery(entry_id, fields, counts.get(entry_id, 2))
            if delivery.deliveries > self.max_deliveries:
                await self.dead_letter(
                    delivery,
                    f"delivered {delivery.deliveries} times without being "
                    f"acknowledged (max_deliveries={self.max_deliveries})",
                )
            else:
                result.append(delivery)
        return result

    async def _counts(
        self, consumer: str, entries: list[tuple[str, dict[str, str]]]
    ) -> dict[str, int]:
        pending = await self.redis.xpending_range(
            self.stream,
            self.group,
            min=entries[0][0],
            max=entries[-1][0],
            count=len(entries) * 2,
            consumername=consumer,
        )
        return {str(p["message_id"]): int(p["times_delivered"]) for p in pending}

    async def ack(self, entry_id: str) -> None:
        await self.redis.xack(self.stream, self.group, entry_id)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move an entry to the dead-letter stream (written before the ack)."""
        await self.redis.xadd(
            self.dead_letters,
            cast(
                Any,
                {
                    **delivery.fields,
                    "dl_stream": self.stream,
                    "dl_group": self.group,
                    "dl_entry": delivery.entry_id,
                    "dl_deliveries": delivery.deliveries,
                    "dl_reason": reason,
                    "dl_ts": int(time.time() * 1000),
                },
            ),
        )
        await self.ack(delivery.entry_id)
        log.warning("dead-lettered %s from %s: %s", delivery.entry_id, self.stream, reason)

    async def trim(self) -> int:
        """Drop entries every group of the stream is done with (see :func:`trim_stream`)."""
        return await trim_stream(self.redis, self.stream)


def _next_id(entry_id: str) -> str:
    ms, seq = entry_id.split("-")
    return f"{ms}-{int(seq) + 1}"


def _older(a: str, b: str) -> str:
    return min(a, b, key=lambda i: tuple(map(int, i.split("-"))))


async def trim_floor(redis: Redis, stream: str) -> str | None:
    """The oldest entry id some consumer group of ``stream`` still needs (pending in it,
    or not yet delivered to it); None if no group reads the stream."""
    try:
        groups = await redis.xinfo_groups(stream)
    except redis_errors.ResponseError as exc:  # no such stream
        if "no such key" in str(exc).lower():
            return None
        raise
    floor: str | None = None
    for group in groups:
        needed = _next_id(str(group["last-delivered-id"]))
        if int(group["pending"]):
            info = await redis.xpending(stream, group["name"])
            if info["min"] is not None:
                needed = _older(str(info["min"]), needed)
        floor = needed if floor is None else _older(floor, needed)
    return floor


async def trim_stream(redis: Redis, stream: str) -> int:
    """Drop the entries of ``stream`` every group is done with; how many went.

    A group reading between the look and the trim only moves forward, and an entry
    reclaimed is one still pending: neither is below the floor."""
    floor = await trim_floor(redis, stream)
    if floor is None:
        return 0
    return int(await redis.xtrim(stream, minid=floor, approximate=False))


def shard_of(board_id: str, shards: int) -> int:
    """Which of the supervisor's submission streams carries a board's submissions."""
    return zlib.crc32(board_id.encode()) % shards


def submission_stream(
    keys: GlobalKeys, submission: Submission, shards: int = 1, *, by_supervisor: bool = False
) -> str:
    """Where a submission goes: the supervisor's own reports (``by_supervisor``) to its
    stream, an operator's command to the operators' stream, anything else to its
    author's own stream. The supervisor takes the author from the stream it
    arrives on (see ``supervisor/authentication.py``), so with per-role Redis users
    (``blackboard acl``) nobody can submit under another's name."""
    shard = shard_of(submission.board_id, shards)
    if by_supervisor:
        return keys.reports(shard)
    if submission.kind == "command":
        return keys.commands(shard)
    return keys.submissions(submission.author, shard)


async def submit(
    redis: Redis,
    prefix: str,
    submission: Submission,
    shards: int = 1,
    *,
    report: str = "",
    by_supervisor: bool = False,
) -> str:
    """Append a submission to the supervisor's stream for its author (what agents and
    the CLI call). ``report``: the activation's final record (JSON), which the supervisor
    writes when it closes the activation (an agent's user cannot write board keys)."""
    fields = {"s": submission.model_dump_json()}
    if report:
        fields["a"] = report
    stream = submission_stream(GlobalKeys(prefix), submission, shards, by_supervisor=by_supervisor)
    return cast(str, await redis.xadd(stream, cast(Any, fields)))
