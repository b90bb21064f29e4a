"""Intake: how a supervisor takes submissions from its streams and works on them.

A consumer takes a batch (up to :data:`BATCH` entries), reads the next one ahead under
a backlog, keeps what its stream's author may send (:mod:`~blackboard.supervisor.
authentication`), and groups the batch by board, each board's submissions in stream order.
The common case goes in waves (:meth:`Intake.waves`): each board's next proposal on the
atomic path, every board's in one round trip, spread over :data:`LANES` lanes so that
this process and Redis work at once. A board leaves the waves at its first submission
that needs more, and the rest of its submissions go one by one (``handle``). The batch's
dispatches and acknowledgements are sent last (:meth:`RouteStep.flush`). An outage is
ridden out (:func:`~blackboard.outages.riding_out`): what this consumer read and did not
acknowledge is taken again first, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any, Protocol

from blackboard.supervisor.authentication import Authentication
from blackboard.supervisor.fast_paths import FastPaths, Planned
from tenacity import RetryCallState

from blackboard.connection import Command
from blackboard.errors import BoardNotFound
from blackboard.outages import OUTAGE, riding_out
from blackboard.queues import Delivery, WorkQueue
from blackboard.records import Outcome, Submission

__all__ = ["BATCH", "LANES", "Handle", "Intake"]

log = logging.getLogger(__name__)

BATCH = 1024
"""The most submissions a consumer takes at once. Only a backlog fills a batch (the
stream holds that many waiting), and then a bigger one goes faster: planning its first
wave, settling its last and acknowledging it cost this process or Redis time the other
cannot overlap, once per batch (100 boards: 128 -> 512, +15%; 512 -> 1024, +3% in
twelve interleaved rounds). Its activations are dispatched together once it is done:
under a backlog, a handoff waits for the rest of its batch (about 0.1 s at 10,000/s)."""
READ_AHEAD_IDLE_MS = 5_000
"""The shortest reclaim threshold (``claim_idle_ms``) with which a consumer reads its
next batch ahead: seconds above the time a batch takes (100 boards: about 50 ms)."""
LANES = 3
"""Lanes of waves at once (see :meth:`Intake.lanes`): while one lane's wave runs in
Redis, the next lane's is already written behind it and a third is planned here. As many
as the Pipeliner keeps in flight (:data:`~blackboard.connection.IN_FLIGHT`); more would
only queue behind them (the throughput bench, 100 boards: three beat two and four)."""
LANE_BOARDS = 4
"""Boards a lane needs at least: fewer, and the round trip a lane adds costs more than
the overlap saves."""

Queued = tuple[Delivery, Submission]
"""A submission taken from the stream, with its entry (to acknowledge it)."""
ByBoard = dict[str, deque[Queued]]
"""A batch's submissions by board, each board's in stream order."""


class Handle(Protocol):
    """One submission on the general path, in order (``Supervisor.handle``)."""

    def __call__(
        self, sub: Submission, *, ack: tuple[str, str, str], outgoing: list[Command]
    ) -> Awaitable[Outcome]: ...


class Intake:
    """Takes and works on the submissions of one supervisor process, with the fast
    paths' parts (the store, the routing step and its Pipeliner, the per-board locks).

    Args:
        name: this replica's consumer name.
        fast: plans and settles the atomic path.
        handle: handles one submission otherwise.
        authentication: decides, by the stream, which submissions are what they claim.
    """

    def __init__(
        self, name: str, fast: FastPaths, handle: Handle, authentication: Authentication
    ) -> None:
        self.name = name
        self.fast = fast
        self.handle = handle
        self.authentication = authentication
        self.store, self.router, self.boards = fast.store, fast.router, fast.boards

    async def consume(self, queue: WorkQueue, stop: asyncio.Event, batch: int) -> None:
        """Take and work on ``queue``'s submissions until ``stop`` is set (then what was
        read is finished); ``batch``: the most taken at once. Survives Redis outages."""
        reading = _Reading()
        with contextlib.suppress(*OUTAGE):  # (if Redis is away, the loop's first read says so)
            if await queue.holds(self.name):  # a predecessor of this name was killed
                reading.own = "0"

        def stopping(_: RetryCallState) -> bool:
            return stop.is_set()

        def broken(_: RetryCallState) -> None:
            # What this consumer read and did not acknowledge (the batch the outage
            # broke, the one read ahead) goes first, in stream order: a board's later
            # submissions must not be worked on before its earlier ones.
            reading.own = "0"
            reading.drop_ahead()

        try:
            while not stop.is_set() or reading.ahead is not None:  # stopping: finish it
                await riding_out(
                    f"supervisor {self.name}",
                    log,
                    lambda: self._step(queue, stop, batch, reading),
                    stop=stopping,
                    before_retry=broken,
                )
        except OUTAGE:  # Redis away as it stops: what it held stays pending, taken over
            if not stop.is_set():
                raise
        finally:
            reading.drop_ahead()
            await reading.dropped()

    async def _step(
        self, queue: WorkQueue, stop: asyncio.Event, batch: int, reading: _Reading
    ) -> None:
        """Take one batch (own entries first after an outage; the one read ahead; or
        new ones) and work on it."""
        if stop.is_set() and reading.ahead is None:
            return  # stopped while an outage was ridden out: nothing more is taken
        if reading.cancelled:  # the read-ahead an outage cancelled, finished with
            await reading.dropped()
        if reading.own is not None:
            deliveries = await queue.take_own(self.name, after=reading.own, count=batch)
            reading.own = deliveries[-1].entry_id if len(deliveries) >= batch else None
        elif reading.ahead is not None:
            taking, reading.ahead = reading.ahead, None
            deliveries = await taking
        else:
            deliveries = await queue.take(self.name, count=batch, block_ms=200)
        if reading.own is None and self.read_ahead(queue, deliveries, batch, stop):
            # A backlog: the next batch is read while this one is worked on (Redis
            # answers it between this one's waves). Read, not worked on: it starts once
            # this one is acknowledged.
            reading.ahead = asyncio.ensure_future(queue.take_new(self.name, count=batch))
        await self.work(queue, deliveries)

    @staticmethod
    def read_ahead(
        queue: WorkQueue, deliveries: list[Delivery], batch: int, stop: asyncio.Event
    ) -> bool:
        """Whether to read the next batch while this one is worked on: only with a
        backlog (a full batch), not when stopping, nor when reclaiming is due (the next
        read reclaims first). A batch read ahead waits for the one before it, idle in
        this consumer's hands: not when another consumer could reclaim it meanwhile."""
        return (
            len(deliveries) >= batch
            and not stop.is_set()
            and not queue.reclaim_due()
            and queue.claim_idle_ms >= READ_AHEAD_IDLE_MS
        )

    async def work(self, queue: WorkQueue, deliveries: list[Delivery]) -> None:
        """Work on one batch taken from ``queue``: in waves where it can, one by one
        where it must; then its dispatches and acknowledgements."""
        by_board: ByBoard = {}
        for d, sub in await self.authentication.screen(queue, deliveries):
            items = by_board.get(sub.board_id)
            if items is None:  # (setdefault would build a deque for every submission)
                items = by_board[sub.board_id] = deque()
            items.append((d, sub))
        outgoing: list[Command] = []
        try:
            rest = await self.lanes(queue, by_board, outgoing)
            await asyncio.gather(*(self.board_in_order(queue, items, outgoing) for items in rest))
        finally:
            failed = await self.router.flush(outgoing)  # dispatches, then acks
            if failed:
                log.error(
                    "%d dispatch commands failed; their submissions stay pending "
                    "and will be redelivered: %s",
                    len(failed),
                    failed[0],
                )

    async def lanes(
        self, queue: WorkQueue, by_board: ByBoard, outgoing: list[Command]
    ) -> list[list[Queued]]:
        """The batch's boards in :data:`LANES` disjoint lanes, each sending its own
        :meth:`waves`: while one lane's wave runs in Redis, the next lane's is planned
        here and written behind it (the Pipeliner keeps several round trips in flight),
        so this process and the server work at the same time instead of taking turns. A
        board is in one lane only, so its submissions keep their order."""
        count = min(LANES, len(by_board) // LANE_BOARDS)
        if count < 2:
            return await self.waves(queue, by_board, outgoing)
        lanes: list[ByBoard] = [{} for _ in range(count)]
        for i, (board_id, items) in enumerate(by_board.items()):
            lanes[i % count][board_id] = items
        tasks = [asyncio.ensure_future(self.waves(queue, lane, outgoing)) for lane in lanes]
        try:
            rests = await asyncio.gather(*tasks)
        except BaseException:  # one lane failed (an outage, say) or this was cancelled
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [items for rest in rests for items in rest]

    async def waves(
        self, queue: WorkQueue, by_board: ByBoard, outgoing: list[Command]
    ) -> list[list[Queued]]:
        """The common case in bulk: proposals that commit and route in one script go in
        waves, each board's next one, every board's in the same round trip, with no task
        per submission. A board leaves the waves at its first submission that needs the
        general path (or whose commit the script refused: the general path says why);
        that submission and the board's later ones are returned, in order, to be handled
        one by one. ``by_board`` is consumed."""
        rest: list[list[Queued]] = []
        while by_board:
            wave = await self.next_wave(by_board, rest)
            if not wave:
                break
            try:
                replies = await self.send_wave(wave)
                # Let the other lanes go on (a reply that came meanwhile, a wave queued
                # in the Pipeliner) before this one is settled and the next planned.
                await asyncio.sleep(0)
                if replies is None:  # no reply to read: each goes the general path
                    for delivery, planned in wave:
                        board_id = planned.sub.board_id
                        rest.append([(delivery, planned.sub), *by_board.pop(board_id, ())])
                    continue
                acked = replies[-1] if self.store.settings.wait_replicas else None
                start = 0
                for delivery, planned in wave:
                    mine = replies[start : start + len(planned.commands)]
                    start += len(mine)
                    ack = (queue.stream, queue.group, delivery.entry_id)
                    if not await self.settle_in_wave(planned, mine, acked, ack, outgoing):
                        board_id = planned.sub.board_id
                        rest.append([(delivery, planned.sub), *by_board.pop(board_id, ())])
            finally:
                for _, planned in wave:
                    self.boards.unhold(planned.sub.board_id)
        return rest

    async def send_wave(self, wave: list[tuple[Delivery, Planned]]) -> list[Any] | None:
        """Every planned call in one round trip (then one WAIT for them all, if asked);
        their replies, an error in place of any that failed; None if the round trip
        failed other than by an outage (a garbled reply, say)."""
        commands = [c for _, planned in wave for c in planned.commands] + self.fast.wait_commands()
        try:
            return await self.router.pipeliner.execute(*commands, raise_on_error=False)
        except OUTAGE:
            raise
        except Exception:
            log.exception("a round trip of %d proposals failed; one by one now", len(wave))
            return None

    async def next_wave(
        self,
        by_board: ByBoard,
        rest: list[list[Queued]],
    ) -> list[tuple[Delivery, Planned]]:
        """Each board's next submission, planned, its board held; boards whose next one
        needs the general path move from ``by_board`` to ``rest``."""
        wave: list[tuple[Delivery, Planned]] = []
        await self.store.warm(by_board)  # boards new to this process: one round trip
        try:
            for board_id, items in list(by_board.items()):
                delivery, sub = items[0]
                planned = None
                if self.fast.atomic(sub) and await self.boards.hold(board_id):
                    try:
                        planned = await self.fast.plan_routed(sub, "")
                    except Exception:  # e.g. an unknown board: the general path handles it
                        planned = None
                    finally:
                        if planned is None:  # also when cancelled
                            self.boards.unhold(board_id)
                if planned is None:
                    rest.append(list(by_board.pop(board_id)))
                    continue
                items.popleft()
                if not items:
                    del by_board[board_id]
                wave.append((delivery, planned))
        except BaseException:  # cancelled while planning: the boards held so far are freed
            for _, planned in wave:
                self.boards.unhold(planned.sub.board_id)
            raise
        return wave

    async def settle_in_wave(
        self,
        planned: Planned,
        replies: list[Any],
        acked: Any,
        ack: tuple[str, str, str],
        outgoing: list[Command],
    ) -> bool:
        """False if the submission needs the general path. An error is logged and the
        entry left pending (redelivered, then dead-lettered), as in :meth:`board_in_order`."""
        try:
            for reply in [*replies, acked]:
                if isinstance(reply, Exception):
                    raise reply
            commit = await self.fast.settle_routed(
                planned, replies[-1], ack, outgoing, replicas=acked
            )
            return commit is not None
        except OUTAGE:
            raise
        except Exception:
            sub = planned.sub
            log.exception("submission %s on board %s failed", sub.proposal_id, sub.board_id)
            return True

    async def board_in_order(
        self, queue: WorkQueue, items: list[Queued], outgoing: list[Command]
    ) -> None:
        for delivery, sub in items:  # one board's submissions in order: fewer conflicts
            try:
                ack = (queue.stream, queue.group, delivery.entry_id)
                async with self.boards.serial(sub.board_id):
                    await self.handle(sub, ack=ack, outgoing=outgoing)
            except OUTAGE:
                raise
            except BoardNotFound as exc:
                await queue.dead_letter(delivery, str(exc))
                continue
            except Exception:
                # Left pending: redelivered, then dead-lettered after max_deliveries.
                log.exception("submission %s on board %s failed", sub.proposal_id, sub.board_id)


class _Reading:
    """What a consumer reads beyond the batch in hand: after an outage, its own pending
    entries from ``own`` on; under a backlog, the next batch (``ahead``)."""

    def __init__(self) -> None:
        self.own: str | None = None
        self.ahead: asyncio.Future[list[Delivery]] | None = None
        self.cancelled: list[asyncio.Future[list[Delivery]]] = []

    def drop_ahead(self) -> None:
        """Cancel the read-ahead: its entries stay pending, taken again as own."""
        if self.ahead is not None:
            self.ahead.cancel()
            self.cancelled.append(self.ahead)
            self.ahead = None

    async def dropped(self) -> None:
        """Wait until the cancelled read-aheads are over."""
        if self.cancelled:
            cancelled, self.cancelled = self.cancelled, []
            await asyncio.gather(*cancelled, return_exceptions=True)
