"""Deadlines: the watchdog that reports activations past their timeout (as failure
submissions, handled like an agent's own report) and escalates boards past their
deadline, and the words both use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import cast

from blackboard.supervisor.routing import RouteStep, Routing
from redis.asyncio import Redis
from tenacity import RetryCallState

from blackboard.app import Limits
from blackboard.keys import GlobalKeys
from blackboard.outages import OUTAGE, ride_out
from blackboard.queues import submit
from blackboard.records import Activation, Submission
from blackboard.status import BoardStatus

__all__ = ["Watchdog"]

log = logging.getLogger(__name__)

REPORTED_MS = 3_600_000
"""How far an activation reported as timed out moves in the open set: out of the
watchdog's way (reported once), still open until its report is handled."""


class Watchdog:
    """Watches the boards in the deployment's watch set (``GlobalKeys.watch``, scored by
    the next time something on the board is due)."""

    def __init__(
        self, redis: Redis, keys: GlobalKeys, limits: Limits, router: RouteStep, shards: int
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits
        self.router = router
        self.shards = shards

    async def run(self, stop: asyncio.Event, every_s: float = 0.05) -> None:
        """:meth:`check` every ``every_s`` until ``stop`` is set; an outage is ridden out
        (:func:`~blackboard.outages.ride_out`)."""

        def stopping(_: RetryCallState) -> bool:
            return stop.is_set()

        while not stop.is_set():
            try:
                async for attempt in ride_out("watchdog", log, stop=stopping):
                    with attempt:
                        await self.check()
            except OUTAGE:  # stopped while Redis was away
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    def cut_by_deadline(
        self, sub: Submission, activation: Activation | None, deadline: int
    ) -> bool:
        """Whether a timed-out activation was stopped by the board's deadline (which is
        then what escalates), not by its own timeout. Either the deadline has passed, or
        the activation reports the expiry of a deadline that was the board's (the
        agent's clock may be a little ahead of this one)."""
        if time.time() * 1000 >= deadline:
            return True
        return (
            activation is not None
            and activation.deadline_ms >= deadline
            and sub.reason == activation.timed_out(self.limits.activation_timeout_s)
        )

    def deadline_passed(self, deadline: int) -> str:
        """The detail of a board-deadline escalation, in the same words whoever notices
        first (the watchdog, or the report of an activation the deadline cut)."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline / 1000))
        length = self.limits.deadline_s
        budget = f"deadline_s {length:g} s after it started" if length is not None else "deadline"
        return f"board deadline passed: the board had {budget}, due at {when}"

    async def check(self) -> int:
        """Report timed-out activations (as failure submissions) and escalate boards past
        their deadline. Returns how many timeouts it reported."""
        now = int(time.time() * 1000)
        due = cast(list[str], await self.redis.zrangebyscore(self.keys.watch, "-inf", now))
        reported = 0
        for board_id in due:
            reported += await self._report_timeouts(board_id, now)
            await self._check_board(board_id, now)
        return reported

    async def _report_timeouts(self, board_id: str, now: int) -> int:
        bk = self.keys.board(board_id)
        expired = cast(list[str], await self.redis.zrangebyscore(bk.open, "-inf", now))
        reported = 0
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
                    reason=act.timed_out(self.limits.activation_timeout_s),
                ),
                self.shards,
                by_supervisor=True,  # on its own stream, which only its Redis user writes
            )
            await self.redis.zadd(bk.open, {aid: now + REPORTED_MS})  # reported once
            reported += 1
        return reported

    async def _check_board(self, board_id: str, now: int) -> None:
        """Escalate the board if its deadline passed; then watch it again by whatever is
        due next (or no longer)."""
        bk = self.keys.board(board_id)
        deadline, status = await self.redis.hmget(bk.meta, ["deadline_ms", "status"])
        if deadline and int(deadline) <= now and status == BoardStatus.ACTIVE:
            await self.router.route(
                board_id,
                Routing(
                    routing_id=f"deadline.{board_id}",
                    version=0,
                    escalate=f"deadline|{self.deadline_passed(int(deadline))}",
                ),
            )
        nxt = await self.redis.zrangebyscore(
            bk.open, "-inf", "+inf", start=0, num=1, withscores=True
        )
        future = [int(nxt[0][1])] if nxt else []
        if deadline and status == BoardStatus.ACTIVE and int(deadline) > now:
            future.append(int(deadline))
        if future:
            await self.redis.zadd(self.keys.watch, {board_id: min(future)})
        else:
            await self.redis.zrem(self.keys.watch, board_id)
