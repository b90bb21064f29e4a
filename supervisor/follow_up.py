"""Follow-up after a decision: what the supervisor does once a submission is decided
(committed, rejected, held, failed). It builds the routing step (counters, handoff
pairs, a rewrite request, the board's new status), works out who acts next (handoff,
triggers, router, summarisation, a partial join past a timed-out branch, the redo of
writes an audit rollback dropped), then runs the step (:class:`RouteStep`) and
dispatches. The one seam the operator's commands use to route after their own changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from blackboard.supervisor.boards import Boards
from blackboard.supervisor.compliance import Compliance
from blackboard.supervisor.control import (
    Reason,
    Wanted,
    join_keys,
    key_versions,
    plan_after_commit,
    reads_for,
)
from blackboard.supervisor.deadlines import Watchdog
from blackboard.supervisor.incidents import Incidents
from blackboard.supervisor.routing import RouteStep, Routing
from blackboard.supervisor.summarisation import Crossings
from redis.asyncio import Redis

from blackboard import codec
from blackboard.app import App
from blackboard.connection import Command
from blackboard.keys import GlobalKeys
from blackboard.records import Activation, Outcome, Submission
from blackboard.status import BoardStatus
from blackboard.store import BoardStore

__all__ = ["WAITING", "FollowUp", "activation_id"]

AWAITING_APPROVAL = BoardStatus.AWAITING_APPROVAL
WAITING = frozenset({BoardStatus.ESCALATED, BoardStatus.FAILED, AWAITING_APPROVAL})
"""Statuses that put a board on the escalations list (a human is needed)."""
NOTHING_FOLLOWS = ("board_stopped", "stale", "rolled_back")
"""Outcome reasons after which routing only closes the activation."""


def activation_id(parent: str, agent: str, extra: str = "") -> str:
    """Deterministic, so a redelivered submission re-creates the same activations."""
    return "a" + codec.content_hash(f"{parent}>{agent}:{extra}")


@dataclass(eq=False)
class FollowUp:
    """Routes after decisions, for one supervisor process."""

    app: App
    store: BoardStore
    keys: GlobalKeys
    router: RouteStep
    """Runs the routing step and dispatches."""
    boards: Boards
    """This process's per-board caches."""
    watchdog: Watchdog
    """The words of a deadline escalation."""
    compliance: Compliance
    """Which writes an audit rollback dropped."""
    incidents: Incidents
    """Where a human request, a fatal error, a compensation is told."""
    redis: Redis = field(init=False)
    crossings: Crossings = field(init=False)
    """Which summarisable keys are due, once per threshold crossing."""
    partial_joins: bool = field(init=False)
    """Whether a trigger is a partial join (routing then reads the loop state)."""

    def __post_init__(self) -> None:
        self.redis = self.store.redis
        self.crossings = Crossings(self.redis, self.app)
        self.partial_joins = any(t.join and t.partial for a in self.app.agents for t in a.triggers)

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
            redo = await self.rewrite(made, None, feedback)
            wanted.append(replace(redo, origin=e.activation_id or e.proposal_id))
        return wanted

    async def after_decision(
        self,
        sub: Submission,
        outcome: Outcome,
        activation: Activation | None,
        *,
        record: bool = True,
        deadline: int | None = None,
        ack: tuple[str, str, str] | None = None,
        outgoing: list[Command] | None = None,
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
        if outcome.reason in NOTHING_FOLLOWS:
            pass  # nothing follows; routing only closes the activation
        elif outcome.status == "committed" and not outcome.audit:
            step.reset_rewrite = sub.author
            # with audits, what passed decides (recorded above)
            step.compliant = bool(outcome.keys) and not self.app.audits
            if sub.handoff is not None:
                step.pairs.append(f"{sub.author}>{sub.handoff.to}")
            wanted, done = await self._next(sub, outcome, board, versions)
            if done:
                step.status = BoardStatus.DONE
        elif outcome.status in ("rejected", "failed") and sub.error in ("", "semantic"):
            if agent_known:
                step.rewrite = sub.author
                step.pairs.append(f"{sub.author}>{sub.author}:rewrite")
                wanted = [await self.rewrite(sub, activation, outcome.message)]
        elif outcome.audit:
            step.rewrite = sub.author
            step.pairs.append(f"{sub.author}>{sub.author}:audit")
            wanted = [await self.rewrite(sub, activation, outcome.message)]
            wanted += await self._redo_dropped(sub, outcome)
        elif outcome.status == "held":
            step.status = AWAITING_APPROVAL
        else:
            wanted = await self._after_failure(sub, step, activation, deadline)
        parent = sub.activation_id or sub.proposal_id
        await self.route(
            board_id,
            step,
            wanted,
            parent=parent,
            trace_id=sub.trace_id or (activation.trace_id if activation else ""),
            deadline=deadline,
            ack=ack,
            outgoing=outgoing,
        )

    async def rewrite(
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
        reason: Reason = "summarise" if activation.reason == "summarise" else "rewrite"
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
            deadline = await self.boards.deadline(sub.board_id)
        if (
            sub.error == "timeout"
            and deadline
            and self.watchdog.cut_by_deadline(sub, activation, deadline)
        ):
            step.escalate = f"deadline|{self.watchdog.deadline_passed(deadline)}"
        elif sub.error == "timeout":
            wanted, escalate = await self._after_timeout(sub)
            if escalate:
                step.escalate = f"timeout|{sub.reason}"
        elif sub.error == "human":
            step.status = AWAITING_APPROVAL
            await self.incidents.record(sub.board_id, "human_input", sub.reason)
        elif sub.error == "fatal":
            step.status = BoardStatus.FAILED
            await self.incidents.record(sub.board_id, "fatal", f"{sub.author}: {sub.reason}")
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
        :meth:`~blackboard.supervisor.fast_paths.FastPaths.commit_read`)."""
        changed = outcome.keys
        reads = reads_for(self.app, changed)
        joins = join_keys(self.app, changed)
        summarisable = [k for k in changed if self.app.schema.keys[k].summarisable]
        need_loops = bool(summarisable) or self.partial_joins
        replies: list[Any] = [[], {}, []]
        bk = self.keys.board(sub.board_id)
        # the read path (FastPaths.shape_path) never has summarisable keys or partial joins
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
                versions = key_versions(joins, replies.pop())
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

    async def route(
        self,
        board_id: str,
        step: Routing,
        wanted: list[Wanted],
        *,
        parent: str,
        trace_id: str,
        deadline: int | None = None,
        ack: tuple[str, str, str] | None = None,
        outgoing: list[Command] | None = None,
    ) -> None:
        now = int(time.time() * 1000)
        if deadline is None:
            deadline = await self.boards.deadline(board_id)
        due = self.add_activations(step, wanted, board_id, parent, trace_id, deadline, now)
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
        self.boards.saw(board_id, result.status)
        await self.router.dispatch(
            board_id, result, ack=ack, outgoing=outgoing, fresh=step.activations, context=read
        )
        if result.status in WAITING:
            await self.redis.zadd(self.keys.escalations, {board_id: now})

    def add_activations(
        self,
        step: Routing,
        wanted: list[Wanted],
        board_id: str,
        parent: str,
        trace_id: str,
        deadline: int,
        now: int,
        base: int | None = None,
    ) -> int:
        """Add the wanted activations of ``board_id`` to the step (made by ``parent``,
        due by ``deadline`` at the latest; ``base``: the version they read, else the
        step's); returns their deadline."""
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
                    reason=w.reason,
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
            await self.incidents.record(
                board_id, "compensation_failed", f"{type(exc).__name__}: {exc}"
            )
            return
        if undone:
            await self.incidents.record(board_id, "compensated", ", ".join(undone))
