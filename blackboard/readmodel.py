"""One read model: what operators and tools read about a deployment (boards, their
history with rejections, traces, incidents, escalations, dead letters, agents and their
liveness, statistics) and a board followed live, as typed records (:mod:`blackboard.views`).

Read-only and without user code: what it needs is in Redis (the board declarations and
the app declaration the supervisor publishes). Reads go through redis-py pipelines, a
few round trips per answer whatever the number of boards. The CLI's inspect commands
use it, and so can a console or a metrics exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from redis import exceptions as redis_errors

from blackboard import boardwork, codec
from blackboard.boardwork import SUPERVISOR, BoardWork, read_work
from blackboard.consumers import QueueState, consumers, sharing
from blackboard.keys import GlobalKeys
from blackboard.records import Activation, BoardInfo
from blackboard.status import BoardStatus
from blackboard.store import BoardStore, redis_failures
from blackboard.views import (
    Activity,
    Agents,
    AgentView,
    Breaker,
    DeadLetter,
    Escalation,
    Event,
    HistoryRow,
    Hop,
    Incident,
    Instance,
    Phase,
    ProposalOutcome,
    Stats,
    Trace,
    Waiting,
)

__all__ = ["AGENT_GROUP", "SUPERVISOR_GROUP", "ReadModel"]

AGENT_GROUP = "workers"
"""The consumer group an agent's instances share on its queue."""
SUPERVISOR_GROUP = "supervisor"
"""The consumer group of the supervisor replicas on the submission streams."""
SUPERVISOR_NAMES = "sup"
"""How the supervisor replicas' default consumer names start (``sup-HOST-PID-…``)."""
_NEEDS_A_PERSON = frozenset(
    {
        BoardStatus.ESCALATED,
        BoardStatus.FAILED,
        BoardStatus.AWAITING_APPROVAL,
        BoardStatus.PAUSED,
    }
)


def _now_ms() -> int:
    return int(time.time() * 1000)


class ReadModel:
    """Reads for operators and tools, over one store's Redis and key prefix.

    Args:
        store: the deployment's store (its client and settings are used).
    """

    def __init__(self, store: BoardStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = GlobalKeys(store.settings.key_prefix)

    # -- boards ---------------------------------------------------------------------

    async def boards(self, *, status: str | None = None, archived: bool = False) -> list[BoardInfo]:
        infos = await self.store.boards(archived=archived)
        return [b for b in infos if status is None or b.status == status]

    async def info(self, board: str) -> BoardInfo:
        """Raises :class:`~blackboard.errors.BoardNotFound` (with suggestions)."""
        return await self.store.info(board)

    async def app(self) -> dict[str, Any] | None:
        """The app declaration the supervisor published; None before any did."""
        async with redis_failures("read the app declaration"):
            raw = await self.redis.get(self.keys.app)
        return None if raw is None else cast(dict[str, Any], codec.loads(cast(str, raw), "the app"))

    async def _work(self, boards: Iterable[str], *, incidents: bool = False) -> list[BoardWork]:
        return await read_work(self.redis, self.keys, boards, incidents=incidents)

    async def _one(self, board: str, *, incidents: bool = False) -> BoardWork:
        await self.store.info(board)  # unknown: BoardNotFound with suggestions
        return (await self._work([board], incidents=incidents))[0]

    async def activity(self, board: str) -> Activity:
        """The board's metadata, and its activations open and undispatched, read in one
        transaction: what waiting for a board to settle looks at."""
        bk = self.keys.board(board)
        async with redis_failures(f"read board {board!r}"):
            pipe = self.redis.pipeline(transaction=True)
            self.store.info_reads(pipe, board)
            pipe.zcard(bk.open)
            pipe.hlen(bk.outbox)
            meta, decl, open_, outbox = await pipe.execute()
        info = self.store.info_from(board, meta, decl)
        if info is None:
            raise await self.store.not_found(board)  # with suggestions
        return Activity(info=info, open=open_, outbox=outbox)

    # -- a board's record -------------------------------------------------------------

    async def activations(self, board: str) -> list[Activation]:
        """In creation order."""
        return (await self._one(board)).ordered()

    async def outcomes(self, board: str) -> dict[str, ProposalOutcome]:
        """Proposal id -> what became of it (committed, rejected with why, held…)."""
        return (await self._one(board)).outcomes

    async def outcome(self, board: str, proposal_id: str) -> ProposalOutcome | None:
        """What became of one submission; None while the supervisor has not decided it
        (one read: cheap enough to poll)."""
        async with redis_failures(f"read an outcome of board {board!r}"):
            raw = cast(
                str | None, await self.redis.hget(self.keys.board(board).results, proposal_id)
            )
        return None if raw is None else boardwork.outcome(proposal_id, raw, f"board {board!r}")

    async def history(
        self, board: str, *, limit: int | None = None, rejections: bool = True
    ) -> list[HistoryRow]:
        """Commits, oldest first, with (``rejections``) the agents' rejected proposals
        where they happened. ``limit``: the last this many rows."""
        commits = [HistoryRow.commit(e) for e in await self.store.history(board)]
        rows = commits
        if rejections:
            rows = sorted(commits + self._rejections(await self._one(board)), key=_when)
        return rows[-limit:] if limit else rows

    @staticmethod
    def _rejections(snap: BoardWork) -> list[HistoryRow]:
        rows = []
        for act, decided in snap.rejected():
            keys = sorted({str(op.get("path", "/")).split("/")[1] for op in _patch(act)})
            rows.append(
                HistoryRow(
                    version=None,
                    ts_ms=act.finished_ms or act.created_ms,
                    kind="rejected",
                    author=act.agent,
                    keys=keys,
                    patch=_patch(act),
                    proposal_id=act.activation_id,
                    activation_id=act.activation_id,
                    trace_id=act.trace_id,
                    reason=decided.message,
                    outcome=decided.reason,
                )
            )
        return rows

    async def trace(self, board: str) -> Trace:
        """The hop timeline: each activation, why it ran, what became of it (whole
        reasons), and the commits."""
        snap = await self._one(board)
        commits = [HistoryRow.commit(e) for e in await self.store.history(board)]
        by_activation = {c.activation_id: c.version for c in commits if c.activation_id}
        hops = []
        for a in snap.ordered():
            decided = snap.outcomes.get(a.activation_id)
            hops.append(
                Hop(
                    agent=a.agent,
                    reason=a.reason,
                    status=a.status,
                    duration_ms=a.duration_ms,
                    tokens=a.tokens_in + a.tokens_out,
                    cost=a.cost,
                    retries=a.retries,
                    outcome=decided.summary() if decided else (a.outcome or a.status),
                    message=decided.message if decided else "",
                    activation=a.activation_id,
                    parent=a.parent,
                    created_ms=a.created_ms,
                    finished_ms=a.finished_ms,
                    commit=by_activation.get(a.activation_id),
                )
            )
        return Trace(board=board, hops=hops, commits=commits)

    async def incidents(
        self, boards: Iterable[str] | None = None, *, rejections: bool = False
    ) -> list[Incident]:
        """Incidents of ``boards`` (default: every listed board), oldest first; with
        ``rejections``, each rejected proposal too (kind ``rejected``, its message in
        ``rejection``)."""
        ids = [b.board_id for b in await self.store.boards()] if boards is None else boards
        rows = []
        for snap in await self._work(ids, incidents=True):
            rows += snap.incidents + (snap.rejections() if rejections else [])
        # in the same millisecond, a rejection before the incident it caused
        return sorted(rows, key=lambda i: (i.ts_ms, i.kind != "rejected"))

    async def stats(self, board: str) -> Stats:
        snap = await self._one(board, incidents=True)
        acts = list(snap.acts.values())
        handoffs = [a for a in acts if a.reason == "handoff"]
        rejected: dict[str, int] = {}
        for o in snap.outcomes.values():
            if o.status == "rejected":
                rejected[o.reason] = rejected.get(o.reason, 0) + 1
        commits = await self.store.history(board)
        recover = []
        for inc in snap.incidents:
            later = [e.ts_ms for e in commits if e.ts_ms > inc.ts_ms]
            if later:
                recover.append(min(later) - inc.ts_ms)
        return Stats(
            board=board,
            activations=len(acts),
            handoffs=len(handoffs),
            handoff_success_rate=(
                sum(1 for a in handoffs if a.status == "submitted") / len(handoffs)
                if handoffs
                else None
            ),
            rejections=rejected,
            rewrites=sum(1 for a in acts if a.reason == "rewrite"),
            retries=sum(a.retries for a in acts),
            mean_time_to_recover_ms=sum(recover) / len(recover) if recover else None,
            tokens=int(snap.meta.get("tokens_used") or 0),
            cost=float(snap.meta.get("cost_used") or 0),
        )

    # -- who waits on what ------------------------------------------------------------

    async def waiting(self, board: str) -> Waiting:
        """What ``board`` waits on, why, and what a person can do."""
        snap = await self._one(board, incidents=True)
        unserved = await self._unserved([snap])
        return boardwork.waiting(snap, unserved[board])

    async def escalations(self) -> list[Escalation]:
        """Boards that need a person: escalated, failed, held by a gate, asking for
        input, paused, or active with work no live instance (or supervisor) serves."""
        async with redis_failures("read the escalations"):
            listed = cast(
                "list[tuple[str, float]]",
                await self.redis.zrange(self.keys.escalations, 0, -1, withscores=True),
            )
        since = {b: int(s) for b, s in listed}
        for info in await self.store.boards():
            if info.status in (BoardStatus.ACTIVE, BoardStatus.PAUSED):
                since.setdefault(info.board_id, info.updated_ms)
        snaps = await self._work(since, incidents=True)
        unserved = await self._unserved(snaps)
        rows = []
        for snap in snaps:
            if snap.status not in _NEEDS_A_PERSON and not unserved[snap.board]:
                continue  # resolved since (resumed, approved, rejected), or going on
            rows.append(
                Escalation(
                    board=snap.board,
                    status=snap.status,
                    since_ms=since[snap.board],
                    held=boardwork.held(snap),
                    rejection=snap.last_rejection() if snap.stopped_by_rejections() else "",
                    **boardwork.waiting(snap, unserved[snap.board]).model_dump(),
                )
            )
        return rows

    async def _unserved(self, snaps: list[BoardWork]) -> dict[str, list[str]]:
        """Per board: the agents of its open activations that no live instance serves,
        and ``supervisor`` if it is active and no supervisor is alive."""
        needed = {s.board: s.open_agents() for s in snaps}
        active = [s.board for s in snaps if s.status == BoardStatus.ACTIVE]
        agents = sorted({a for names in needed.values() for a in names})
        queues = [(self.keys.queue(a), AGENT_GROUP, a) for a in agents]
        seen = dict(zip(agents, await consumers(self.redis, self.keys, queues), strict=True))
        if active:
            seen[SUPERVISOR] = await self._supervising()
        dead = {
            name for name, (instances, *_) in seen.items() if not any(i.alive for i in instances)
        }
        return {
            s.board: [a for a in needed[s.board] if a in dead]
            + ([SUPERVISOR] if s.board in active and SUPERVISOR in dead else [])
            for s in snaps
        }

    async def agents(self) -> Agents | None:
        """The deployed app's agents with their instances' liveness, in-flight and
        waiting work, and the boards each one without a live instance holds up; None
        when no supervisor has published an app yet."""
        declaration = await self.app()
        if declaration is None:
            return None
        names = list(declaration["agents"])
        queues = [(self.keys.queue(n), AGENT_GROUP, n) for n in names]
        per_agent = await consumers(self.redis, self.keys, queues)
        supervisors = await self._supervising(names)
        active = [b.board_id for b in await self.store.boards() if b.status == BoardStatus.ACTIVE]
        open_by_agent: dict[str, list[str]] = {}
        for snap in await self._work(active):
            for agent in snap.open_agents():
                open_by_agent.setdefault(agent, []).append(snap.board)
        rows = []
        for name, (instances, in_flight, waiting) in zip(names, per_agent, strict=True):
            live = any(i.alive for i in instances)
            shown = [i for i in instances if i.alive or i.in_flight]
            rows.append(
                AgentView(
                    agent=name,
                    instances=shown,
                    stopped=len(instances) - len(shown),
                    in_flight=in_flight,
                    waiting=waiting,
                    needed_by=[] if live else open_by_agent.get(name, []),
                )
            )
        return Agents(
            app=declaration["name"],
            agents=rows,
            supervisors=[i for i in supervisors[0] if i.alive or i.in_flight],
            breakers=await self._breakers(declaration.get("tools", [])),
        )

    async def supervisors(self) -> list[Instance]:
        """The supervisor replicas known on the submission streams, with their liveness
        (``alive``: beating now)."""
        instances, _, _ = await self._supervising()
        return instances

    async def _supervising(self, agents: list[str] | None = None) -> QueueState:
        """The supervisor replicas on the streams they all read (shard 0's): each
        agent's submissions (``agents``, or the published app's), the operators'
        commands, the watchdog's reports."""
        if agents is None:
            declaration = await self.app()
            agents = list(declaration["agents"]) if declaration is not None else []
        streams = [self.keys.submissions(a, 0) for a in agents]
        streams += [self.keys.commands(0), self.keys.reports(0)]
        return await sharing(self.redis, self.keys, streams, SUPERVISOR_GROUP, SUPERVISOR_NAMES)

    async def _breakers(self, tools: list[str]) -> dict[str, Breaker]:
        async with redis_failures("read the tools' breakers"):
            pipe = self.redis.pipeline(transaction=False)
            for tool in tools:
                pipe.hgetall(self.keys.breaker(tool))
            states = await pipe.execute() if tools else []
        now = _now_ms()
        return {
            tool: Breaker(errors=int(s.get("errors", 0)), open=int(s.get("open_until", 0)) > now)
            for tool, s in zip(tools, states, strict=True)
        }

    async def dead_letters(self, entry_id: str | None = None) -> list[DeadLetter]:
        """Every dead letter, oldest first; or the one ``entry_id`` names (none if it
        is not there)."""
        span = ("-", "+") if entry_id is None else (entry_id, entry_id)
        async with redis_failures("read the dead letters"):
            rows = cast(
                "list[tuple[str, dict[str, str]]]",
                await self.redis.xrange(self.keys.dead_letters, *span),
            )
        return [
            DeadLetter(
                id=i,
                stream=f.get("dl_stream", ""),
                deliveries=int(f.get("dl_deliveries") or 0),
                reason=f.get("dl_reason", ""),
                ts_ms=int(f.get("dl_ts") or i.split("-")[0]),
                fields=f,
            )
            for i, f in rows
        ]

    # -- following a board live -------------------------------------------------------

    async def follow(self, board: str, *, poll_s: float = 0.5) -> AsyncIterator[Event]:
        """What happens on ``board`` from now on, as it happens: its status (with what
        it waits on), each commit, each activation queued, started and finished (with
        what became of its submission). If the board does not exist yet, one
        ``missing`` event, then everything from its creation. Endless: the caller stops.

        Commits are announced on the board's channel and read from its log (nothing is
        missed if a message is); activations are looked at every ``poll_s``."""
        pubsub = self.redis.pubsub()
        try:
            async with redis_failures(f"follow board {board!r}"):
                await pubsub.subscribe(self.keys.board(board).events)
            seen = _Followed()
            snap = (await self._work([board]))[0]
            if snap.meta:  # what happened before is history, not news
                seen.version = int(snap.meta["version"])
                for act in snap.acts.values():
                    seen.phases[act.activation_id] = set(boardwork.phases(act, snap))
            else:
                yield Event(event="missing", board=board, ts_ms=_now_ms())
            while True:
                for event in await self._changes(board, seen):
                    yield event
                await _quiet(pubsub, poll_s)
        finally:
            with contextlib.suppress(redis_errors.RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _changes(self, board: str, seen: _Followed) -> list[Event]:
        """Everything new on ``board`` since what ``seen`` holds (which is updated)."""
        snap = (await self._work([board], incidents=True))[0]
        if not snap.meta:
            return []
        now = _now_ms()
        events: list[Event] = []
        current = int(snap.meta["version"])
        if current > seen.version:
            for e in await self.store.history(board, start=seen.version + 1):
                row = HistoryRow.commit(e)
                events.append(
                    Event(event="commit", board=board, ts_ms=e.ts_ms, version=e.version, commit=row)
                )
            seen.version = current
        for act in snap.ordered():
            told = seen.phases.setdefault(act.activation_id, set())
            for phase in boardwork.phases(act, snap):
                if phase in told:
                    continue
                told.add(phase)
                events.append(
                    Event(
                        event="activation",
                        board=board,
                        ts_ms=_at(act, phase) or now,
                        version=current,
                        phase=phase,
                        activation=act,
                        outcome=snap.outcomes.get(act.activation_id)
                        if phase == "finished"
                        else None,
                    )
                )
        events.sort(key=lambda e: e.ts_ms)  # commits and activations, as they happened
        waiting = boardwork.waiting(snap, (await self._unserved([snap]))[board])
        state = (snap.status, waiting.why, tuple(waiting.unserved))
        if seen.status != state:
            seen.status = state
            events.append(
                Event(
                    event="status",
                    board=board,
                    ts_ms=now,
                    version=current,
                    status=snap.status,
                    waiting=waiting,
                )
            )
        return events


@dataclass
class _Followed:
    """What :meth:`ReadModel.follow` has reported of a board."""

    version: int = 0
    phases: dict[str, set[Phase]] = field(default_factory=dict)
    status: tuple[str, str, tuple[str, ...]] | None = None


def _at(act: Activation, phase: Phase) -> int:
    """When ``act`` reached ``phase``, where its record says (0: it does not)."""
    if phase == "queued":
        return act.created_ms
    if phase == "started" and act.finished_ms and act.duration_ms:
        return act.finished_ms - act.duration_ms
    return act.finished_ms if phase == "finished" else 0


def _when(row: HistoryRow) -> tuple[int, int]:
    return (row.ts_ms, row.version or 0)


def _patch(act: Activation) -> list[dict[str, Any]]:
    return list(act.output.get("patch") or [])


async def _quiet(pubsub: Any, seconds: float) -> None:
    """Until the board's channel says something, ``seconds`` at most."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await pubsub.get_message(ignore_subscribe_messages=True, timeout=seconds)
