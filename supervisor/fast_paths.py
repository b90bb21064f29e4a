"""The fast paths: a proposal whose commit and routing need no decision in Python.

:data:`ATOMIC`: what follows a successful commit is known before it (a handoff at most),
so the commit and the routing are one script call (``lua/commit_route.lua``), one round
trip; in bulk, a wave of boards shares it (:mod:`~blackboard.supervisor.intake`).
:data:`READ`: routing reads the board the commit made (triggers, the done condition, the
router), so the commit goes with a read of those keys, then routing follows.
Anything else (policies, gates, audits, a summarisable key, a patch that reads the
board, a bad handoff) takes the general path (:mod:`~blackboard.supervisor.general`), as
does a proposal these refuse (invalid, a duplicate, a conflict): it says why.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from blackboard.supervisor.control import Wanted, join_keys, key_versions, reads_for
from blackboard.supervisor.follow_up import WAITING, FollowUp
from blackboard.supervisor.routing import Routing

from blackboard import codec
from blackboard.connection import Command
from blackboard.errors import ProposalRejected
from blackboard.patch import is_blind
from blackboard.records import CommitResult, Outcome, ProposalFields, Submission
from blackboard.store import PreparedCommit, redis_failures

__all__ = ["ATOMIC", "GENERAL", "READ", "FastPaths", "Path", "Planned"]

Path = Literal["atomic", "read", "general"]
ATOMIC: Path = "atomic"
READ: Path = "read"
GENERAL: Path = "general"
"""How a proposal is handled: commit and routing in one script; the commit with the
keys routing reads in one round trip, then routing; or decided, then routed."""
SHAPE_OPS, SHAPE_PATH = 8, 200
"""A shape is cached only if it is small: at most this many operations, each path at
most this long (a key is not, say, a megabyte path an agent sent)."""


@dataclass
class Planned:
    """A proposal's commit and routing as one script call, ready to send."""

    sub: Submission
    proposal: ProposalFields
    step: Routing
    commands: list[Command]
    """The watchdog told first (when it activates an agent), then the script."""
    context: list[str]
    now: int


class FastPaths:
    """The atomic and read paths of one supervisor process: follow-up planned before
    the commit and sent with it, so they work with :class:`FollowUp`'s parts (the app,
    the store, the routing step, the per-board caches)."""

    def __init__(self, follow_up: FollowUp) -> None:
        self.follow_up = follow_up
        self.app, self.store, self.keys = follow_up.app, follow_up.store, follow_up.keys
        self.redis, self.router, self.boards = follow_up.redis, follow_up.router, follow_up.boards
        self._shapes: dict[tuple[Any, ...], Path] = {}
        source = resources.files("blackboard.supervisor").joinpath("lua", "read_versions.lua")
        self._read_versions = self.redis.register_script(source.read_text())

    def atomic(self, sub: Submission) -> bool:
        """True when the submission's commit and routing are one script."""
        return (
            sub.kind == "proposal"
            and sub.author != self.app.summariser
            and self.path(sub) == ATOMIC
        )

    def path(self, sub: Submission) -> Path:
        """How a proposal is handled (:data:`ATOMIC`, :data:`READ` or :data:`GENERAL`,
        see :meth:`shape_path`). It depends only on the submission's shape (author,
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
            known = self.shape_path(sub)
            # bounded, like the store's caches; a shape is kept only if it is small
            if len(sub.patch) <= SHAPE_OPS and all(
                len(str(op.get("path"))) <= SHAPE_PATH for op in sub.patch
            ):
                if len(self._shapes) >= self.store.CACHE_LIMIT:
                    self._shapes.clear()
                self._shapes[shape] = known
        return known

    def shape_path(self, sub: Submission) -> Path:
        """:data:`ATOMIC` when what follows a successful commit is known before it: no
        policy, gate or audit to run, a blind patch, and no trigger, done condition,
        router or summarisation that depends on the keys it writes (a handoff at most).
        :data:`READ` when only triggers, the done condition or the router depend on
        them. :data:`GENERAL` otherwise."""
        app = self.app
        if app.policies or app.gates or app.audits or self.follow_up.partial_joins:
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

    async def commit_routed(
        self,
        sub: Submission,
        ack: tuple[str, str, str] | None,
        outgoing: list[Command] | None,
        report: str,
    ) -> Outcome | None:
        """Commit and route in one atomic script (one round trip). None: take the
        general path (the proposal is invalid, a duplicate, or the commit was refused),
        which decides and records the outcome properly."""
        planned = await self.plan_routed(sub, report)
        if planned is None:
            return None
        async with redis_failures(f"commit to board {sub.board_id!r}"):
            replies = await self.router.pipeliner.execute(*planned.commands, *self.wait_commands())
        acked = replies[-1] if self.store.settings.wait_replicas else None
        reply = replies[len(planned.commands) - 1]
        commit = await self.settle_routed(planned, reply, ack, outgoing, replicas=acked)
        if commit is None:
            return None
        return Outcome(status="committed", version=commit.version, keys=commit.keys)

    async def commit_read(
        self,
        sub: Submission,
        proposal: ProposalFields,
        prepared: PreparedCommit,
        ack: tuple[str, str, str] | None,
        outgoing: list[Command] | None,
        report: str,
        before: Sequence[Command],
    ) -> Outcome | None:
        """Commit (:meth:`prepared`), and read what routing needs of the board it
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
                *before, self.store.commit_command(prepared), *self.wait_commands(), read
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
        await self.follow_up.after_decision(
            sub,
            outcome,
            None,
            deadline=await self.boards.deadline(board_id),
            ack=ack,
            outgoing=outgoing,
            report=report,
            board=board,
            versions=None if versions is None else key_versions(joins, versions),
        )
        return outcome

    def wait_commands(self) -> list[Command]:
        """With ``Settings.wait_replicas``, the WAIT to send right after commit scripts,
        on their connection (WAIT counts the replicas that have that connection's
        writes): one for a whole wave."""
        if not self.store.settings.wait_replicas:
            return []
        return [("execute_command", self.store.wait_command(), {})]

    async def prepared(self, sub: Submission) -> tuple[ProposalFields, PreparedCommit] | None:
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

    async def plan_routed(self, sub: Submission, report: str) -> Planned | None:
        """Validate a proposal and build its commit-and-route script call; None if it
        is invalid or already committed (the general path says so)."""
        ready = await self.prepared(sub)
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
        due = self.follow_up.add_activations(
            step,
            wanted,
            sub.board_id,
            sub.activation_id or sub.proposal_id,
            sub.trace_id,
            await self.boards.deadline(sub.board_id),
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
        return Planned(sub, proposal, step, commands, context, now)

    async def settle_routed(
        self,
        planned: Planned,
        reply: list[Any],
        ack: tuple[str, str, str] | None,
        outgoing: list[Command] | None,
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
        self.boards.saw(board_id, routed.status)
        commit = await self.store.finish(
            board_id, planned.proposal, commit_reply, replicas=replicas
        )
        for act in step.activations:
            act.base = commit.version  # the script filled in the same placeholder
        await self.router.dispatch(
            board_id, routed, ack=ack, outgoing=outgoing, fresh=step.activations, context=read
        )
        if routed.status in WAITING:
            await self.redis.zadd(self.keys.escalations, {board_id: planned.now})
        return commit
