"""A board's work as the read model sees it: its activations, what became of each
submission, the proposals gates hold, the activations still open, its incidents; and
from those, why the board waits and what a person can do about it.

Read for many boards in one pipelined round trip (:func:`read_work`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from blackboard import codec
from blackboard.keys import GlobalKeys
from blackboard.records import Activation, Submission
from blackboard.status import BoardStatus
from blackboard.store import redis_failures
from blackboard.views import HeldProposal, Incident, Phase, ProposalOutcome, Waiting

__all__ = ["SUPERVISOR", "BoardWork", "held", "outcome", "phases", "read_work", "waiting"]

SUPERVISOR = "supervisor"
"""What :attr:`~blackboard.views.Waiting.unserved` names when no supervisor is alive."""
_FINISHED = frozenset({"submitted", "timed_out", "failed", "cancelled"})


@dataclass
class BoardWork:
    """What :func:`read_work` read of one board (``meta`` empty: no such board)."""

    board: str
    meta: dict[str, str]
    acts: dict[str, Activation]
    outcomes: dict[str, ProposalOutcome]
    held: list[Submission]
    open: list[str]
    incidents: list[Incident] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.meta.get("status", "")

    def ordered(self) -> list[Activation]:
        """Activations in creation order (several may be created in the same
        millisecond: the one created at the lower version came first, and a cause
        before what it caused)."""
        depth: dict[str, int] = {}

        def deep(aid: str) -> int:
            chain = []  # up the parents to one whose depth is known (or none)
            while aid in self.acts and aid not in depth and aid not in chain:
                chain.append(aid)
                aid = self.acts[aid].parent
            known = depth.get(aid, -1)
            for i, link in enumerate(reversed(chain), 1):
                depth[link] = known + i
            return depth[chain[0]] if chain else known

        return sorted(
            self.acts.values(), key=lambda a: (a.created_ms, a.base, deep(a.activation_id))
        )

    def last_rejection(self, agent: str | None = None) -> str:
        """The whole message of the latest rejected proposal (of ``agent``): refused
        before commit, or committed and then failing an audit (rolled back)."""
        done = sorted(self.acts.values(), key=lambda a: (a.finished_ms, a.created_ms))
        for act in reversed(done):
            decided = self.outcomes.get(act.activation_id)
            refused = decided is not None and (decided.status == "rejected" or decided.audit)
            if decided and refused and agent in (None, act.agent):
                return decided.message
        return ""

    def rejected(self) -> list[tuple[Activation, ProposalOutcome]]:
        """Each activation whose proposal was rejected, with its outcome (why)."""
        pairs = ((act, self.outcomes.get(act.activation_id)) for act in self.acts.values())
        return [(act, o) for act, o in pairs if o is not None and o.status == "rejected"]

    def rejections(self) -> list[Incident]:
        """Each rejected proposal of an agent, as an incident of kind ``rejected``."""
        return [
            Incident(
                board=self.board,
                id=act.activation_id,
                kind="rejected",
                detail=f"{act.agent}'s proposal was rejected ({decided.reason})",
                version=act.base,
                ts_ms=act.finished_ms or act.created_ms,
                rejection=decided.message,
            )
            for act, decided in self.rejected()
        ]

    def open_agents(self) -> list[str]:
        """Agents with activations open on the board (queued or running)."""
        return sorted({self.acts[a].agent for a in self.open if a in self.acts})

    def stopped_by_rejections(self) -> bool:
        return self.meta.get("escalated_reason", "").startswith("rewrites")


async def read_work(
    redis: Redis, keys: GlobalKeys, boards: Iterable[str], *, incidents: bool = False
) -> list[BoardWork]:
    """Each board's meta, activations, outcomes, held proposals, open activations (and
    incidents), in one round trip for all.

    Raises:
        CorruptData: a record is not one this package writes.
    """
    ids = list(boards)
    async with redis_failures("read the boards' work"):
        pipe = redis.pipeline(transaction=False)
        for board in ids:
            bk = keys.board(board)
            pipe.hgetall(bk.meta)
            pipe.hgetall(bk.activations)
            pipe.hgetall(bk.results)
            pipe.hgetall(bk.held)
            pipe.zrange(bk.open, 0, -1)
            if incidents:
                pipe.xrange(bk.incidents)
        replies = await pipe.execute()
    step = 6 if incidents else 5
    out = []
    for i, board in enumerate(ids):
        meta, acts, results, held_, open_, *rest = replies[i * step : (i + 1) * step]
        what = f"board {board!r}"
        work = BoardWork(
            board=board,
            meta=meta,
            acts={
                k: codec.load_model(Activation, v, f"activation {k!r} of {what}")
                for k, v in acts.items()
            },
            outcomes={k: outcome(k, v, what) for k, v in results.items()},
            held=[
                codec.load_model(Submission, v, f"a held proposal of {what}")
                for v in held_.values()
            ],
            open=list(open_),
        )
        if incidents:
            work.incidents = [_incident(work, entry, f) for entry, f in rest[0]]
        out.append(work)
    return out


def outcome(proposal_id: str, raw: str, what: str) -> ProposalOutcome:
    """The outcome recorded for ``proposal_id`` of ``what`` (a board), decoded."""
    where = f"the outcome of proposal {proposal_id!r} of {what}"
    try:
        return ProposalOutcome.model_validate(
            {**codec.loads(raw, where), "proposal_id": proposal_id}
        )
    except (ValidationError, TypeError) as exc:
        raise codec.corrupt(where, "is not an outcome") from exc


def _incident(work: BoardWork, entry_id: str, f: dict[str, str]) -> Incident:
    try:
        incident = Incident(
            board=work.board,
            id=entry_id,
            kind=f["kind"],
            detail=f.get("detail", ""),
            version=int(f.get("version") or 0),
            ts_ms=int(f.get("ts") or entry_id.split("-")[0]),
            cycle=f.get("cycle", ""),
        )
    except (KeyError, ValueError) as exc:
        raise codec.corrupt(
            f"incident {entry_id} of board {work.board!r}", f"lacks a field ({exc!r})"
        ) from exc
    if incident.kind == "rewrites":  # "agent NAME was rejected N times in a row …"
        agent = incident.detail.removeprefix("agent ").split(" ", 1)[0]
        incident.rejection = work.last_rejection(agent)
    return incident


def phases(act: Activation, work: BoardWork) -> list[Phase]:
    """The phases an activation has reached: finished once its submission is decided
    (or it failed or timed out)."""
    reached: list[Phase] = ["queued"]
    if act.status != "queued":
        reached.append("started")
    if act.status in _FINISHED and (
        act.status != "submitted" or act.activation_id in work.outcomes
    ):
        reached.append("finished")
    return reached


def held(work: BoardWork) -> list[HeldProposal]:
    """The proposals gates hold on the board, with each gate's message."""
    rows = []
    for sub in work.held:
        decided = work.outcomes.get(sub.proposal_id)
        rows.append(
            HeldProposal(
                proposal_id=sub.proposal_id,
                author=sub.author,
                patch=sub.patch,
                gate=decided.reason.removeprefix("gate:") if decided else "",
                message=decided.message if decided else "",
            )
        )
    return rows


def waiting(work: BoardWork, unserved: list[str]) -> Waiting:
    """Why the board waits (whole) and what a person can do; ``unserved``: the agents
    (or :data:`SUPERVISOR`) it needs that no live instance serves."""
    why, action = _why(work)
    if unserved:
        names = ", ".join(repr(a) for a in unserved)
        them = "it" if len(unserved) == 1 else "them"
        why = (why + "; " if why else "") + f"waiting on {names}: no live instance serves {them}"
        start = [
            "`blackboard supervisor --app APP`"
            if a == SUPERVISOR
            else f"`blackboard agent {a} --app APP`"
            for a in unserved
        ]
        action = (action + "; " if action else "") + "start " + " and ".join(start)
    return Waiting(why=why, action=action, unserved=unserved)


def _why(work: BoardWork) -> tuple[str, str]:
    board, status = work.board, work.status
    reason = work.meta.get("escalated_reason", "")
    last: Any = work.incidents[-1] if work.incidents else None
    if status == BoardStatus.ESCALATED:
        why = reason
        last_rejection = work.last_rejection() if work.stopped_by_rejections() else ""
        if last_rejection:
            why += f"; the last rejection: {last_rejection}"
        return why, (
            f"see `blackboard incidents {board}`, then resume it (`blackboard resume "
            f"{board}`) or roll it back (`blackboard rollback {board} --to VERSION`)"
        )
    if status == BoardStatus.FAILED:
        why = last.detail if last is not None and last.kind == "fatal" else reason
        return why, f"roll it back to try again (`blackboard rollback {board} --to VERSION`)"
    if status == BoardStatus.AWAITING_APPROVAL and work.held:
        gated = held(work)
        why = "; ".join(
            f"gate {h.gate!r} holds {h.author}'s proposal {h.proposal_id}: {h.message}"
            for h in gated
        )
        which = "" if len(gated) == 1 else " --proposal ID"
        return why, (
            f"approve it with `blackboard approve {board}{which}` or reject it with "
            f"`blackboard reject {board}{which} --note WHY`"
        )
    if status == BoardStatus.AWAITING_APPROVAL:
        why = last.detail if last is not None else "no agent has work left"
        return why, f"write the missing keys (`blackboard set {board} KEY=JSON`) or roll it back"
    if status == BoardStatus.PAUSED:
        return "an operator paused it: nothing is dispatched", (
            f"resume it with `blackboard resume {board}`"
        )
    return "", ""
