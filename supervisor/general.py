"""The general path: a submission decided in Python, then routed. Operators' commands,
agents' failure reports, summaries, and every proposal the fast paths
(:mod:`~blackboard.supervisor.fast_paths`) do not take or refuse: validation, policies,
gates and audits decide (:class:`~blackboard.supervisor.validation.Decider`), then
:class:`~blackboard.supervisor.follow_up.FollowUp` routes after the decision. Safe to
run again with the same submission: its recorded outcome is followed up, not re-decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

from blackboard.supervisor.follow_up import FollowUp
from blackboard.supervisor.operator import Operator
from blackboard.supervisor.validation import Decider

from blackboard.connection import Command
from blackboard.errors import BoardNotFound
from blackboard.records import Activation, Outcome, Submission
from blackboard.status import STOPPED

__all__ = ["GeneralPath"]


class Decided(NamedTuple):
    """A submission decided, with what following it up needs."""

    outcome: Outcome
    activation: Activation | None
    """The activation that made it, if it was read (a rewrite is given what it was)."""
    record: bool
    """Whether the outcome is new (recorded with the routing) or was recorded before."""
    deadline: int
    """The board's deadline (ms; 0: none)."""


class GeneralPath:
    """Decides, then follows up, one submission at a time, with :class:`FollowUp`'s
    parts (the app, the store, the routing step, the per-board caches).

    Args:
        decider: decides a proposal.
        follow_up: routes after the decision.
        operator: runs operators' commands.
    """

    def __init__(self, decider: Decider, follow_up: FollowUp, operator: Operator) -> None:
        self.decider = decider
        self.follow_up = follow_up
        self.operator = operator
        self.app, self.store, self.keys = follow_up.app, follow_up.store, follow_up.keys
        self.redis, self.router, self.boards = follow_up.redis, follow_up.router, follow_up.boards

    async def handle(
        self,
        sub: Submission,
        ack: tuple[str, str, str] | None,
        outgoing: list[Command] | None,
        report: str,
        before: Sequence[Command] = (),
    ) -> Outcome:
        """Decide ``sub`` and route after it (``Supervisor.handle`` says what the
        arguments are)."""
        if before:
            await self.router.pipeliner.execute(*before)
        if sub.kind == "proposal" and sub.author != self.app.summariser:
            decided = await self._proposal(sub)
        else:
            answered = await self._other(sub, ack, report)
            if isinstance(answered, Outcome):  # nothing follows it
                return answered
            decided = answered
        await self.follow_up.after_decision(
            sub,
            decided.outcome,
            decided.activation,
            record=decided.record,
            deadline=decided.deadline,
            ack=ack,
            outgoing=outgoing,
            report=report,
        )
        return decided.outcome

    async def _proposal(self, sub: Submission) -> Decided:
        """An agent's proposal. The commit script itself refuses a proposal already
        decided (a redelivery: its recorded outcome is followed up) and writes to a
        stopped board, so nothing needs reading first."""
        outcome = await self.decider.decide(sub, None)
        record = True
        if outcome.reason == "decided":
            raw = await self.redis.hget(self.keys.board(sub.board_id).results, sub.proposal_id)
            outcome, record = Outcome.model_validate_json(cast(str, raw)), False
        return Decided(outcome, None, record, await self.boards.deadline(sub.board_id))

    async def _other(
        self, sub: Submission, ack: tuple[str, str, str] | None, report: str
    ) -> Decided | Outcome:
        """A command, a failure report or a summary: what was recorded for it, the
        board's status and its activation read first, in one round trip. An outcome
        alone: answered and acknowledged, nothing to follow up (a command, a stale
        report)."""
        bk = self.keys.board(sub.board_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(bk.results, sub.proposal_id)
        pipe.hmget(bk.meta, ["status", "deadline_ms"])
        pipe.hget(bk.activations, sub.activation_id or "-")
        pipe.zscore(bk.open, sub.activation_id or "-")
        recorded, (status, deadline), act_raw, still_open = await pipe.execute()
        if status is None:  # no such board: the store's own error says which are near
            await self.store.version(sub.board_id)  # raises BoardNotFound
            raise BoardNotFound(sub.board_id)  # (created since: the redelivery sees it)
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
            outcome = await self.decider.decide(sub, activation)
        return Decided(outcome, activation, fresh, int(deadline or 0))
