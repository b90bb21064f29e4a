"""The supervisor: the only writer of record.

It consumes submissions (agents' proposals and failure reports, operators' commands)
from Redis Streams through a consumer group, validates and commits, runs audits, decides
who acts next, counts loops and budgets, and dispatches activations. Every step is
idempotent and keyed by the submission's proposal id, and the entry is acknowledged
last, so a supervisor killed at any instant loses nothing: another replica (or the
restarted one) reclaims the entry and finishes the work without doing any of it twice.

This module is the facade (start a board, run, handle one submission, recover); each
duty lives in a module of its own:

- :mod:`~blackboard.supervisor.intake`: taking submissions from the streams, in batches,
  waves and lanes; :mod:`~blackboard.supervisor.authentication`: who sent them (the
  stream is the author);
- :mod:`~blackboard.supervisor.fast_paths`: a proposal committed and routed in one or two
  round trips; :mod:`~blackboard.supervisor.general`: decided, then routed;
- :mod:`~blackboard.supervisor.validation`: deciding (validation, gates, audits);
- :mod:`~blackboard.supervisor.follow_up`: routing after a decision;
- :mod:`~blackboard.supervisor.routing`: the routing step in Redis, and dispatch;
- :mod:`~blackboard.supervisor.deadlines`: the watchdog;
- :mod:`~blackboard.supervisor.boards`: per-board locks and caches;
- :mod:`~blackboard.supervisor.operator`: operators' commands;
- :mod:`~blackboard.supervisor.retention`: trimming streams, dropping old proposal
  records, archiving finished boards (set ``retention.policy``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

from blackboard.supervisor.authentication import Authentication
from blackboard.supervisor.boards import Boards
from blackboard.supervisor.compliance import Compliance
from blackboard.supervisor.control import Wanted
from blackboard.supervisor.deadlines import Watchdog
from blackboard.supervisor.fast_paths import ATOMIC, READ, FastPaths
from blackboard.supervisor.follow_up import FollowUp
from blackboard.supervisor.general import GeneralPath
from blackboard.supervisor.incidents import Incidents
from blackboard.supervisor.intake import BATCH, Intake
from blackboard.supervisor.operator import Operator
from blackboard.supervisor.retention import Retention
from blackboard.supervisor.routing import RouteStep, Routing
from blackboard.supervisor.validation import Decider, Validator

from blackboard import codec
from blackboard.app import App
from blackboard.connection import Command
from blackboard.errors import ConfigError
from blackboard.keys import GlobalKeys
from blackboard.queues import Liveness, WorkQueue
from blackboard.records import Activation, BoardInfo, Outcome, Submission, new_id
from blackboard.status import BoardStatus
from blackboard.store import BoardStore

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

GROUP = "supervisor"
RECOVERABLE = (BoardStatus.ACTIVE, BoardStatus.AWAITING_APPROVAL)
"""Boards whose unfinished local activations :meth:`Supervisor.recover` hands back (a
paused board's are dispatched by resume)."""


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
        self.incidents = Incidents(self.redis, self.keys)
        # One stream per agent, one for operators, one for the watchdog: the stream is
        # the author (with one Redis user per role; see ``blackboard acl``).
        self.authentication = Authentication(
            self.redis, self.keys, app.agent_names, shards, self.incidents
        )
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
            for source in self.authentication.sources
        ]
        self.liveness = Liveness(self.redis, self.keys, self.name)
        # streams trimmed behind what is pending; set ``retention.policy`` to archive boards
        self.retention = Retention(store, [q.stream for q in self.queues], app.agent_names)
        store.register(app.schema)
        # the duties, each its own object; those later in the list use those before
        self.router = RouteStep(self.redis, self.keys, app.limits)
        self.boards = Boards(self.redis, self.keys, app.limits, limit=store.CACHE_LIMIT)
        self.watchdog = Watchdog(self.redis, self.keys, app.limits, self.router, shards)
        self.compliance = Compliance(self.redis, self.keys)
        self.validator = Validator(app, store)
        self.decider = Decider(app, self.validator, self.keys, self.compliance, self.incidents)
        self.follow_up = FollowUp(
            app,
            store,
            self.keys,
            self.router,
            self.boards,
            self.watchdog,
            self.compliance,
            self.incidents,
        )
        self.fast = FastPaths(self.follow_up)
        self.operator = Operator(self)
        self.general = GeneralPath(self.decider, self.follow_up, self.operator)
        self.intake = Intake(self.name, self.fast, self.handle, self.authentication)

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
            self.boards.started(board_id, deadline)
            await self.redis.zadd(self.keys.watch, {board_id: deadline}, lt=True)
        await self.activate_start(board_id, trace_id=trace_id)
        return info

    async def activate_start(self, board_id: str, *, trace_id: str = "") -> None:
        """Activate the app's start agents on an existing board (idempotent)."""
        trace = trace_id or new_id()
        wanted = [Wanted(name, "start") for name in self.app.start]
        await self.follow_up.route(
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
        :data:`~blackboard.supervisor.intake.BATCH`)."""
        stop = stop or asyncio.Event()
        await self.publish()
        # Beats while it runs: if this process dies, the other replicas take over the
        # submissions it held within seconds (see Liveness), not after claim_idle_ms.
        beating = asyncio.Event()  # set once the work in hand is done
        alive = asyncio.create_task(self.liveness.run(beating))
        tasks = [asyncio.create_task(self.intake.consume(q, stop, batch)) for q in self.queues]
        tasks.append(asyncio.create_task(self.watchdog.run(stop)))
        tasks.append(asyncio.create_task(self.retention.run(stop)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            beating.set()  # the name is let go: what it still holds is taken over at once
            await asyncio.gather(alive, return_exceptions=True)
            await self.router.pipeliner.aclose()  # its connection, back to the pool

    async def check_deadlines(self) -> int:
        """Report timed-out activations and escalate boards past their deadline, once
        (:meth:`Watchdog.check`, which :meth:`run` does every 50 ms). Returns how many
        timeouts it reported."""
        return await self.watchdog.check()

    # -- agents in this process ------------------------------------------------------

    async def submit_local(self, sub: Submission, report: Activation) -> Outcome:
        """A submission from an agent running in this process (embedded mode), handled
        at once rather than through the submission stream, the activation's ``report``
        written by the routing that closes it. The activation stays open (and in the
        outbox) until its routing closes it: if this process dies first,
        :meth:`recover` runs it again, and its commit still happens at most once."""
        outgoing: list[Command] = []
        async with self.boards.serial(sub.board_id):
            before: list[Command] = []
            if not self.fast.atomic(sub):  # commit and routing in several steps: keep it first
                kept = report.model_copy(update={"submission": sub.model_dump(mode="json")})
                bk = self.keys.board(sub.board_id)
                before.append(
                    ("hset", (bk.activations, report.activation_id, kept.model_dump_json()), {})
                )
            outcome = await self.handle(
                sub, outgoing=outgoing, report=report.model_dump_json(), before=before
            )
            for error in await self.router.flush(outgoing):
                raise error  # what did not go stays in the outbox and open: it times out
        return outcome

    def stopped(self, board_id: str) -> bool:
        """Whether this process last saw the board escalated, done or failed."""
        return self.boards.stopped(board_id)

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
            if status not in RECOVERABLE:  # paused: resume dispatches
                continue
            for aid in set(outbox) & set(still_open):
                recovered += local(board_id, aid, codec.loads(outbox[aid])["agent"], None, None)
        if recovered:
            log.info("recovered %d unfinished activations of agents in this process", recovered)
        return recovered

    # -- one submission --------------------------------------------------------------

    async def handle(
        self,
        sub: Submission,
        *,
        ack: tuple[str, str, str] | None = None,
        outgoing: list[Command] | None = None,
        report: str = "",
        before: Sequence[Command] = (),
    ) -> Outcome:
        """Process one submission; safe to call again with the same one.

        ``ack`` (stream, group, entry id) is acknowledged in the last round trip, after
        everything else; a crash before it leaves the entry to be redelivered. With
        ``outgoing``, dispatch and ack are collected for the caller to send in one go.
        ``report``: the activation's final record from an agent in this process, written
        atomically with the routing that closes it. ``before``: commands to run before
        anything else (with the commit, when there is one and it goes first).

        A proposal goes in one round trip (and the dispatch and ack) when its routing is
        known before the commit; in two when routing reads the board the commit made;
        otherwise (or if those refuse it) it is decided, then routed.
        """
        if sub.kind != "proposal" or sub.author == self.app.summariser:
            return await self.general.handle(sub, ack, outgoing, report, before)
        path = self.fast.path(sub)
        if path == ATOMIC:
            done = await self.fast.commit_routed(sub, ack, outgoing, report)
            if done is not None:
                return done
        elif path == READ and (prepared := await self.fast.prepared(sub)) is not None:
            done = await self.fast.commit_read(sub, *prepared, ack, outgoing, report, before)
            before = ()  # sent with the commit, whatever its answer
            if done is not None:
                return done
        return await self.general.handle(sub, ack, outgoing, report, before)
