"""Bounded memory: what the supervisor drops from Redis, on a schedule.

- **Streams** (the submission streams it reads, every agent's queue) are trimmed with
  ``XTRIM MINID`` at the oldest entry some consumer group still needs: the oldest one
  pending (delivered, not acknowledged) or, with none pending, the first not yet
  delivered. Never a blind ``MAXLEN``, which drops entries still pending (DESIGN §11). A
  stream no group reads is left alone: nobody has taken what is in it.
- **Proposal records** (id -> version, outcome, routing done) of commits older than
  ``records_window_s`` (7 days) are dropped from live boards; the board's ``records_from``
  says from which version they are all kept, and the intake refuses a proposal based
  on an earlier version whose record is gone (never re-applied).
- **Boards that are done** (or failed) are archived out of Redis by an
  :class:`ArchivePolicy` after a grace period: its ``archive`` callable exports the
  board's log to a file and then removes it (by default
  ``blackboard.lifecycle.archive_board``, the same as ``blackboard archive``).

Every replica may run this: trimming is idempotent, and a board is archived by one
replica at a time (a short claim on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from blackboard.supervisor.authentication import KEPT_FROM
from redis import exceptions as redis_errors

from blackboard.keys import GlobalKeys
from blackboard.lifecycle import archive_board
from blackboard.outages import OUTAGE, ride_out
from blackboard.queues import trim_stream
from blackboard.status import BoardStatus
from blackboard.store import BoardStore

__all__ = ["ArchivePolicy", "Retention", "archive_into"]

log = logging.getLogger(__name__)

RECORDS_WINDOW_S = 7 * 86_400.0
"""How long a commit's proposal records (id -> version, outcome, routed) are kept."""
SWEEP = 1_000
"""Log entries looked at per board per round."""

TRIM_EVERY_S = 10.0
"""How often the streams are trimmed: often enough that a stream holds about this many
seconds of traffic beyond what is still pending."""

Archive = Callable[[BoardStore, str, Path], Awaitable[Path]]
"""Export a board's log under a directory, then remove the board; returns the file."""


async def archive_into(store: BoardStore, board_id: str, directory: Path) -> Path:
    """The default :data:`Archive`: :func:`~blackboard.lifecycle.archive_board` to
    ``<directory>/<board_id>.json`` (what ``blackboard import`` loads back)."""
    return await archive_board(store, board_id, directory / f"{board_id}.json")


@dataclass
class ArchivePolicy:
    """Archive boards that are done or failed, ``after_s`` after their last change.

    Attributes:
        directory: where the exports go.
        after_s: grace period after the board's last change (an operator may look).
        per_round: most boards archived per round (keeps a round short).
        archive: the export-then-remove step (default :func:`archive_into`).
    """

    directory: Path
    after_s: float = 3600.0
    per_round: int = 100
    archive: Archive = archive_into
    statuses: tuple[str, ...] = (BoardStatus.DONE, BoardStatus.FAILED)
    """Which boards count as finished."""


class Retention:
    """The supervisor's housekeeping: trims streams, archives finished boards.

    Args:
        store: the board store.
        streams: the streams to trim (beside every agent's queue).
        agents: the app's agent names (their queues are trimmed).
        policy: archive finished boards this way (None: never).
        every_s: time between two rounds.
        records_window_s: how long proposal records are kept (see :data:`KEPT_FROM`).
    """

    def __init__(
        self,
        store: BoardStore,
        streams: Sequence[str],
        agents: Sequence[str],
        *,
        policy: ArchivePolicy | None = None,
        every_s: float = TRIM_EVERY_S,
        records_window_s: float = RECORDS_WINDOW_S,
    ) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = GlobalKeys(store.settings.key_prefix)
        self.streams = [*streams, *(self.keys.queue(a) for a in agents)]
        self.policy = policy
        self.every_s = every_s
        self.records_window_s = records_window_s
        self._cursor = 0
        self._records_cursor = 0

    async def round(self) -> tuple[int, int]:
        """One round: (entries trimmed, boards archived)."""
        trimmed = 0
        for stream in self.streams:
            try:
                trimmed += await trim_stream(self.redis, stream)
            except redis_errors.ResponseError as exc:  # e.g. not a stream: leave it be
                log.warning("retention: cannot trim %s: %s", stream, exc)
        forgotten = await self.forget_old_records()
        if forgotten:
            log.info("retention: dropped the records of %d old proposals", forgotten)
        archived = await self.archive_finished() if self.policy is not None else 0
        return trimmed, archived

    async def forget_old_records(self) -> int:
        """:meth:`forget_records` on a page of the board index (all of it over rounds)."""
        cursor, ids = await self.redis.zscan(self.keys.boards, self._records_cursor, count=200)
        self._records_cursor = int(cursor)
        return sum([await self.forget_records(str(b)) for b, _ in ids])

    async def forget_records(self, board_id: str) -> int:
        """Drop the proposal records of the board's commits older than the window
        (oldest first, up to :data:`SWEEP`), then move its ``records_from`` past them."""
        bk = self.keys.board(board_id)
        kept = int(await self.redis.hget(bk.meta, KEPT_FROM) or 1)
        cutoff = time.time() * 1000 - self.records_window_s * 1000
        old: list[tuple[str, dict[str, str]]] = []
        rows = cast(
            "list[tuple[str, dict[str, str]]]",
            await self.redis.xrange(bk.log, min=f"{kept}-0", count=SWEEP),
        )
        for entry_id, fields in rows:
            if int(fields.get("ts") or 0) > cutoff:
                break
            old.append((entry_id, fields))
        if not old:
            return 0
        pids = [f["proposal"] for _, f in old if f.get("proposal")]
        pipe = self.redis.pipeline(transaction=True)
        # (records_from first moves up, so the intake refuses before a record is gone)
        pipe.hset(bk.meta, KEPT_FROM, int(old[-1][0].split("-")[0]) + 1)
        if pids:
            pipe.hdel(bk.committed, *pids)
            pipe.hdel(bk.results, *pids)
            pipe.hdel(bk.routed, *pids)
        await pipe.execute()
        return len(pids)

    async def archive_finished(self) -> int:
        """Archive up to ``per_round`` finished boards past the grace period, walking the
        board index a page per round (the whole index is seen over several rounds)."""
        policy = self.policy
        assert policy is not None
        cursor, ids = await self.redis.zscan(
            self.keys.boards, self._cursor, count=max(policy.per_round * 4, 100)
        )
        self._cursor = int(cursor)
        board_ids = [str(b) for b, _ in ids]
        if not board_ids:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for board_id in board_ids:
            pipe.hmget(self.keys.board(board_id).meta, ["status", "updated"])
        now_ms = time.time() * 1000
        due = [
            board_id
            for board_id, (status, updated) in zip(board_ids, await pipe.execute(), strict=True)
            if status in policy.statuses and float(updated or 0) <= now_ms - policy.after_s * 1000
        ]
        archived = 0
        for board_id in due[: policy.per_round]:
            claim = self.keys.board(board_id).archiving
            if not await self.redis.set(claim, "1", nx=True, px=60_000):
                continue  # another replica has it
            try:
                path = await policy.archive(self.store, board_id, policy.directory)
                archived += 1
                log.info("archived board %s to %s", board_id, path)
            except Exception as exc:  # this board stays; the others go on (and it, next time)
                if isinstance(exc, OUTAGE) and not await self._answers():
                    raise  # Redis is away: the round is ridden out
                log.exception("retention: archiving board %s failed", board_id)
            finally:
                await self.redis.delete(claim)
        return archived

    async def _answers(self) -> bool:
        """Whether Redis answers: an OSError while archiving is a full disk as often as
        a lost connection, and only the latter is an outage to ride out."""
        try:
            await self.redis.ping()
        except OUTAGE:
            return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds every ``every_s`` until ``stop`` is set, riding out outages."""
        while not stop.is_set():
            try:
                async for attempt in ride_out("retention", log, stop=_stopped(stop)):
                    with attempt:
                        await self.round()
            except OUTAGE:  # (re-raised only once stopping)
                pass
            except Exception:  # housekeeping never stops the supervisor: next round
                log.exception("retention: a round failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)


def _stopped(stop: asyncio.Event) -> Any:
    """A tenacity stop condition: give up retrying once ``stop`` is set."""
    return lambda _state: stop.is_set()
