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
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from blackboard.agents.runtime import GROUP as WORKERS
from blackboard.supervisor.control import Wanted, plan_after_commit
from blackboard.supervisor.routing import Routing

from blackboard import codec
from blackboard.errors import BlackboardError, ValidationFailed
from blackboard.records import (
    Activation,
    CommitResult,
    Handoff,
    LogEntry,
    Outcome,
    Proposal,
    Submission,
    new_id,
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
        source = resources.files("blackboard.supervisor").joinpath("lua", "stall.lua")
        self._stall = supervisor.redis.register_script(source.read_text())

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
        redo = await self._redo_roots(sub, to, result.version, feedback)
        await self._go_on(sub, redo, what=f"rollback to v{to} by {sub.author}", check_done=True)
        return Outcome(status="committed", version=result.version, keys=result.keys)

    async def _redo_roots(
        self, sub: Submission, to: int, rollback: int, feedback: str
    ) -> list[Wanted]:
        """Who redoes the agents' work a rollback to ``to`` (committed as ``rollback``)
        took back: the roots of that work, the writes whose activation came from the
        board at ``to`` or before (the earliest write, on a chain; each branch, on a
        fan-out); what followed from them follows again from their new commits. With
        no such write (the work began after a person's write), the earliest one."""
        board_id = sub.board_id
        names = self.sup.app.agent_names
        undone = [
            e
            for e in await self.sup.store.history(board_id, start=to + 1, end=rollback - 1)
            if e.kind == "write" and e.author in names
        ]
        if not undone:
            return []
        bk = self.sup.keys.board(board_id)
        ids = [e.activation_id or "-" for e in undone]
        records = await self.sup.redis.hmget(bk.activations, ids)
        roots: dict[str, LogEntry] = {}
        for entry, raw in zip(undone, records, strict=True):
            base = codec.load_model(Activation, raw, "an activation").base if raw else to
            if base <= to:
                roots.setdefault(entry.author, entry)
        chosen = list(roots.values()) or undone[:1]
        return [await self._redo(sub, e, feedback) for e in chosen]

    async def _redo(self, sub: Submission, write: LogEntry, feedback: str) -> Wanted:
        """The rewrite request for an agent whose ``write`` was taken back: given what the
        activation that made it was given, with ``feedback``."""
        made = sub.model_copy(update={"author": write.author, "activation_id": write.activation_id})
        return await self.sup.follow_up.rewrite(made, None, feedback)

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
        wanted = await self._redo_roots(sub, to, rollback, why)
        await self._go_on(sub, wanted, what=f"flag by {sub.author}", rewrite=culprit.author)
        return Outcome(status="committed", message=why)

    async def _go_on(
        self,
        sub: Submission,
        redo: list[Wanted],
        *,
        what: str,
        check_done: bool = False,
        rewrite: str = "",
    ) -> None:
        """Route after an operator changed a board's content (a rollback or flag), so that
        it is never left active with nothing to do: a done board is reopened; with
        ``check_done``, a board whose done condition holds is done; otherwise ``redo``
        is activated; and with nothing to activate, nothing in flight and a done
        condition that does not hold, the board waits for a person
        (``awaiting_approval``, a ``stalled`` incident saying why)."""
        board_id = sub.board_id
        bk = self.sup.keys.board(board_id)
        redis = self.sup.redis
        routing_id = f"after.{sub.proposal_id}"
        if await redis.hexists(bk.routed, routing_id):
            return  # a redelivered command: its routing ran (and set the status) already
        # The content went back: handoffs meeting it again are not a cycle of the agents'.
        await redis.hdel(bk.loops, "recent")
        if await redis.hget(bk.meta, "status") == BoardStatus.DONE:
            await redis.hset(bk.meta, "status", BoardStatus.ACTIVE)  # decided again just below
        step = Routing(routing_id=routing_id, version=0, rewrite=rewrite)
        if check_done and await self._done_now(board_id):
            step.status, redo = BoardStatus.DONE, []
        elif not redo:
            await self._stall_if_idle(board_id, what)
            return
        await self.sup.follow_up.route(
            board_id, step, redo, parent=routing_id, trace_id=sub.trace_id
        )

    async def _stall_if_idle(self, board_id: str, what: str) -> None:
        """With a done condition that does not hold, a board still active with nothing
        in flight waits for a person, atomically (``lua/stall.lua``): an agent's routing
        that finished meanwhile (made it done, activated someone) stands. Without a done
        condition an idle board is how the app's boards end."""
        if self.sup.app.done is None or await self._done_now(board_id):
            return
        await self._wait_for_a_person(
            board_id,
            f"nothing is left to act after the {what}: the done condition is false and no "
            "agent has work; write the missing keys (`blackboard set`), roll back, or "
            "start the agents that should act",
        )

    async def _wait_for_a_person(self, board_id: str, why: str) -> bool:
        """If the board is active with nothing in flight, it waits for a person
        (``awaiting_approval``, a ``stalled`` incident saying ``why``), atomically."""
        bk = self.sup.keys.board(board_id)
        now = int(time.time() * 1000)
        if not await self._stall(keys=[bk.meta, bk.open, bk.outbox, bk.incidents], args=[now, why]):
            return False
        await self.sup.redis.zadd(self.sup.keys.escalations, {board_id: now})
        return True

    async def _done_now(self, board_id: str) -> bool:
        """The app's done condition on the board as it is now."""
        app = self.sup.app
        if app.done is None:
            return False
        reads = list(app.done_reads)
        state = self.sup.keys.board(board_id).state
        values = cast(list[str | None], await self.sup.redis.hmget(state, reads or ["-"]))
        board = {
            k: codec.loads(v, f"key {k!r} of board {board_id!r}")
            for k, v in zip(reads, values, strict=False)
            if v is not None
        }
        return bool(app.done(board))

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
        await self.sup.redis.hset(
            bk.meta, mapping={"status": BoardStatus.PAUSED, "updated": int(time.time() * 1000)}
        )
        return Outcome(status="committed", message=f"paused by {sub.author}")

    async def resume(self, sub: Submission, args: dict[str, Any]) -> Outcome:
        """Back to active: loop counters reset (a human looked), and whatever the board
        needs to go on activated (:meth:`_set_going`): after resume a board is never
        active with nothing to do."""
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
        going = await self._set_going(sub, repeat=stopped_by not in REPEATS)
        return Outcome(status="committed", message=f"resumed by {sub.author}: {going}")

    async def _set_going(self, sub: Submission, *, repeat: bool = True) -> str:
        """Set a resumed board going again; says how. In this order: the outbox is
        dispatched, and open activations whose queue entry is gone (held by a process
        that was killed, dead-lettered) are dispatched again with a fresh deadline; with
        nothing open, the activations that timed out since the last commit are made
        again; failing that, routing runs as after the last commit (its handoff,
        triggers, router, done condition), or the start agents are activated on a board
        with no commit; not when ``repeat`` is False (the board was stopped by a loop,
        rewrites or a budget: routing again would repeat what stopped it), then only the
        done condition is checked. With nothing to activate and the done condition not
        met, the board waits for a human (``awaiting_approval``, a ``stalled``
        incident): a person sets a key or rolls back."""
        sup, board_id = self.sup, sub.board_id
        bk = sup.keys.board(board_id)
        outbox = await sup.router.pending(board_id)
        waiting = {aid for aid, _, _ in outbox.dispatch}
        still_open = [str(a) for a in await sup.redis.zrange(bk.open, 0, -1)]
        lost = [a for a in still_open if a not in waiting and await self._lost(board_id, a)]
        outbox.dispatch += await self._reopen_lost(board_id, lost)
        await sup.router.dispatch(board_id, outbox)
        if still_open or waiting:
            return f"{len(waiting) + len(lost)} activations dispatched, {len(still_open)} open"
        log = await sup.store.history(board_id)
        last = log[-1] if log else None
        version = last.version if last is not None else 0
        wanted = await self._timed_out_since(board_id, last.ts_ms if last is not None else 0)
        done, how = False, "timed out since the last commit, activated again"
        if not wanted:
            wanted, done, how = await self._after_last(sub, last)
            if not repeat:
                wanted = []
        step = Routing(routing_id=f"resume.{sub.proposal_id}", version=version)
        if done:
            step.status, how = BoardStatus.DONE, "its done condition holds: done"
        elif not wanted:
            how = (
                "nothing to activate and its done condition not met: waiting for a human "
                "to set a key (blackboard set) or roll back"
            )
            # atomically, before the routing that marks this resume done (a redelivery
            # redoes it): an agent's routing that finished meanwhile stands
            await self._wait_for_a_person(board_id, f"resumed by {sub.author}: {how}")
        await sup.follow_up.route(
            board_id,
            step,
            wanted,
            parent=f"resume.{sub.proposal_id}",
            trace_id=sub.trace_id or new_id(),
        )
        names = ", ".join(w.agent for w in wanted)
        return f"{names} ({how})" if wanted else how

    async def _lost(self, board_id: str, activation_id: str) -> bool:
        """Whether an open activation's queue entry is gone: not in its agent's queue,
        or there but acknowledged (taken by an instance that then did nothing, say on a
        stopped board) while the activation is still to run. An entry not yet delivered,
        or delivered and pending (a live instance works on it, or a dead one's is taken
        over), is not lost."""
        sup = self.sup
        raw = await sup.redis.hget(sup.keys.board(board_id).activations, activation_id)
        if raw is None:
            return False
        act = Activation.model_validate_json(raw)
        if act.status not in ("queued", "running"):  # it answered: its report is on its way
            return False
        stream = sup.keys.queue(act.agent)
        since = max(act.created_ms - 60_000, 0)  # other processes' clocks may be behind
        rows = cast(
            "list[tuple[str, dict[str, str]]]",
            await sup.redis.xrange(stream, min=f"{since}-0", max="+", count=100_000),
        )
        ids = [i for i, f in rows if f and f.get("activation") == activation_id]
        if not ids:
            return True
        groups = [g for g in await sup.redis.xinfo_groups(stream) if g["name"] == WORKERS]
        if not groups:
            return False  # no instance has read the queue yet: it is waiting there
        delivered = _entry_id(str(groups[0]["last-delivered-id"]))
        for i in ids:
            if _entry_id(i) > delivered:
                return False
            if await sup.redis.xpending_range(stream, WORKERS, min=i, max=i, count=1):
                return False
        return True

    async def _reopen_lost(self, board_id: str, lost: list[str]) -> list[tuple[str, str, str]]:
        """The lost activations with a fresh deadline (the old one may have passed), as
        outbox rows to dispatch."""
        sup = self.sup
        bk = sup.keys.board(board_id)
        rows = []
        now = int(time.time() * 1000)
        due = now + int(sup.app.limits.activation_timeout_s * 1000)
        if deadline := await sup.boards.deadline(board_id):
            due = min(due, deadline)
        for aid in lost:
            raw = await sup.redis.hget(bk.activations, aid)
            if raw is None:
                continue
            act = Activation.model_validate_json(raw)
            act.deadline_ms, act.status = due, "queued"
            await sup.router.pipeliner.execute(
                sup.router.watch(board_id, due),
                ("zadd", (bk.open, {aid: due}), {}),
                ("hset", (bk.activations, aid, act.model_dump_json()), {}),
            )
            entry = codec.dumps({"agent": act.agent, "board": board_id, "activation": aid})
            rows.append((aid, act.agent, entry))
        return rows

    async def _timed_out_since(self, board_id: str, since_ms: int) -> list[Wanted]:
        """The activations created since ``since_ms`` whose outcome is a timeout (their
        agent's own report, or the watchdog's), as wanted again: same agent, reason,
        payload and feedback."""
        sup = self.sup
        bk = sup.keys.board(board_id)
        records = [Activation.model_validate_json(r) for r in await sup.redis.hvals(bk.activations)]
        recent = sorted(
            (a for a in records if a.created_ms >= since_ms), key=lambda a: a.created_ms
        )
        wanted: dict[tuple[str, str], Wanted] = {}
        for act in recent:
            ids = [f"timeout.{act.activation_id}", act.activation_id]
            outcomes = [
                Outcome.model_validate_json(o) for o in await sup.redis.hmget(bk.results, ids) if o
            ]
            if not any(o.reason == "timeout" for o in outcomes):
                continue
            payload = dict(act.payload)
            key = (act.agent, str(payload.get("key", "")))
            wanted[key] = Wanted(act.agent, act.reason, payload, feedback=act.feedback)
        return list(wanted.values())

    async def _after_last(
        self, sub: Submission, last: LogEntry | None
    ) -> tuple[list[Wanted], bool, str]:
        """Who acts as after the last commit (its handoff, triggers, router, done
        condition); after a rollback, the roots of the work it took back
        (:meth:`_redo_roots`); the start agents if nothing was committed."""
        sup, board_id = self.sup, sub.board_id
        if last is None:
            return [Wanted(name, "start") for name in sup.app.start], False, "started again"
        if last.kind == "rollback" and last.outcome.startswith("restored:"):
            to = int(last.outcome.partition(":")[2])
            if await self._done_now(board_id):
                return [], True, "its done condition holds"
            feedback = f"the board was rolled back to v{to} ({last.reason}); redo your work"
            redo = await self._redo_roots(sub, to, last.version, feedback)
            return redo, False, f"redoing what the rollback to v{to} took back"
        handoff = None
        if last.author in sup.app.agent_names and last.activation_id:
            raw = await sup.redis.hget(sup.keys.board(board_id).activations, last.activation_id)
            output = codec.load_model(Activation, raw, "an activation").output if raw else {}
            if output.get("handoff"):
                handoff = Handoff.model_validate(output["handoff"])
        board = (await sup.store.read(board_id)).data
        plan = plan_after_commit(
            sup.app, author=last.author, handoff=handoff, changed=last.keys, board=board, failed={}
        )
        return plan.activations, plan.done, f"routed as after v{last.version}"

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
        await self._stall_if_idle(sub.board_id, f"set by {sub.author}")
        return outcome


def _entry_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id, comparable."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
