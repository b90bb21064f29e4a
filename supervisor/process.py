"""The supervisor: the only writer of record.

It consumes submissions (agents' proposals and failure reports, operators' commands)
from Redis Streams through a consumer group, validates and commits, runs audits, decides
who acts next, counts loops and budgets, and dispatches activations. Every step is
idempotent and keyed by the submission's proposal id, and the entry is acknowledged
last, so a supervisor killed at any instant loses nothing: another replica (or the
restarted one) reclaims the entry and finishes the work without doing any of it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

from blackboard.supervisor.compliance import Compliance, Dropped
from blackboard.supervisor.control import Wanted, join_keys, plan_after_commit, reads_for
from blackboard.supervisor.intake import Intake
from blackboard.supervisor.loops import Router, Routing
from blackboard.supervisor.operator import Operator
from blackboard.supervisor.retention import Retention
from blackboard.supervisor.summarisation import Crossings
from blackboard.supervisor.validation import Decision, Validator

from blackboard import codec
from blackboard.app import App, verdict
from blackboard.connection import Command
from blackboard.errors import BoardNotFound, ConfigError, ProposalRejected
from blackboard.keys import GlobalKeys
from blackboard.patch import is_blind
from blackboard.queues import OUTAGE, Delivery, Liveness, WorkQueue, submit
from blackboard.records import (
    Activation,
    BoardInfo,
    CommitResult,
    Outcome,
    ProposalFields,
    Submission,
    new_id,
)
from blackboard.store import BoardStore, PreparedCommit, redis_failures

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

GROUP = "supervisor"
ACTIVE = "active"
STOPPED = ("escalated", "done", "failed")
WAITING = ("escalated", "failed", "awaiting_approval")
"""Statuses that put a board on the escalations list (a human is needed)."""
ATOMIC, READ, GENERAL = "atomic", "read", "general"
"""How a proposal is handled: commit and routing in one script; the commit with the
keys routing reads in one round trip, then routing; or decided, then routed."""
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
"""Lanes of waves at once (see :meth:`Supervisor._lanes`): while one lane's wave runs in
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


@dataclass
class _Planned:
    """A proposal's commit and routing as one script call, ready to send."""

    sub: Submission
    proposal: ProposalFields
    step: Routing
    commands: list[Command]
    """The watchdog told first (when it activates an agent), then the script."""
    context: list[str]
    now: int


def activation_id(parent: str, agent: str, extra: str = "") -> str:
    """Deterministic, so a redelivered submission re-creates the same activations."""
    return "a" + codec.content_hash(f"{parent}>{agent}:{extra}")


def _versions(keys: Sequence[str], raw: Sequence[Any]) -> dict[str, int]:
    """Keys' versions as read from the kver hash (absent: 0, never written)."""
    return {k: int(v or 0) for k, v in zip(keys, raw, strict=True)}


class Supervisor:
    """Supervises every board of one app.

    Args:
        app: the deployment's declaration.
        store: the board store (its Redis is where everything lives).
        name: this replica's consumer name (default: host, pid and a random suffix).
        shards: number of submission streams (boards are spread by id).
    """

    def __init__(
        self, app: App, store: BoardStore, *, name: str | None = None, shards: int = 1
    ) -> None:
        self.app = app
        self.store = store
        self.redis = store.redis
        self.keys = GlobalKeys(store.settings.key_prefix)
        self.name = name or f"sup-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.shards = shards
        self.validator = Validator(app, store)
        self.router = Router(self.redis, self.keys, app.limits)
        self.operator = Operator(self)
        self.crossings = Crossings(self.redis, app)
        self.compliance = Compliance(self.redis, self.keys)
        # issue 23: one stream per agent and one for operators; the stream is the author.
        self.intake = Intake(self.redis, self.keys, app.agent_names, shards)
        self.queues = [
            WorkQueue(
                self.redis,
                source.stream,
                GROUP,
                dead_letters=self.keys.dead_letters,
                max_deliveries=app.limits.max_deliveries,
                claim_idle_ms=app.limits.claim_idle_ms,
                keys=self.keys,
            )
            for source in self.intake.sources
        ]
        self.liveness = Liveness(self.redis, self.keys, self.name)
        # issue 23: streams trimmed behind what is pending; set .policy to archive boards
        self.retention = Retention(store, [q.stream for q in self.queues], app.agent_names)
        store.register(app.schema)
        self._partial_joins = any(t.join and t.partial for a in app.agents for t in a.triggers)
        self._deadlines: dict[str, int] = {}
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._status: dict[str, str] = {}
        self._shapes: dict[tuple[Any, ...], str] = {}
        source = resources.files("blackboard.supervisor").joinpath("lua", "read_versions.lua")
        self._read_versions = self.redis.register_script(source.read_text())

    # -- declaration ----------------------------------------------------------------

    async def publish(self, *, replace: bool = False) -> None:
        """Publish the app's declaration; refuse to run beside a different one."""
        declaration = self.app.declaration()
        stored = await self.redis.get(self.keys.app)
        if stored is not None and not replace:
            digest = codec.loads(cast(str, stored))["digest"]
            if digest != declaration["digest"]:
                raise ConfigError(
                    f"Redis holds app declaration {digest}, this process has "
                    f"{declaration['digest']}: another version of the app is deployed. Stop "
                    "the other processes first, or start with replace=True "
                    "(--replace-declaration) to take over."
                )
        await self.redis.set(self.keys.app, codec.dumps(declaration))

    # -- boards ---------------------------------------------------------------------

    async def start(
        self, board_id: str, initial: Mapping[str, Any] | None = None, *, trace_id: str = ""
    ) -> BoardInfo:
        """Create a board and activate the app's start agents."""
        info = await self.store.create(board_id, self.app.schema, initial)
        now = int(time.time() * 1000)
        bk = self.keys.board(board_id)
        deadline = 0
        if self.app.limits.deadline_s is not None:
            deadline = now + int(self.app.limits.deadline_s * 1000)
            await self.redis.hset(bk.meta, "deadline_ms", deadline)
            self._deadlines[board_id] = deadline
            await self.redis.zadd(self.keys.watch, {board_id: deadline}, lt=True)
        await self.activate_start(board_id, trace_id=trace_id)
        return info

    async def activate_start(self, board_id: str, *, trace_id: str = "") -> None:
        """Activate the app's start agents on an existing board (idempotent)."""
        trace = trace_id or new_id()
        wanted = [Wanted(name, "start") for name in self.app.start]
        await self._route(
            board_id,
            Routing(routing_id=f"start:{board_id}", version=0),
            wanted,
            parent=f"start:{board_id}",
            trace_id=trace,
        )

    # -- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None, *, batch: int = BATCH) -> None:
        """Consume submissions until ``stop`` is set. Survives Redis restarts.

        ``batch``: the most submissions taken from the stream at once (see
        :data:`BATCH`)."""
        stop = stop or asyncio.Event()
        await self.publish()
        # Beats while it runs: if this process dies, the other replicas take over the
        # submissions it held within seconds (see Liveness), not after claim_idle_ms.
        beating = asyncio.Event()  # set once the work in hand is done
        alive = asyncio.create_task(self.liveness.run(beating))
        tasks = [asyncio.create_task(self._consume(q, stop, batch)) for q in self.queues]
        tasks.append(asyncio.create_task(self._watchdog(stop)))
        tasks.append(asyncio.create_task(self.retention.run(stop)))  # issue 23
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            beating.set()  # the name is let go: what it still holds is taken over at once
            await asyncio.gather(alive, return_exceptions=True)
            await self.router.pipeliner.aclose()  # its connection, back to the pool

    async def _consume(self, queue: WorkQueue, stop: asyncio.Event, batch: int) -> None:
        backoff = 0.05
        ahead: asyncio.Future[list[Delivery]] | None = None  # the next batch, being read
        own: str | None = None  # after an outage: re-read what this consumer holds, from here
        with contextlib.suppress(*OUTAGE):  # (if Redis is away, the loop's first read says so)
            if await queue.holds(self.name):  # a predecessor of this name was killed
                own = "0"
        try:
            while not stop.is_set() or ahead is not None:  # stopping, what was read is done
                try:
                    if own is not None:
                        deliveries = await queue.take_own(self.name, after=own, count=batch)
                        own = deliveries[-1].entry_id if len(deliveries) >= batch else None
                    elif ahead is not None:
                        taking, ahead = ahead, None
                        deliveries = await taking
                    else:
                        deliveries = await queue.take(self.name, count=batch, block_ms=200)
                    if own is None and self._read_ahead(queue, deliveries, batch, stop):
                        # A backlog: the next batch is read while this one is worked on
                        # (Redis answers it between this one's waves). Read, not worked
                        # on: it starts once this one is acknowledged.
                        ahead = asyncio.ensure_future(queue.take_new(self.name, count=batch))
                    await self._batch(queue, deliveries)
                    backoff = 0.05
                except OUTAGE as exc:
                    log.warning("Redis unavailable, retrying: %s", exc)
                    # What this consumer read and did not acknowledge (the batch the outage
                    # broke, the one read ahead) goes first, in stream order: a board's
                    # later submissions must not be worked on before its earlier ones.
                    own = "0"
                    if ahead is not None:
                        ahead.cancel()
                        await asyncio.gather(ahead, return_exceptions=True)
                        ahead = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
        finally:
            if ahead is not None:  # cancelled or failed: its entries stay pending
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    @staticmethod
    def _read_ahead(
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

    async def _batch(self, queue: WorkQueue, deliveries: list[Delivery]) -> None:
        """Work on one batch taken from ``queue``: in waves where it can, one by one
        where it must; then its dispatches and acknowledgements."""
        by_board: ByBoard = {}
        for d, sub in await self.intake.screen(queue, deliveries):  # issue 23: by source
            items = by_board.get(sub.board_id)
            if items is None:  # (setdefault would build a deque for every submission)
                items = by_board[sub.board_id] = deque()
            items.append((d, sub))
        collected: list[Any] = []
        try:
            rest = await self._lanes(queue, by_board, collected)
            await asyncio.gather(*(self._board_batch(queue, items, collected) for items in rest))
        finally:
            failed = await self.router.flush(collected)  # dispatches, then acks
            if failed:
                log.error(
                    "%d dispatch commands failed; their submissions stay pending "
                    "and will be redelivered: %s",
                    len(failed),
                    failed[0],
                )

    async def _lanes(
        self, queue: WorkQueue, by_board: ByBoard, batch: list[Any]
    ) -> list[list[Queued]]:
        """The batch's boards in :data:`LANES` disjoint lanes, each sending its own
        :meth:`_waves`: while one lane's wave runs in Redis, the next lane's is planned
        here and written behind it (the Pipeliner keeps several round trips in flight),
        so this process and the server work at the same time instead of taking turns. A
        board is in one lane only, so its submissions keep their order."""
        count = min(LANES, len(by_board) // LANE_BOARDS)
        if count < 2:
            return await self._waves(queue, by_board, batch)
        lanes: list[ByBoard] = [{} for _ in range(count)]
        for i, (board_id, items) in enumerate(by_board.items()):
            lanes[i % count][board_id] = items
        tasks = [asyncio.ensure_future(self._waves(queue, lane, batch)) for lane in lanes]
        try:
            rests = await asyncio.gather(*tasks)
        except BaseException:  # one lane failed (an outage, say) or this was cancelled
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [items for rest in rests for items in rest]

    async def _waves(
        self, queue: WorkQueue, by_board: ByBoard, batch: list[Any]
    ) -> list[list[Queued]]:
        """The common case in bulk: proposals that commit and route in one script go in
        waves, each board's next one, every board's in the same round trip, with no task
        per submission. A board leaves the waves at its first submission that needs the
        general path (or whose commit the script refused: the general path says why);
        that submission and the board's later ones are returned, in order, to be handled
        one by one. ``by_board`` is consumed."""
        rest: list[list[Queued]] = []
        while by_board:
            wave = await self._next_wave(by_board, rest)
            if not wave:
                break
            try:
                replies = await self._send_wave(wave)
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
                    if not await self._settle_in_wave(planned, mine, acked, ack, batch):
                        board_id = planned.sub.board_id
                        rest.append([(delivery, planned.sub), *by_board.pop(board_id, ())])
            finally:
                for _, planned in wave:
                    self._unhold(planned.sub.board_id)
        return rest

    async def _send_wave(self, wave: list[tuple[Delivery, _Planned]]) -> list[Any] | None:
        """Every planned call in one round trip (then one WAIT for them all, if asked);
        their replies, an error in place of any that failed; None if the round trip
        failed other than by an outage (a garbled reply, say)."""
        commands = [c for _, planned in wave for c in planned.commands] + self._wait()
        try:
            return await self.router.pipeliner.execute(*commands, raise_on_error=False)
        except OUTAGE:
            raise
        except Exception:
            log.exception("a round trip of %d proposals failed; one by one now", len(wave))
            return None

    async def _next_wave(
        self,
        by_board: ByBoard,
        rest: list[list[Queued]],
    ) -> list[tuple[Delivery, _Planned]]:
        """Each board's next submission, planned, its board held; boards whose next one
        needs the general path move from ``by_board`` to ``rest``."""
        wave: list[tuple[Delivery, _Planned]] = []
        await self.store.warm(by_board)  # boards new to this process: one round trip
        try:
            for board_id, items in list(by_board.items()):
                delivery, sub = items[0]
                planned = None
                if self._atomic(sub) and await self._hold(board_id):
                    try:
                        planned = await self._plan_routed(sub, "")
                    except Exception:  # e.g. an unknown board: the general path handles it
                        planned = None
                    finally:
                        if planned is None:  # also when cancelled
                            self._unhold(board_id)
                if planned is None:
                    rest.append(list(by_board.pop(board_id)))
                    continue
                items.popleft()
                if not items:
                    del by_board[board_id]
                wave.append((delivery, planned))
        except BaseException:  # cancelled while planning: the boards held so far are freed
            for _, planned in wave:
                self._unhold(planned.sub.board_id)
            raise
        return wave

    async def _settle_in_wave(
        self,
        planned: _Planned,
        replies: list[Any],
        acked: Any,
        ack: tuple[str, str, str],
        batch: list[Any],
    ) -> bool:
        """False if the submission needs the general path. An error is logged and the
        entry left pending (redelivered, then dead-lettered), as in :meth:`_board_batch`."""
        try:
            for reply in [*replies, acked]:
                if isinstance(reply, Exception):
                    raise reply
            commit = await self._settle_routed(planned, replies[-1], ack, batch, replicas=acked)
            return commit is not None
        except OUTAGE:
            raise
        except Exception:
            sub = planned.sub
            log.exception("submission %s on board %s failed", sub.proposal_id, sub.board_id)
            return True

    async def _hold(self, board_id: str) -> bool:
        """Take the board's :meth:`_serial` lock if nobody holds or awaits it (without
        waiting); False if somebody does."""
        if board_id in self._locks:
            return False
        lock = asyncio.Lock()
        await lock.acquire()  # free: returns at once
        self._locks[board_id] = (lock, [1])
        return True

    def _unhold(self, board_id: str) -> None:
        lock, users = self._locks[board_id]
        lock.release()
        users[0] -= 1
        if not users[0]:
            del self._locks[board_id]

    async def _board_batch(self, queue: WorkQueue, items: list[Queued], batch: list[Any]) -> None:
        for delivery, sub in items:  # one board's submissions in order: fewer conflicts
            try:
                ack = (queue.stream, queue.group, delivery.entry_id)
                async with self._serial(sub.board_id):
                    await self.handle(sub, ack=ack, batch=batch)
            except OUTAGE:
                raise
            except BoardNotFound as exc:
                await queue.dead_letter(delivery, str(exc))
                continue
            except Exception:
                # Left pending: redelivered, then dead-lettered after max_deliveries.
                log.exception("submission %s on board %s failed", sub.proposal_id, sub.board_id)

    @contextlib.asynccontextmanager
    async def _serial(self, board_id: str) -> AsyncIterator[None]:
        """One submission at a time per board in this process (from the stream or from
        agents in this process): a join must see its branches' commits one after the
        other, or two of them could both find every branch done and fire it twice."""
        lock, users = self._locks.setdefault(board_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[board_id]

    # -- agents in this process ------------------------------------------------------

    async def submit_local(self, sub: Submission, report: Activation) -> Outcome:
        """A submission from an agent running in this process (embedded mode), handled
        at once rather than through the submission stream, the activation's ``report``
        written by the routing that closes it. The activation stays open (and in the
        outbox) until its routing closes it: if this process dies first,
        :meth:`recover` runs it again, and its commit still happens at most once."""
        batch: list[Command] = []
        async with self._serial(sub.board_id):
            before: list[Command] = []
            if not self._atomic(sub):  # commit and routing in several steps: keep it first
                kept = report.model_copy(update={"submission": sub.model_dump(mode="json")})
                bk = self.keys.board(sub.board_id)
                before.append(
                    ("hset", (bk.activations, report.activation_id, kept.model_dump_json()), {})
                )
            outcome = await self.handle(
                sub, batch=batch, report=report.model_dump_json(), before=before
            )
            for error in await self.router.flush(batch):
                raise error  # what did not go stays in the outbox and open: it times out
        return outcome

    def _atomic(self, sub: Submission) -> bool:
        """True when the submission's commit and routing are one script."""
        return (
            sub.kind == "proposal"
            and sub.author != self.app.summariser
            and self._path(sub) == ATOMIC
        )

    def stopped(self, board_id: str) -> bool:
        """Whether this process last saw the board escalated, done or failed."""
        return self._status.get(board_id) in STOPPED

    def _saw(self, board_id: str, status: str) -> None:
        if len(self._status) >= self.store.CACHE_LIMIT:  # bounded, like the store's
            self._status.clear()
        self._status[board_id] = status

    async def recover(self) -> int:
        """Hand the activations that agents in this process (``router.local``) had not
        finished when a previous run stopped, still open and in the outbox of an active
        board, back to them. Returns how many. Embedded mode runs it at start; with
        agents in other processes, their queues' pending entries do this instead."""
        local = self.router.local
        if local is None:
            return 0
        recovered = 0
        for board_id in cast(list[str], await self.redis.zrange(self.keys.watch, 0, -1)):
            bk = self.keys.board(board_id)
            pipe = self.redis.pipeline(transaction=True)
            pipe.hget(bk.meta, "status")
            pipe.hgetall(bk.outbox)
            pipe.zrange(bk.open, 0, -1)
            status, outbox, still_open = await pipe.execute()
            if status not in (ACTIVE, "awaiting_approval"):  # paused: resume dispatches
                continue
            for aid in set(outbox) & set(still_open):
                recovered += local(board_id, aid, codec.loads(outbox[aid])["agent"], None, None)
        if recovered:
            log.info("recovered %d unfinished activations of agents in this process", recovered)
        return recovered

    @staticmethod
    def _parse(delivery: Delivery) -> Submission | None:
        try:
            return Submission.model_validate_json(delivery.fields.get("s", ""))
        except ValueError:
            return None

    # -- one submission --------------------------------------------------------------

    async def handle(
        self,
        sub: Submission,
        *,
        ack: tuple[str, str, str] | None = None,
        batch: list[Command] | None = None,
        report: str = "",
        before: Sequence[Command] = (),
    ) -> Outcome:
        """Process one submission; safe to call again with the same one.

        ``ack`` (stream, group, entry id) is acknowledged in the last round trip, after
        everything else; a crash before it leaves the entry to be redelivered. With
        ``batch``, dispatch and ack are collected for the caller to send in one go.
        ``report``: the activation's final record from an agent in this process, written
        atomically with the routing that closes it. ``before``: commands to run before
        anything else (with the commit, when there is one and it goes first).
        """
        if sub.kind == "proposal" and sub.author != self.app.summariser:
            return await self._handle_proposal(sub, ack, batch, report, before)
        if before:
            await self.router.pipeliner.execute(*before)
        bk = self.keys.board(sub.board_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(bk.results, sub.proposal_id)
        pipe.hmget(bk.meta, ["status", "deadline_ms"])
        pipe.hget(bk.activations, sub.activation_id or "-")
        pipe.zscore(bk.open, sub.activation_id or "-")
        recorded, (status, deadline), act_raw, still_open = await pipe.execute()
        if status is None:
            raise await self.store._not_found(sub.board_id)
        activation = Activation.model_validate_json(act_raw) if act_raw else None
        if sub.kind == "command":
            outcome = await self.operator.command(sub, recorded)
            if ack is not None:
                await self.redis.xack(*ack)
            return outcome
        if sub.kind == "failure" and recorded is None and still_open is None:
            # The activation was already closed (e.g. the agent's own timeout and the
            # watchdog's both reported it): one report is handled, the other ignored.
            stale = Outcome(status="failed", reason="stale", message=sub.reason)
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(bk.results, sub.proposal_id, stale.model_dump_json())
            if report:
                pipe.hset(bk.activations, sub.activation_id, report)
            if ack is not None:
                pipe.xack(*ack)
            await pipe.execute()
            return stale
        fresh = recorded is None
        if not fresh:
            outcome = Outcome.model_validate_json(recorded)
        elif status in STOPPED:
            outcome = Outcome(
                status="rejected",
                reason="board_stopped",
                message=(
                    f"board {sub.board_id!r} is {status}; it accepts no writes until an "
                    "operator resumes it."
                ),
            )
        elif sub.kind == "failure":
            outcome = Outcome(status="failed", reason=sub.error, message=sub.reason)
        else:
            outcome = await self._decide(sub, activation)
        await self._follow_up(
            sub,
            outcome,
            activation,
            record=fresh,
            deadline=int(deadline or 0),
            ack=ack,
            batch=batch,
            report=report,
        )
        return outcome

    async def _handle_proposal(
        self,
        sub: Submission,
        ack: tuple[str, str, str] | None,
        batch: list[Command] | None,
        report: str,
        before: Sequence[Command] = (),
    ) -> Outcome:
        """A proposal in one round trip (and the dispatch and ack) when its routing is
        known before the commit; in two when routing reads the board the commit made;
        otherwise decided, then routed. The commit script itself refuses a proposal
        already decided (a redelivery) and writes to a stopped board, so nothing needs
        reading first."""
        path = self._path(sub)
        if path == ATOMIC:
            done = await self._commit_routed(sub, ack, batch, report)
            if done is not None:
                return done
        elif path == READ and (prepared := await self._prepared(sub)) is not None:
            done = await self._commit_read(sub, *prepared, ack, batch, report, before)
            before = ()  # sent with the commit, whatever its answer
            if done is not None:
                return done
        if before:
            await self.router.pipeliner.execute(*before)
        outcome = await self._decide(sub, None)
        record = True
        if outcome.reason == "decided":
            raw = await self.redis.hget(self.keys.board(sub.board_id).results, sub.proposal_id)
            outcome, record = Outcome.model_validate_json(cast(str, raw)), False
        await self._follow_up(
            sub,
            outcome,
            None,
            record=record,
            deadline=await self._deadline(sub.board_id),
            ack=ack,
            batch=batch,
            report=report,
        )
        return outcome

    def _path(self, sub: Submission) -> str:
        """How a proposal is handled (:data:`ATOMIC`, :data:`READ` or :data:`GENERAL`,
        see :meth:`_shape_path`). It depends only on the submission's shape (author,
        operations, paths, handoff target): the answer is kept per shape."""
        try:
            shape = (
                sub.author,
                sub.handoff.to if sub.handoff is not None else None,
                *((op.get("op"), op.get("path")) for op in sub.patch),
            )
            known = self._shapes.get(shape)
        except TypeError:  # an unhashable op or path: malformed, the general path says so
            return GENERAL
        if known is None:
            known = self._shape_path(sub)
            # bounded, like the store's caches; a shape is kept only if it is small (a
            # key is not, say, a megabyte path an agent sent)
            small = len(sub.patch) <= 8 and all(len(str(op.get("path"))) <= 200 for op in sub.patch)
            if small:
                if len(self._shapes) >= self.store.CACHE_LIMIT:
                    self._shapes.clear()
                self._shapes[shape] = known
        return known

    def _shape_path(self, sub: Submission) -> str:
        """:data:`ATOMIC` when what follows a successful commit is known before it: no
        policy, gate or audit to run, a blind patch, and no trigger, done condition,
        router or summarisation that depends on the keys it writes (a handoff at most).
        :data:`READ` when only triggers, the done condition or the router depend on
        them. :data:`GENERAL` otherwise."""
        app = self.app
        if app.policies or app.gates or app.audits or self._partial_joins:
            return GENERAL
        if not sub.patch or not is_blind(sub.patch):
            return GENERAL
        written = [op["path"][1:] for op in sub.patch]
        if any(k not in app.schema.keys or app.schema.keys[k].summarisable for k in written):
            return GENERAL
        if sub.handoff is not None and app.check_handoff(sub.author, sub.handoff) is not None:
            return GENERAL
        if app.router is not None or app.done is not None or reads_for(app, written):
            return READ  # they decide from the board after the commit
        return ATOMIC

    async def _commit_routed(
        self,
        sub: Submission,
        ack: tuple[str, str, str] | None,
        batch: list[Command] | None,
        report: str,
    ) -> Outcome | None:
        """Commit and route in one atomic script (one round trip). None: take the
        general path (the proposal is invalid, a duplicate, or the commit was refused),
        which decides and records the outcome properly."""
        planned = await self._plan_routed(sub, report)
        if planned is None:
            return None
        async with redis_failures(f"commit to board {sub.board_id!r}"):
            replies = await self.router.pipeliner.execute(*planned.commands, *self._wait())
        acked = replies[-1] if self.store.settings.wait_replicas else None
        reply = replies[len(planned.commands) - 1]
        commit = await self._settle_routed(planned, reply, ack, batch, replicas=acked)
        if commit is None:
            return None
        return Outcome(status="committed", version=commit.version, keys=commit.keys)

    async def _commit_read(
        self,
        sub: Submission,
        proposal: ProposalFields,
        prepared: PreparedCommit,
        ack: tuple[str, str, str] | None,
        batch: list[Command] | None,
        report: str,
        before: Sequence[Command],
    ) -> Outcome | None:
        """Commit (:meth:`_prepared`), and read what routing needs of the board it
        made, in one round trip (after ``before``); then route. None: take the general
        path (a duplicate, or the commit was refused), which decides and records the
        outcome properly. The keys are read for every key written: a superset of those
        the commit changes."""
        board_id = sub.board_id
        written = [op["path"][1:] for op in sub.patch]
        reads = reads_for(self.app, written)
        joins = join_keys(self.app, written)
        bk = self.keys.board(board_id)
        read: Command = ("hmget", (bk.state, reads or ["-"]), {})
        if joins:  # the values and the versions a join's id derives from, atomically
            script = (self._read_versions, [bk.state, bk.kver], [len(reads), *reads, *joins])
            read = ("script", script, {})
        async with redis_failures(f"commit to board {board_id!r}"):
            replies = await self.router.pipeliner.execute(
                *before, self.store.commit_command(prepared), *self._wait(), read
            )
        reply = replies[len(before)]
        acked = replies[len(before) + 1] if self.store.settings.wait_replicas else None
        try:
            commit = await self.store.finish(board_id, proposal, reply, replicas=acked)
        except ProposalRejected:
            return None
        if commit.duplicate:
            return None
        outcome = Outcome(status="committed", version=commit.version, keys=commit.keys)
        values, versions = (replies[-1], None) if not joins else replies[-1]
        board = {k: codec.loads(v) for k, v in zip(reads, values, strict=False) if v is not None}
        await self._follow_up(
            sub,
            outcome,
            None,
            deadline=await self._deadline(board_id),
            ack=ack,
            batch=batch,
            report=report,
            board=board,
            versions=None if versions is None else _versions(joins, versions),
        )
        return outcome

    def _wait(self) -> list[Command]:
        """With ``Settings.wait_replicas``, the WAIT to send right after commit scripts,
        on their connection (WAIT counts the replicas that have that connection's
        writes): one for a whole wave."""
        if not self.store.settings.wait_replicas:
            return []
        return [("execute_command", self.store.wait_command(), {})]

    async def _prepared(self, sub: Submission) -> tuple[ProposalFields, PreparedCommit] | None:
        """A proposal validated and its commit script call built; None if it is
        invalid or already committed (the general path says so)."""
        agent_reads = self.app.agent(sub.author).reads if sub.author in self.app.agent_names else []
        # The submission itself, unless its author's reads add to those it names.
        proposal: ProposalFields = sub.proposal(agent_reads) if agent_reads else sub
        try:
            prepared = await self.store.prepare(sub.board_id, proposal, outcome="policies:none")
        except ProposalRejected:
            return None
        if isinstance(prepared, CommitResult):
            return None
        return proposal, prepared

    async def _plan_routed(self, sub: Submission, report: str) -> _Planned | None:
        """Validate a proposal and build its commit-and-route script call; None if it
        is invalid or already committed (the general path says so)."""
        ready = await self._prepared(sub)
        if ready is None:
            return None
        proposal, prepared = ready
        step = Routing(
            routing_id=sub.proposal_id,
            version=0,
            tokens=sub.tokens_in + sub.tokens_out,
            cost=sub.cost,
            close=sub.activation_id,
            reset_rewrite=sub.author,
            report=report,
        )  # its version, compliant flag and outcome: the script's, from the commit
        wanted = []
        if sub.handoff is not None:
            step.pairs.append(f"{sub.author}>{sub.handoff.to}")
            wanted.append(Wanted(sub.handoff.to, "handoff", dict(sub.handoff.payload)))
        now = int(time.time() * 1000)
        due = self._activations(
            sub.board_id,
            step,
            wanted,
            sub.activation_id or sub.proposal_id,
            sub.trace_id,
            await self._deadline(sub.board_id),
            now,
            base=-1,
        )
        commands = [self.router.watch(sub.board_id, due)] if step.activations else []
        context: list[str] = []
        if sub.handoff is not None and self.router.local is not None:
            context = self.app.agent(sub.handoff.to).sees  # read with the commit
        commands.append(
            self.router.commit_route_call(sub.board_id, prepared.keys, prepared.args, step, context)
        )
        return _Planned(sub, proposal, step, commands, context, now)

    async def _settle_routed(
        self,
        planned: _Planned,
        reply: list[Any],
        ack: tuple[str, str, str] | None,
        batch: list[Command] | None,
        *,
        replicas: int | None = None,
    ) -> CommitResult | None:
        """The script's reply: record, dispatch and acknowledge; the commit, or None if
        it was refused (conflict, decided, stopped…): the general path says why. ``replicas``:
        the reply of the WAIT sent after the script (with ``Settings.wait_replicas``)."""
        board_id, step = planned.sub.board_id, planned.step
        commit_reply, routed, read = await self.router.commit_route_reply(
            board_id, step, planned.context, reply
        )
        if routed is None:
            return None
        self._saw(board_id, routed.status)
        commit = await self.store.finish(
            board_id, planned.proposal, commit_reply, replicas=replicas
        )
        for act in step.activations:
            act.base = commit.version  # the script filled in the same placeholder
        await self.router.dispatch(
            board_id, routed, ack=ack, batch=batch, fresh=step.activations, context=read
        )
        if routed.status in WAITING:
            await self.redis.zadd(self.keys.escalations, {board_id: planned.now})
        return commit

    async def _deadline(self, board_id: str) -> int:
        """A board's deadline is fixed when it starts (from the app's limits): cached."""
        if self.app.limits.deadline_s is None:
            return 0  # this app sets none
        if board_id not in self._deadlines:
            raw = await self.redis.hget(self.keys.board(board_id).meta, "deadline_ms")
            if len(self._deadlines) >= self.store.CACHE_LIMIT:  # bounded, like the store's
                self._deadlines.clear()
            self._deadlines[board_id] = int(raw or 0)
        return self._deadlines[board_id]

    async def _decide(self, sub: Submission, activation: Activation | None) -> Outcome:
        if sub.handoff is not None:
            problem = self.app.check_handoff(sub.author, sub.handoff)
            if problem:
                return Outcome(
                    status="rejected",
                    reason="handoff",
                    message=f"{problem}. Hand off to a declared agent you may hand off to.",
                )
        if not sub.patch:
            return Outcome(status="committed")
        summary = (
            activation is not None
            and activation.reason == "summarise"
            and sub.author == self.app.summariser
        )
        depends = (
            list(self.app.agent(sub.author).reads) if sub.author in self.app.agent_names else []
        )
        decision = await self.validator.decide(
            sub.board_id,
            sub.proposal(),
            kind="summary" if summary else "write",
            gates=not summary,
            depends_on=depends,
            summarises=str(activation.payload.get("key", "")) if activation and summary else None,
        )
        if decision.status == "held":
            bk = self.keys.board(sub.board_id)
            await self.redis.hset(bk.held, sub.proposal_id, sub.model_dump_json())
            await self.redis.zadd(self.keys.escalations, {sub.board_id: time.time() * 1000})
            return Outcome(status="held", reason=f"gate:{decision.gate}", message=decision.message)
        if decision.status == "rejected":
            return Outcome(status="rejected", reason=decision.reason, message=decision.message)
        assert decision.commit is not None
        return await self._audit(sub, decision)

    async def _audit(self, sub: Submission, decision: Decision) -> Outcome:
        """Run the audits on the commit's version. What they decide is recorded at once
        in Redis, whichever replica ran them: a pass makes the version a candidate
        rollback target; a failure rolls back to the newest version below it that passed
        (:class:`~blackboard.supervisor.compliance.Compliance`)."""
        commit = decision.commit
        assert commit is not None
        outcome = Outcome(status="committed", version=commit.version, keys=commit.keys)
        if not self.app.audits or not commit.keys:
            return outcome
        board_id, rollback_id = sub.board_id, f"audit-rb.{sub.proposal_id}"
        # A failure decided before (this submission redelivered) is finished as decided,
        # whatever the audits say on a second run.
        decided = await self.compliance.decided(board_id, rollback_id)
        if decided is not None:
            failure: tuple[str, str] | None = (decided.audit, decided.message)
        else:
            failure = await self._run_audits(sub.board_id, commit.version)
        if failure is None:
            await self._passed(board_id, outcome)
            return outcome
        outcome.audit, outcome.message = failure
        claim = await self.compliance.claim(board_id, commit.version, rollback_id, *failure)
        if isinstance(claim, Dropped):
            return outcome  # an earlier rollback took this version's content back already
        why = f"audit {claim.audit!r} failed: {claim.message}"
        result = await self.store.rollback(
            board_id, to=claim.target, author="supervisor", reason=why, proposal_id=rollback_id
        )
        await self.compliance.passed(board_id, result.version)  # the target's content
        await self._incident(board_id, "rollback", f"{why} (to v{claim.target})", result.version)
        return outcome

    async def _passed(self, board_id: str, outcome: Outcome) -> None:
        """Record that the committed ``outcome``'s version passed its audits, at once;
        if an audit rollback dropped it meanwhile, say so in the outcome (nothing is
        recorded: that content is gone, and its author is asked to redo it). Nothing to
        record without audits, nor for a commit that changed nothing."""
        if not self.app.audits or not outcome.keys or outcome.status != "committed":
            return
        assert outcome.version is not None
        dropped = await self.compliance.passed(board_id, outcome.version)
        if dropped is not None:
            outcome.reason = "rolled_back"
            outcome.message = (
                f"committed as v{outcome.version}, then rolled back to v{dropped.target} "
                "(another commit failed its audit) before its own audits passed; its "
                "author is asked to redo it."
            )

    async def _run_audits(self, board_id: str, version: int) -> tuple[str, str] | None:
        """The first audit that fails on ``version`` and why, or None."""
        reads = sorted({k for a in self.app.audits for k in a.reads})
        view = (await self.store.read(board_id, at=version)).data
        for audit in self.app.audits:
            try:
                result: Any = audit.check({k: view.get(k) for k in reads})
                if inspect.isawaitable(result):
                    result = await result
                failed = verdict(result, audit.message or f"audit {audit.name!r} failed")
            except Exception as exc:
                failed = f"audit {audit.name!r} raised {type(exc).__name__}: {exc}"
            if failed:
                return audit.name, failed
        return None

    async def _redo_dropped(self, sub: Submission, outcome: Outcome) -> list[Wanted]:
        """The writes of other agents that the audit rollback after ``sub``'s commit
        dropped: each author redoes its work, with why as feedback. Each redo's id is the
        one a failed audit of that write would give its rewrite, so the two are one."""
        found = await self.compliance.dropped_writes(
            self.store,
            sub.board_id,
            f"audit-rb.{sub.proposal_id}",
            set(self.app.agent_names) - {sub.author},
        )
        if found is None:
            return []
        claim, entries = found
        wanted = []
        for e in entries:
            feedback = (
                f"your commit v{e.version} was rolled back: audit {claim.audit!r} failed on "
                f"v{outcome.version} ({claim.message}), and the board went back to "
                f"v{claim.target}, the newest version whose audits had passed. Do your "
                "work again on the board as it is now."
            )
            # given what its activation was given (the payload keeps the redo's id the
            # one that write's own failed audit would give it)
            made = sub.model_copy(update={"author": e.author, "activation_id": e.activation_id})
            redo = await self._rewrite(made, None, feedback)
            wanted.append(dataclasses.replace(redo, origin=e.activation_id or e.proposal_id))
        return wanted

    # -- after the decision -----------------------------------------------------------

    async def _follow_up(
        self,
        sub: Submission,
        outcome: Outcome,
        activation: Activation | None,
        *,
        record: bool = True,
        deadline: int | None = None,
        ack: tuple[str, str, str] | None = None,
        batch: list[Command] | None = None,
        report: str = "",
        board: dict[str, Any] | None = None,
        versions: dict[str, int] | None = None,
    ) -> None:
        """Route after a decision. ``board``: what routing reads after a commit, if it
        was read with the commit; ``versions``: the versions of the keys joins wait on,
        read with it."""
        board_id = sub.board_id
        step = Routing(
            routing_id=sub.proposal_id,
            version=outcome.version or 0,
            tokens=sub.tokens_in + sub.tokens_out,
            cost=sub.cost,
            report=report,
            close=sub.activation_id,
            outcome=outcome.model_dump_json() if record else "",
        )
        wanted: list[Wanted] = []
        agent_known = sub.author in self.app.agent_names
        if outcome.reason in ("board_stopped", "stale", "rolled_back"):
            pass  # nothing follows; routing only closes the activation
        elif outcome.status == "committed" and not outcome.audit:
            step.reset_rewrite = sub.author
            # with audits, what passed decides (recorded above)
            step.compliant = bool(outcome.keys) and not self.app.audits
            if sub.handoff is not None:
                step.pairs.append(f"{sub.author}>{sub.handoff.to}")
            wanted, done = await self._next(sub, outcome, board, versions)
            if done:
                step.status = "done"
        elif outcome.status in ("rejected", "failed") and sub.error in ("", "semantic"):
            if agent_known:
                step.rewrite = sub.author
                step.pairs.append(f"{sub.author}>{sub.author}:rewrite")
                wanted = [await self._rewrite(sub, activation, outcome.message)]
        elif outcome.audit:
            step.rewrite = sub.author
            step.pairs.append(f"{sub.author}>{sub.author}:audit")
            wanted = [await self._rewrite(sub, activation, outcome.message)]
            wanted += await self._redo_dropped(sub, outcome)
        elif outcome.status == "held":
            step.status = "awaiting_approval"
        else:
            wanted = await self._after_failure(sub, step, activation, deadline)
        parent = sub.activation_id or sub.proposal_id
        await self._route(
            board_id,
            step,
            wanted,
            parent=parent,
            trace_id=sub.trace_id or (activation.trace_id if activation else ""),
            deadline=deadline,
            ack=ack,
            batch=batch,
        )

    async def _rewrite(
        self, sub: Submission, activation: Activation | None, feedback: str
    ) -> Wanted:
        """The rewrite request for a rejected (or rolled back) submission: its agent
        again, given what the activation it redoes was given (its payload; a
        summarisation stays one, of the same key), with what to fix as feedback."""
        if activation is None and sub.activation_id:
            bk = self.keys.board(sub.board_id)
            raw = await self.redis.hget(bk.activations, sub.activation_id)
            what = f"activation {sub.activation_id!r} of board {sub.board_id!r}"
            activation = codec.load_model(Activation, raw, what) if raw else None
        if activation is None:
            return Wanted(sub.author, "rewrite", feedback=feedback)
        reason = "summarise" if activation.reason == "summarise" else "rewrite"
        return Wanted(sub.author, reason, dict(activation.payload), feedback=feedback)

    async def _after_failure(
        self,
        sub: Submission,
        step: Routing,
        activation: Activation | None = None,
        deadline: int | None = None,
    ) -> list[Wanted]:
        """An activation that failed other than semantically: time out (or reach the
        board's deadline), ask a human, or fail the board (and compensate its side
        effects)."""
        wanted: list[Wanted] = []
        if deadline is None and sub.error == "timeout":
            deadline = await self._deadline(sub.board_id)
        if sub.error == "timeout" and deadline and self._cut_by_deadline(sub, activation, deadline):
            step.escalate = f"deadline|{self._deadline_passed(deadline)}"
        elif sub.error == "timeout":
            wanted, escalate = await self._after_timeout(sub)
            if escalate:
                step.escalate = f"timeout|{sub.reason}"
        elif sub.error == "human":
            step.status = "awaiting_approval"
            await self._incident(sub.board_id, "human_input", sub.reason)
        elif sub.error == "fatal":
            step.status = "failed"
            await self._incident(sub.board_id, "fatal", f"{sub.author}: {sub.reason}")
            await self._compensate(sub.board_id)
        return wanted

    async def _next(
        self,
        sub: Submission,
        outcome: Outcome,
        read: dict[str, Any] | None = None,
        versions: dict[str, int] | None = None,
    ) -> tuple[list[Wanted], bool]:
        """Who acts after a commit. One round trip for the keys routing reads, the
        versions of those joins wait on, the loop state (failed branches) and which
        summarisable keys are due (once per threshold crossing:
        :class:`~blackboard.supervisor.summarisation.Crossings`), none if it needs none of
        them or ``read`` and ``versions`` have them already (read with the commit:
        :meth:`_commit_read`)."""
        changed = outcome.keys
        reads = reads_for(self.app, changed)
        joins = join_keys(self.app, changed)
        summarisable = [k for k in changed if self.app.schema.keys[k].summarisable]
        need_loops = bool(summarisable) or self._partial_joins
        replies: list[Any] = [[], {}, []]
        bk = self.keys.board(sub.board_id)
        # the read path (_shape_path) never has summarisable keys or partial joins
        assert read is None or not need_loops, "the loop state was not read with the commit"
        if read is None and (reads or need_loops):
            pipe = self.redis.pipeline(transaction=True)
            pipe.hmget(bk.state, reads or ["-"])
            pipe.hgetall(bk.loops) if need_loops else pipe.exists(bk.loops)
            # which keys are due, decided with the read: once per threshold crossing
            await self.crossings.queue(
                pipe, bk, summarisable, sub.author, sub.proposal_id, sub.patch
            )
            if joins:  # in the same transaction as the values the join's condition sees
                pipe.hmget(bk.kver, joins)
            replies = await pipe.execute()
            if joins:
                versions = _versions(joins, replies.pop())
            replies.append([])  # (no keys due if none was queued)
        if read is not None:  # only what routing reads after this commit, as if read now
            board = {k: read[k] for k in reads if k in read}
        else:
            board = {
                k: codec.loads(v) for k, v in zip(reads, replies[0], strict=False) if v is not None
            }
        loops: dict[str, str] = replies[1] if need_loops else {}
        failed = {k[7:]: v for k, v in loops.items() if k.startswith("failed:")}
        due = [str(k) for k in replies[2]]
        plan = plan_after_commit(
            self.app,
            author=sub.author,
            handoff=sub.handoff,
            changed=changed,
            board=board,
            failed=failed,
            summarise=due,
            versions=versions,
            board_id=sub.board_id,
            version=outcome.version,
        )
        return plan.activations, plan.done

    async def _after_timeout(self, sub: Submission) -> tuple[list[Wanted], bool]:
        """A timed-out branch: partial joins waiting on it may proceed; else escalate."""
        owned = list(self.app.agent(sub.author).owns) if sub.author in self.app.agent_names else []
        partial = [(a, t) for a, t in self.app.triggers_for(owned) if t.join and t.partial]
        if not partial:
            return [], True
        bk = self.keys.board(sub.board_id)
        await self.redis.hset(bk.loops, f"failed:{sub.author}", sub.reason or "timed out")
        fake = Outcome(status="committed", keys=owned)
        wanted, _ = await self._next(sub.model_copy(update={"handoff": None}), fake)
        return wanted, False

    async def _route(
        self,
        board_id: str,
        step: Routing,
        wanted: list[Wanted],
        *,
        parent: str,
        trace_id: str,
        deadline: int | None = None,
        ack: tuple[str, str, str] | None = None,
        batch: list[Command] | None = None,
    ) -> None:
        now = int(time.time() * 1000)
        if deadline is None:
            deadline = await self._deadline(board_id)
        due = self._activations(board_id, step, wanted, parent, trace_id, deadline, now)
        context: list[str] = []
        if self.router.local is not None:  # what the agents here will read, read now
            for w in wanted:
                context += self.app.agent(w.agent).sees
                if w.reason == "summarise":
                    context.append(str(w.payload["key"]))
        result, read = await self.router.route(
            board_id,
            step,
            deadline_ms=due if step.activations else 0,
            context=[*dict.fromkeys(context)],
        )
        self._saw(board_id, result.status)
        await self.router.dispatch(
            board_id, result, ack=ack, batch=batch, fresh=step.activations, context=read
        )
        if result.status in WAITING:
            await self.redis.zadd(self.keys.escalations, {board_id: now})

    def _activations(
        self,
        board_id: str,
        step: Routing,
        wanted: list[Wanted],
        parent: str,
        trace_id: str,
        deadline: int,
        now: int,
        base: int | None = None,
    ) -> int:
        """Add the wanted activations to the step; returns their deadline."""
        due = now + int(self.app.limits.activation_timeout_s * 1000)
        if deadline:
            due = min(due, deadline)
        for w in wanted:
            payload = dict(w.payload)
            feedback = w.feedback
            origin = w.origin or parent
            step.activations.append(
                Activation(
                    activation_id=activation_id(origin, w.agent, str(payload.get("key", ""))),
                    board_id=board_id,
                    agent=w.agent,
                    base=step.version if base is None else base,
                    trace_id=trace_id,
                    parent=parent,
                    reason=w.reason,  # type: ignore[arg-type]
                    feedback=feedback,
                    payload=payload,
                    deadline_ms=due,
                    created_ms=now,
                )
            )
        return due

    async def _compensate(self, board_id: str) -> None:
        """A failed board's side effects are undone, newest first (the saga)."""
        if self.app.tools is None:
            return
        try:
            undone = await self.app.tools.compensate(self.redis, self.keys.prefix, board_id)
        except Exception as exc:  # a compensation that fails needs a human
            await self._incident(board_id, "compensation_failed", f"{type(exc).__name__}: {exc}")
            return
        if undone:
            await self._incident(board_id, "compensated", ", ".join(undone))

    async def _incident(
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

    # -- deadlines ------------------------------------------------------------------

    async def _watchdog(self, stop: asyncio.Event, every_s: float = 0.05) -> None:
        while not stop.is_set():
            try:
                await self.check_deadlines()
            except OUTAGE as exc:
                log.warning("watchdog: Redis unavailable: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    def _cut_by_deadline(
        self, sub: Submission, activation: Activation | None, deadline: int
    ) -> bool:
        """Whether a timed-out activation was stopped by the board's deadline (which is
        then what escalates), not by its own timeout. Either the deadline has passed, or
        the activation reports the expiry of a deadline that was the board's (the
        agent's clock may be a little ahead of this one)."""
        if time.time() * 1000 >= deadline:
            return True
        timeout_s = self.app.limits.activation_timeout_s
        return (
            activation is not None
            and activation.deadline_ms >= deadline
            and sub.reason == activation.timed_out(timeout_s)
        )

    def _deadline_passed(self, deadline: int) -> str:
        """The detail of a board-deadline escalation, in the same words whoever notices
        first (the watchdog, or the report of an activation the deadline cut)."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline / 1000))
        length = self.app.limits.deadline_s
        budget = f"deadline_s {length:g} s after it started" if length is not None else "deadline"
        return f"board deadline passed: the board had {budget}, due at {when}"

    async def check_deadlines(self) -> int:
        """Report timed-out activations (as failure submissions) and escalate boards past
        their deadline. Returns how many timeouts it reported."""
        now = int(time.time() * 1000)
        due = cast(list[str], await self.redis.zrangebyscore(self.keys.watch, "-inf", now))
        reported = 0
        for board_id in due:
            bk = self.keys.board(board_id)
            expired = cast(list[str], await self.redis.zrangebyscore(bk.open, "-inf", now))
            for aid in expired:
                raw = await self.redis.hget(bk.activations, aid)
                if raw is None:
                    continue
                act = Activation.model_validate_json(raw)
                await submit(
                    self.redis,
                    self.keys.prefix,
                    Submission(
                        kind="failure",
                        board_id=board_id,
                        proposal_id=f"timeout.{aid}",
                        author=act.agent,
                        activation_id=aid,
                        trace_id=act.trace_id,
                        error="timeout",
                        reason=act.timed_out(self.app.limits.activation_timeout_s),
                    ),
                    self.shards,
                    by_supervisor=True,  # issue 23: on the supervisor's own stream
                )
                await self.redis.zadd(bk.open, {aid: now + 3_600_000})  # reported once
                reported += 1
            meta = await self.redis.hmget(bk.meta, ["deadline_ms", "status"])
            if meta[0] and int(meta[0]) <= now and meta[1] == ACTIVE:
                await self.router.route(
                    board_id,
                    Routing(
                        routing_id=f"deadline.{board_id}",
                        version=0,
                        escalate=f"deadline|{self._deadline_passed(int(meta[0]))}",
                    ),
                )
            nxt = await self.redis.zrangebyscore(
                bk.open, "-inf", "+inf", start=0, num=1, withscores=True
            )
            future = [int(nxt[0][1])] if nxt else []
            if meta[0] and meta[1] == ACTIVE and int(meta[0]) > now:
                future.append(int(meta[0]))
            if future:
                await self.redis.zadd(self.keys.watch, {board_id: min(future)})
            else:
                await self.redis.zrem(self.keys.watch, board_id)
        return reported
