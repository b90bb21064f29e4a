"""Setting a board going again after an operator resumed it, rolled it back or flagged
it, so that it is never left active with nothing to do: the outbox dispatched, lost
activations made again, the roots of work a rollback took back redone, routing run as
after the last commit, the done condition checked; with nothing to activate, the board
waits for a person (``lua/stall.lua``, atomically).
"""

from __future__ import annotations

import time
from importlib import resources
from typing import TYPE_CHECKING, cast

from blackboard.agents.runtime import GROUP as WORKERS
from blackboard.supervisor.control import Wanted, plan_after_commit
from blackboard.supervisor.routing import Routing

from blackboard import codec
from blackboard.records import Activation, Handoff, LogEntry, Outcome, Submission, new_id
from blackboard.status import BoardStatus

if TYPE_CHECKING:
    from blackboard.supervisor.process import Supervisor

__all__ = ["Resumption"]


class Resumption:
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        source = resources.files("blackboard.supervisor").joinpath("lua", "stall.lua")
        self._stall = supervisor.redis.register_script(source.read_text())

    async def redo_roots(
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

    async def go_on(
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
        if check_done and await self.done_now(board_id):
            step.status, redo = BoardStatus.DONE, []
        elif not redo:
            await self.stall_if_idle(board_id, what)
            return
        await self.sup.follow_up.route(
            board_id, step, redo, parent=routing_id, trace_id=sub.trace_id
        )

    async def stall_if_idle(self, board_id: str, what: str) -> None:
        """With a done condition that does not hold, a board still active with nothing
        in flight waits for a person, atomically (``lua/stall.lua``): an agent's routing
        that finished meanwhile (made it done, activated someone) stands. Without a done
        condition an idle board is how the app's boards end."""
        if self.sup.app.done is None or await self.done_now(board_id):
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

    async def done_now(self, board_id: str) -> bool:
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

    async def set_going(self, sub: Submission, *, repeat: bool = True) -> str:
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
        # route as after the last commit that changed something (not a fork's provenance
        # note or a no-op rollback)
        work = next((e for e in reversed(log) if e.patch), None)
        wanted = await self._timed_out_since(board_id, last.ts_ms if last is not None else 0)
        done, how = False, "timed out since the last commit, activated again"
        if rerun := [str(name) for name in sub.args.get("rerun", ())]:  # e.g. on a fork
            wanted, how = [Wanted(name, "start") for name in rerun], "re-run as asked"
        elif not wanted:
            wanted, done, how = await self._after_last(sub, work)
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
        (:meth:`redo_roots`); the start agents if nothing was committed."""
        sup, board_id = self.sup, sub.board_id
        if last is None:
            return [Wanted(name, "start") for name in sup.app.start], False, "started again"
        if last.kind == "rollback" and last.outcome.startswith("restored:"):
            to = int(last.outcome.partition(":")[2])
            if await self.done_now(board_id):
                return [], True, "its done condition holds"
            feedback = f"the board was rolled back to v{to} ({last.reason}); redo your work"
            redo = await self.redo_roots(sub, to, last.version, feedback)
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


def _entry_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id, comparable."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
