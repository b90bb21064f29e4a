"""Operators' commands, executed by the supervisor on the same validated commit path as
agents' proposals and logged with the operator's name: approve / reject a held proposal,
roll back (to a version, to the compliant version, or to before an agent's last commit),
flag the current version, pause, resume.

Commands arrive as submissions of kind ``command`` (the CLI appends them to the
supervisor's stream and waits for the outcome) or are called directly in embedded mode.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from blackboard.supervisor.resumption import Resumption

from blackboard.errors import BlackboardError, ValidationFailed
from blackboard.records import (
    CommitResult,
    Outcome,
    Proposal,
    Submission,
)
from blackboard.schema import HUMAN
from blackboard.status import BoardStatus

if TYPE_CHECKING:
    from blackboard.supervisor.process import Supervisor

__all__ = ["Operator"]

REPEATS = ("loop", "rewrites", "budget")
"""Escalations that routing the board again would only repeat: after them, resume
activates nothing new (a person changes the board first)."""
COMMANDS = ("approve", "reject", "rollback", "flag", "pause", "resume", "set")


class Operator:
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.resumption = Resumption(supervisor)

    async def command(self, sub: Submission, recorded: str | None) -> Outcome:
        """Run one command once (its proposal id makes it idempotent)."""
        if recorded is not None:
            return Outcome.model_validate_json(recorded)
        if sub.command not in COMMANDS:
            outcome = Outcome(
                status="rejected",
                reason="usage",
                message=(f"unknown command {sub.command!r}; commands are {', '.join(COMMANDS)}."),
            )
        else:
            try:
                if sub.command in ("pause", "resume"):
                    await self._not_done(sub)
                outcome = await getattr(self, sub.command)(sub, sub.args)
            except BlackboardError as exc:
                outcome = Outcome(status="rejected", reason=type(exc).__name__, message=str(exc))
            except (ValueError, TypeError, KeyError) as exc:  # malformed arguments
                outcome = Outcome(
                    status="rejected",
                    reason="usage",
                    message=(
                        f"bad arguments for {sub.command}: {type(exc).__name__}: {exc}. See "
                        f"`blackboard {sub.command} --help`."
                    ),
                )
        bk = self.sup.keys.board(sub.board_id)
        await self.sup.redis.hset(bk.results, sub.proposal_id, outcome.model_dump_json())
        return outcome

    # -- gates ----------------------------------------------------------------------

    async def _held(self, sub: Submission, args: dict[str, Any]) -> Submission:
        bk = self.sup.keys.board(sub.board_id)
        pid = str(args.get("proposal_id", ""))
        if not pid:  # the only held proposal, for convenience
            held = await self.sup.redis.hkeys(bk.held)
            if not held:
                raise ValidationFailed(
                    f"board {sub.board_id!r} holds no proposal waiting for approval; see "
                    "`blackboard escalations` for what is waiting.",
                    rule="usage",
                )
            if len(held) > 1:
                raise ValidationFailed(
                    f"board {sub.board_id!r} holds {len(held)} proposals; name the one to "
                    "act on with --proposal.",
                    rule="usage",
                )
            pid = str(held[0])
        raw = await self.sup.redis.hget(bk.held, pid)
        if raw is None:
            raise ValidationFailed(
                f"board {sub.board_id!r} holds no proposal {pid!r}; see "
                "`blackboard escalations` for what is waiting.",
                rule="usage",
            )
        return Submission.model_validate_json(raw)

    async def approve(self, sub: Submission, args: dict[str, Any]) -> Outcome:
        """Commit a held proposal, recorded as the approver's. Every step is idempotent
        and the hold is released last, so a supervisor killed half-way redoes the rest."""
        held = await self._held(sub, args)
        note = str(args.get("note", ""))
        proposal = held.proposal().model_copy(
            update={
                # Its own id: the held one is recorded as decided ("held"); this one
                # makes a repeated approval commit once.
                "proposal_id": f"approved.{held.proposal_id}",
                "author": sub.author,
                "reason": f"approved {held.proposal_id} of {held.author}: {note}".strip(": "),
            }
        )
        decision = await self.sup.validator.decide(
            sub.board_id, proposal, kind="approval", gates=False
        )
        await self._reopen(sub.board_id)
        if decision.status != "committed" or decision.commit is None:
            outcome = Outcome(status="rejected", reason=decision.reason, message=decision.message)
            followed = held
        else:
            outcome = Outcome(
                status="committed", version=decision.commit.version, keys=decision.commit.keys
            )
            followed = held.model_copy(update={"proposal_id": f"approved.{held.proposal_id}"})
            await self.sup.decider.passed(sub.board_id, outcome)  # a person's: no audit runs on it
        await self._record(held, outcome)
        await self.sup.follow_up.after_decision(followed, outcome, None)
        await self.release(sub, held, outcome)
        return outcome

    async def reject(self, sub: Submission, args: dict[str, Any]) -> Outcome:
        """Return a held proposal to its agent as a rewrite request with the note."""
        held = await self._held(sub, args)
        note = str(args.get("note", "")) or "rejected by an operator"
        await self._reopen(sub.board_id)
        outcome = Outcome(
            status="rejected",
            reason="gate_rejected",
            message=f"{sub.author} rejected the proposal: {note}",
        )
        await self._record(held, outcome)
        await self.sup.follow_up.after_decision(
            held.model_copy(update={"proposal_id": f"rejected.{held.proposal_id}"}), outcome, None
        )
        answer = Outcome(status="committed", message=outcome.message)
        await self.release(sub, held, answer)
        return answer

    async def _reopen(self, board_id: str) -> None:
        """Back to active, only from awaiting_approval: a redelivered command must not
        reopen a board its first run already finished."""
        bk = self.sup.keys.board(board_id)
        if await self.sup.redis.hget(bk.meta, "status") == BoardStatus.AWAITING_APPROVAL:
            await self.sup.redis.hset(bk.meta, "status", BoardStatus.ACTIVE)
            await self.sup.redis.zrem(self.sup.keys.escalations, board_id)

    async def release(self, sub: Submission, held: Submission, answer: Outcome) -> None:
        """The command's answer and the hold's release, together and last."""
        bk = self.sup.keys.board(sub.board_id)
        pipe = self.sup.redis.pipeline(transaction=True)
        pipe.hset(bk.results, sub.proposal_id, answer.model_dump_json())
        pipe.hdel(bk.held, held.proposal_id)
        await pipe.execute()

    async def _record(self, held: Submission, outcome: Outcome) -> None:
        bk = self.sup.keys.board(held.board_id)
        await self.sup.redis.hset(bk.results, held.proposal_id, outcome.model_dump_json())

    # -- rollback and compliance ------------------------------------------------------

    async def rollback(self, sub: Submission, args: dict[str, Any]) -> Outcome:
        store = self.sup.store
        if args.get("compliant"):
            to = int(
                await self.sup.redis.hget(self.sup.keys.board(sub.board_id).meta, "compliant") or 0
            )
        elif args.get("before_agent"):
            to = await self.before_agent(sub.board_id, str(args["before_agent"]))
        elif "to" in args:
            to = int(args["to"])
        else:
            raise ValidationFailed(
                "rollback needs one of to=V, compliant=True or before_agent=NAME.", rule="usage"
            )
        why = sub.reason or f"operator rollback to v{to}"
        current = await store.version(sub.board_id)
        if not 0 <= to <= current:
            raise ValidationFailed(
                f"cannot roll board {sub.board_id!r} back to v{to}: its versions are 0 to "
                f"v{current}. See `blackboard history {sub.board_id}`.",
                rule="usage",
            )
        result = await self._claimed_rollback(
            sub.board_id, to, by=sub.author, why=why, proposal_id=f"rb.{sub.proposal_id}"
        )
        feedback = f"{sub.author} rolled the board back to v{to}: {why}; redo your work"
        await self._drop_holds(sub, to, f"{sub.author} rolled the board back to v{to}: {why}")
        redo = await self.resumption.redo_roots(sub, to, result.version, feedback)
        await self.resumption.go_on(
            sub, redo, what=f"rollback to v{to} by {sub.author}", check_done=True
        )
        return Outcome(status="committed", version=result.version, keys=result.keys)

    async def _drop_holds(self, sub: Submission, to: int, why: str) -> None:
        """Answer and release the held proposals made on content a rollback to ``to``
        took back (their base is newer): approving one would bring that content back,
        and the redo proposes afresh. With no hold left, a board awaiting approval is
        active again, so the redo is dispatched."""
        bk = self.sup.keys.board(sub.board_id)
        held = [Submission.model_validate_json(raw) for raw in await self.sup.redis.hvals(bk.held)]
        stale = [h for h in held if h.base > to]
        if stale:
            answer = Outcome(status="rejected", reason="rolled_back", message=why)
            pipe = self.sup.redis.pipeline(transaction=True)
            for h in stale:
                pipe.hset(bk.results, h.proposal_id, answer.model_dump_json())
                pipe.hdel(bk.held, h.proposal_id)
            await pipe.execute()
        if len(stale) == len(held):
            await self._reopen(sub.board_id)

    async def before_agent(self, board_id: str, agent: str) -> int:
        for entry in reversed(await self.sup.store.history(board_id)):
            if entry.author == agent and entry.kind == "write":
                return entry.version - 1
        raise ValidationFailed(
            f"agent {agent!r} has no commit on board {board_id!r}.", rule="usage"
        )

    async def _claimed_rollback(
        self,
        board_id: str,
        to: int,
        *,
        by: str,
        why: str,
        proposal_id: str,
        keep: Sequence[str] = (),
        claim: str = "rollback",
    ) -> CommitResult:
        """Roll back to ``to``, claimed first as an audit rollback is
        (:meth:`Compliance.restore`): an audit of a version it drops that passes later
        makes nothing compliant, and no later rollback restores it. A rollback that
        cannot be committed gives its claim up, so what it would have dropped stays."""
        compliance = self.sup.compliance
        await compliance.restore(board_id, to, proposal_id, why, by=claim)
        try:
            return await self.sup.store.rollback(
                board_id, to=to, author=by, reason=why, proposal_id=proposal_id, keep=keep
            )
        except BlackboardError:
            await compliance.abandon(board_id, proposal_id)
            raise

    async def restore_compliant(
        self, board_id: str, *, by: str, why: str, proposal_id: str, keep: Sequence[str] = ()
    ) -> int:
        """Roll back to the compliant version (``keep``: keys left as they are); returns
        the version restored."""
        bk = self.sup.keys.board(board_id)
        to = int(await self.sup.redis.hget(bk.meta, "compliant") or 0)
        result = await self._claimed_rollback(
            board_id, to, by=by, why=why, proposal_id=proposal_id, keep=keep, claim="flag"
        )
        await self.sup.compliance.passed(board_id, result.version)  # the target's content
        await self.sup.incidents.record(board_id, "rollback", f"{why} (to v{to})", result.version)
        return to

    async def flag(self, sub: Submission, args: dict[str, Any]) -> Outcome:
        """An upheld flag on the current version: the newest agent write is taken back
        and its author redoes the work with the flag as feedback.

        Exactly what it restores: every key as it was just before that write (or at the
        compliant version, if that is older), except the keys the board gives to
        ``human``, which keep what a person last set. A done board is reopened."""
        bk = self.sup.keys.board(sub.board_id)
        compliant = int(await self.sup.redis.hget(bk.meta, "compliant") or 0)
        culprit = None
        for entry in reversed(await self.sup.store.history(sub.board_id)):
            if entry.kind == "write" and entry.author in self.sup.app.agent_names:
                culprit = entry
                break
        if culprit is None:
            raise ValidationFailed(
                f"board {sub.board_id!r} has no agent write to flag.", rule="usage"
            )
        to = min(compliant, culprit.version - 1)
        why = f"flagged by {sub.author}: {sub.reason or args.get('reason', '')}".strip(": ")
        await self.sup.redis.hset(bk.meta, "compliant", to)
        people = [k for k, spec in self.sup.app.schema.keys.items() if spec.owner == HUMAN]
        await self.restore_compliant(
            sub.board_id, by=sub.author, why=why, proposal_id=f"flag.{sub.proposal_id}", keep=people
        )
        rollback = await self.sup.store.version(sub.board_id)
        await self._drop_holds(sub, to, why)
        wanted = await self.resumption.redo_roots(sub, to, rollback, why)
        await self.resumption.go_on(
            sub, wanted, what=f"flag by {sub.author}", rewrite=culprit.author
        )
        return Outcome(status="committed", message=why)

    async def _not_done(self, sub: Submission) -> None:
        status = await self.sup.redis.hget(self.sup.keys.board(sub.board_id).meta, "status")
        if status == BoardStatus.DONE:
            raise ValidationFailed(
                f"board {sub.board_id!r} is done; {sub.command} applies to active, paused or "
                "escalated boards. To reopen a done board, roll it back (`blackboard "
                "rollback`) or flag it (`blackboard flag`).",
                rule="usage",
            )

    # -- lifecycle -------------------------------------------------------------------

    async def pause(self, sub: Submission, args: dict[str, Any]) -> Outcome:
        bk = self.sup.keys.board(sub.board_id)
        if await self.sup.redis.hget(bk.meta, "status") == BoardStatus.PAUSED:
            return Outcome(
                status="committed",
                message=f"already paused; resume it with `blackboard resume {sub.board_id}`",
            )
        await self.sup.redis.hset(
            bk.meta, mapping={"status": BoardStatus.PAUSED, "updated": int(time.time() * 1000)}
        )
        return Outcome(status="committed", message=f"paused by {sub.author}")

    async def resume(self, sub: Submission, args: dict[str, Any]) -> Outcome:
        """Back to active: loop counters reset (a human looked), and whatever the board
        needs to go on activated (:meth:`Resumption.set_going`): after resume a board is never
        active with nothing to do."""
        names = self.sup.app.agent_names
        if unknown := sorted(set(map(str, args.get("rerun", ()))) - set(names)):
            raise ValidationFailed(
                f"cannot re-run {', '.join(unknown)}: not an agent of the app; its agents "
                f"are {', '.join(names)}.",
                rule="usage",
            )
        bk = self.sup.keys.board(sub.board_id)
        if await self.sup.redis.hexists(bk.routed, f"resume.{sub.proposal_id}"):
            # a redelivered resume whose routing ran: it set the status already
            return Outcome(status="committed", message=f"resumed by {sub.author}")
        status, why = await self.sup.redis.hmget(bk.meta, ["status", "escalated_reason"])
        # what stopped it, if it is stopped (a reason left from an earlier escalation
        # says nothing about a board paused since)
        stopped_by = str(why or "").split(":")[0] if status == BoardStatus.ESCALATED else ""
        await self.sup.redis.hdel(bk.meta, "escalated_reason")
        loops = await self.sup.redis.hkeys(bk.loops)
        stale = [k for k in map(str, loops) if not k.startswith("sum:")]
        if stale:
            await self.sup.redis.hdel(bk.loops, *stale)
        await self.sup.redis.hset(
            bk.meta, mapping={"status": BoardStatus.ACTIVE, "updated": int(time.time() * 1000)}
        )
        await self.sup.redis.zrem(self.sup.keys.escalations, sub.board_id)
        going = await self.resumption.set_going(sub, repeat=stopped_by not in REPEATS)
        return Outcome(status="committed", message=f"resumed by {sub.author}: {going}")

    async def set(self, sub: Submission, args: dict[str, Any]) -> Outcome:
        """A person writes the keys the board model gives to ``human`` (e.g. answering a
        :class:`~blackboard.agents.HumanAgent`), validated like any proposal; the board
        goes back to active and routing continues from the commit."""
        values = args.get("values")
        if not isinstance(values, dict) or not values:
            raise ValidationFailed(
                "set needs values={key: value, ...} for keys owned by 'human'.", rule="usage"
            )
        bk = self.sup.keys.board(sub.board_id)
        reopened = await self.sup.redis.hget(bk.meta, "status") == BoardStatus.DONE and not (
            await self.sup.redis.hexists(bk.routed, f"set.{sub.proposal_id}")
        )  # (a redelivered set whose routing ran: that routing set the status already)
        if reopened:  # a person's write reopens a done board; routing decides again
            await self.sup.redis.hset(bk.meta, "status", BoardStatus.ACTIVE)
        base = await self.sup.store.version(sub.board_id)
        proposal = Proposal.updates(
            HUMAN,
            base,
            values,
            proposal_id=f"set.{sub.proposal_id}",
            reason=f"set by {sub.author}: {sub.reason}".strip(": "),
        )
        decision = await self.sup.validator.decide(sub.board_id, proposal, gates=False)
        if decision.status != "committed" or decision.commit is None:
            if reopened:  # nothing changed: done as it was
                await self.sup.redis.hset(bk.meta, "status", BoardStatus.DONE)
            return Outcome(status="rejected", reason=decision.reason, message=decision.message)
        if await self.sup.redis.hget(bk.meta, "status") == BoardStatus.AWAITING_APPROVAL:
            await self.sup.redis.hset(bk.meta, "status", BoardStatus.ACTIVE)
            await self.sup.redis.zrem(self.sup.keys.escalations, sub.board_id)
        outcome = Outcome(
            status="committed", version=decision.commit.version, keys=decision.commit.keys
        )
        await self.sup.decider.passed(sub.board_id, outcome)  # a person's: no audit runs on it
        human = sub.model_copy(
            update={"author": HUMAN, "proposal_id": f"set.{sub.proposal_id}", "handoff": None}
        )
        await self.sup.follow_up.after_decision(human, outcome, None)
        # Only the idle check, atomic: an agent this commit activated may finish (and
        # make the board done) at any moment, which must stand.
        await self.resumption.stall_if_idle(sub.board_id, f"set by {sub.author}")
        return outcome
