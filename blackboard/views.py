"""What operators and tools read about a deployment, as typed records: the answers of
:class:`~blackboard.readmodel.ReadModel`. Every text that says *why* (a rejection's
message, a gate's message, what stopped a board) is kept whole: shortening is for the
one printing it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from blackboard.records import Activation, BoardInfo, LogEntry, Outcome

__all__ = [
    "Activity",
    "AgentView",
    "Agents",
    "Breaker",
    "DeadLetter",
    "Escalation",
    "Event",
    "HeldProposal",
    "HistoryRow",
    "Hop",
    "Incident",
    "Instance",
    "Phase",
    "ProposalOutcome",
    "Stats",
    "Trace",
    "Waiting",
]


Phase = Literal["queued", "started", "finished"]
"""Where an activation stands in a watched board's events."""


class ProposalOutcome(Outcome):
    """What became of one submission, with its proposal id (an agent's submission has
    its activation's id)."""

    proposal_id: str

    def summary(self) -> str:
        """``committed``, ``rejected:validation``, ``audit failed:NAME``, …"""
        if self.audit:
            return f"audit failed:{self.audit}"
        return f"{self.status}:{self.reason}" if self.reason else self.status


class HistoryRow(BaseModel):
    """One line of a board's history: a commit, or an agent's proposal that was rejected
    (``kind`` ``rejected``, no version, ``reason`` the rejection's whole message)."""

    version: int | None
    ts_ms: int
    kind: str
    author: str
    keys: list[str]
    patch: list[dict[str, Any]]
    proposal_id: str
    activation_id: str
    trace_id: str
    reason: str
    outcome: str
    """A commit's validation outcome; a rejection's reason code (``validation``, …)."""

    @classmethod
    def commit(cls, entry: LogEntry) -> HistoryRow:
        return cls(**entry.model_dump(exclude={"undo"}))


class Hop(BaseModel):
    """One activation in a board's trace, with what became of its submission."""

    agent: str
    reason: str
    """Why it was activated: start, trigger, handoff, router, rewrite, summarise."""
    status: str
    duration_ms: int
    tokens: int
    cost: float
    retries: int
    outcome: str
    """``committed``, ``rejected:REASON``, ``held:gate:NAME``, ``audit failed:NAME``, or
    the activation's own outcome when nothing was decided (yet)."""
    message: str = ""
    """The decision's whole explanation: the rejection's, the gate's, the audit's."""
    activation: str
    parent: str
    created_ms: int
    finished_ms: int = 0
    commit: int | None
    """The version its proposal committed as."""


class Trace(BaseModel):
    board: str
    hops: list[Hop]
    commits: list[HistoryRow]


class Incident(BaseModel):
    """A loop tripped, a budget spent, a timeout, a rollback, a person asked…"""

    board: str
    id: str
    kind: str
    detail: str
    version: int
    ts_ms: int
    cycle: str = ""
    """For a loop: the handoffs that went round (``from>to@version ...``)."""
    rejection: str = ""
    """For ``rewrites``: the last rejection's whole message (what the agent kept getting
    wrong)."""


class HeldProposal(BaseModel):
    """A proposal a gate holds until a person approves or rejects it."""

    proposal_id: str
    author: str
    patch: list[dict[str, Any]]
    gate: str
    message: str
    """The gate's message (``an AML hit: a human decides``)."""


class Waiting(BaseModel):
    """Who a board waits on and what to do about it."""

    why: str = ""
    """Whole: the escalation's reason, the gate's message, the stall's explanation."""
    action: str = ""
    """What a person can do (``approve it with `blackboard approve B` …``)."""
    unserved: list[str] = Field(default_factory=list)
    """Agents with activations open on the board and no live instance to run them
    (``supervisor`` when no supervisor is alive to route it)."""


class Escalation(Waiting):
    """A board that needs a person: escalated, failed, held by a gate, asking for
    input, paused, or waiting on an agent no live instance serves."""

    board: str
    status: str
    since_ms: int
    held: list[HeldProposal] = Field(default_factory=list)
    rejection: str = ""
    """When rejections stopped it: the last rejection's whole message."""


class DeadLetter(BaseModel):
    """An entry that exhausted its deliveries."""

    id: str
    stream: str
    deliveries: int
    reason: str
    ts_ms: int
    fields: dict[str, str]
    """Every field as stored: the original entry's and the ``dl_*`` ones."""


class Instance(BaseModel):
    """One process consuming a queue (an agent instance or a supervisor replica)."""

    name: str
    alive: bool
    """Its liveness key is there: it beat within the last few seconds. A process
    stopped by SIGTERM lets go of it at once; a killed one loses it seconds later."""
    beat_age_ms: int | None
    """Time since its last beat; None if it never beat."""
    in_flight: int
    """Entries it read and has not acknowledged."""


class AgentView(BaseModel):
    agent: str
    instances: list[Instance]
    """Live instances, and dead ones still holding entries."""
    stopped: int
    """Dead instances holding nothing (not listed)."""
    in_flight: int
    """Entries delivered to an instance and not acknowledged."""
    waiting: int
    """Entries not yet delivered to any instance."""
    needed_by: list[str] = Field(default_factory=list)
    """With no live instance: the boards with activations open for this agent."""

    @property
    def live(self) -> int:
        return sum(1 for i in self.instances if i.alive)


class Breaker(BaseModel):
    errors: int
    open: bool


class Agents(BaseModel):
    """The deployed app's agents, its supervisors and its tools' breakers."""

    app: str
    agents: list[AgentView]
    supervisors: list[Instance]
    breakers: dict[str, Breaker]


class Activity(BaseModel):
    """Whether a board has work going, from one consistent look (a transaction)."""

    info: BoardInfo
    """The board's metadata (status, version...)."""
    open: int
    """Activations created and not closed by their routing."""
    outbox: int
    """Activations not yet dispatched to their agent."""

    @property
    def status(self) -> str:
        return self.info.status

    @property
    def version(self) -> int:
        return self.info.version

    @property
    def idle(self) -> bool:
        """Nothing open and nothing to dispatch: no agent has work on it."""
        return self.open == 0 and self.outbox == 0


class Stats(BaseModel):
    board: str
    activations: int
    handoffs: int
    handoff_success_rate: float | None
    rejections: dict[str, int]
    """Rejection reason code -> how many."""
    rewrites: int
    retries: int
    mean_time_to_recover_ms: float | None
    tokens: int
    cost: float


class Event(BaseModel):
    """One thing that happened on a watched board (see ``ReadModel.follow``)."""

    event: Literal["missing", "status", "commit", "activation"]
    """``missing``: the board does not exist yet; ``status``: it changed status or what
    it waits on; ``commit``: a version landed; ``activation``: one was queued, started
    or finished."""
    board: str
    ts_ms: int
    version: int | None = None
    status: str | None = None
    """The board's status: on ``status`` events only."""
    waiting: Waiting | None = None
    commit: HistoryRow | None = None
    phase: Phase | None = None
    activation: Activation | None = None
    outcome: ProposalOutcome | None = None
    """For a finished activation: what became of its submission, once decided."""
    info: BoardInfo | None = None
