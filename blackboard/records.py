"""The records that cross the store's API: proposals in, commits, log entries and board
information out. All are pydantic models, so they encode to plain JSON."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from blackboard.keys import BOARD_ID
from blackboard.status import BoardStatus

__all__ = [
    "Activation",
    "BoardInfo",
    "BoardSize",
    "BoardState",
    "CommitKind",
    "CommitResult",
    "ContextRead",
    "Handoff",
    "LogEntry",
    "Outcome",
    "Preview",
    "Proposal",
    "ProposalFields",
    "SettledBoard",
    "Submission",
]

CommitKind = Literal["write", "rollback", "summary", "approval", "system"]
"""Who authorised a commit: ``write`` is an agent's own keys (ownership checked); the
others are the supervisor's (a rollback, a summary, an approved held proposal, an
operator's ``set`` or a system fix), authorised by it and recorded with their author."""

# pydantic matches a pattern with Rust's regex engine, whose `$` is the end of the text
# (Python's `re.match` would also take "id\n"): these patterns match whole.
_ID = r"^[A-Za-z0-9_.:-]{1,128}$"
_ACTIVATION_ID = r"^[A-Za-z0-9_.:-]{0,128}$"  # '' when there is none
_BOARD_ID = f"^{BOARD_ID}$"


def new_id() -> str:
    """A fresh random id (proposal, activation, trace): 32 hex digits."""
    return uuid.uuid4().hex


class Proposal(BaseModel):
    """An author's request to change its keys: an RFC 6902 JSON Patch against a base
    version, plus the ids that make it traceable and idempotent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    author: str = Field(min_length=1, max_length=64)
    """Who proposes: an agent name (or ``supervisor`` / ``human:<name>`` for system kinds)."""
    base: int = Field(ge=0)
    """The board version the author read before computing the patch."""
    patch: list[dict[str, Any]]
    """RFC 6902 operations; every path starts with ``/<key>``."""
    proposal_id: str = Field(default_factory=new_id, pattern=_ID)
    """Idempotency key: the same id commits at most once per board."""
    reads: list[str] = Field(default_factory=list)
    """Keys the decision depended on besides those written: a change to any of them after
    ``base`` makes this proposal a conflict (no write skew)."""
    activation_id: str = Field(default="", pattern=_ACTIVATION_ID)
    """The activation that produced it ('' for a write made outside one)."""
    trace_id: str = Field(default="", max_length=128)
    """Carried through every step the proposal causes, for tracing a case end to end."""
    reason: str = Field(default="", max_length=2000)
    """Why, in words: recorded in the log entry."""

    @classmethod
    def updates(cls, author: str, base: int, values: Mapping[str, Any], **fields: Any) -> Proposal:
        """Whole-key updates, the common case: ``{"risk_rating": "low"}`` becomes
        ``[{"op": "add", "path": "/risk_rating", "value": "low"}]``."""
        patch = [{"op": "add", "path": f"/{k}", "value": v} for k, v in values.items()]
        return cls(author=author, base=base, patch=patch, **fields)


class ProposalFields(Protocol):
    """What a commit reads of a proposal. A :class:`Proposal` has it, and so has a
    :class:`Submission`, under the same limits: the supervisor commits a submission
    without copying it into a Proposal first (whose validation would check it again)."""

    @property
    def author(self) -> str: ...
    @property
    def base(self) -> int: ...
    @property
    def patch(self) -> list[dict[str, Any]]: ...
    @property
    def proposal_id(self) -> str: ...
    @property
    def reads(self) -> list[str]: ...
    @property
    def activation_id(self) -> str: ...
    @property
    def trace_id(self) -> str: ...
    @property
    def reason(self) -> str: ...


class CommitResult(BaseModel):
    """What a commit answered."""

    board_id: str
    version: int
    """The version this proposal committed as (the first commit's, for a duplicate)."""
    duplicate: bool = False
    """True when this proposal id had already committed; nothing changed this time."""
    keys: list[str] = Field(default_factory=list)
    """Keys whose value changed (empty for a duplicate or a no-op write)."""
    snapshot: bool = False
    """Whether this commit also stored a snapshot of the board."""
    replicas: int | None = None
    """With ``Settings.wait_replicas``: how many replicas acknowledged the commit before
    the wait timed out (the commit stands either way)."""


class LogEntry(BaseModel):
    """One commit as recorded in the board's log."""

    version: int
    author: str
    kind: CommitKind
    keys: list[str]
    patch: list[dict[str, Any]]
    """The forward patch: applying it to version-1 gives this version."""
    undo: list[dict[str, Any]]
    """The inverse patch: applying it to this version gives version-1."""
    proposal_id: str
    activation_id: str
    trace_id: str
    ts_ms: int
    reason: str
    outcome: str
    """Validation outcome as recorded by the committer (e.g. policies passed)."""


class BoardState(BaseModel):
    """A board's content at one version."""

    board_id: str
    version: int
    data: dict[str, Any]


class BoardInfo(BaseModel):
    """A board's metadata, read without loading its content."""

    board_id: str
    schema_name: str
    digest: str
    """The digest of the declaration it was created under."""
    status: BoardStatus
    version: int
    compliant: int
    """The latest version whose audits passed (0: none yet)."""
    bytes: int
    tokens: int
    """Approximate tokens of its content (what an agent reading it all would pay)."""
    created_ms: int
    updated_ms: int
    escalated_reason: str = ""
    """Why it stopped for a person, as recorded (``"<kind>: <detail>"``, kind ``loop``,
    ``budget``, ``deadline``…); set while escalated, empty otherwise."""


class SettledBoard(BaseModel):
    """A board where it settled (``Deployment.run_sync``): its metadata and content."""

    info: BoardInfo
    """Where it stands: ``info.status`` says done, awaiting approval, escalated…"""
    state: BoardState
    """Its content at that point."""


class BoardSize(BaseModel):
    """Size accounting, kept incrementally by every commit."""

    board_id: str
    version: int
    bytes: int
    tokens: int
    keys: dict[str, tuple[int, int]]
    """Key -> (bytes, approximate tokens) of its JSON value; unset keys are absent."""


class Handoff(BaseModel):
    """An agent naming who should act next. Strict: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: str = Field(min_length=1, max_length=64)
    """The next agent's name; it must be declared in the app (and permitted, if the
    author restricts its handoff targets)."""
    payload: dict[str, Any] = Field(default_factory=dict)
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    reason: str = Field(default="", max_length=2000)


SubmissionKind = Literal["proposal", "failure", "command"]
"""What a :class:`Submission` carries: an agent's proposal (maybe only a handoff), an
agent's failure report, or an operator's command."""


class Submission(BaseModel):
    """One entry of the supervisor's proposal stream: an agent's proposal (maybe only a
    handoff), an agent's failure report, or an operator's command."""

    model_config = ConfigDict(extra="forbid")

    kind: SubmissionKind
    board_id: str = Field(pattern=_BOARD_ID)
    proposal_id: str = Field(default_factory=new_id, pattern=_ID)
    """Idempotency key: the supervisor decides each id once per board."""
    author: str = Field(min_length=1, max_length=64)
    base: int = Field(default=0, ge=0)
    patch: list[dict[str, Any]] = Field(default_factory=list)
    reads: list[str] = Field(default_factory=list)
    handoff: Handoff | None = None
    """Who should act next, if the author names someone."""
    activation_id: str = Field(default="", pattern=_ACTIVATION_ID)  # a Proposal's limits
    trace_id: str = Field(default="", max_length=128)
    reason: str = Field(default="", max_length=2000)
    error: Literal["", "semantic", "fatal", "timeout", "human"] = ""
    """For failures: how the activation failed."""
    command: str = ""
    """For commands: approve, reject, rollback, flag, pause, resume, start."""
    args: dict[str, Any] = Field(default_factory=dict)
    tokens_in: int = Field(default=0, ge=0, le=10**12)
    tokens_out: int = Field(default=0, ge=0, le=10**12)
    cost: float = Field(default=0.0, ge=0.0, le=1e9)

    def proposal(self, also_reads: Sequence[str] = ()) -> Proposal:
        """The proposal this submission carries, as a model of its own; ``also_reads``:
        keys it depends on besides those it names (its author's declared reads). To
        commit it as it is, the submission itself will do (:class:`ProposalFields`)."""
        return Proposal(
            author=self.author,
            base=self.base,
            patch=self.patch,
            proposal_id=self.proposal_id,
            reads=[*dict.fromkeys([*self.reads, *also_reads])] if also_reads else self.reads,
            activation_id=self.activation_id,
            trace_id=self.trace_id,
            reason=self.reason,
        )


class Outcome(BaseModel):
    """What became of a submission, recorded per board by proposal id."""

    status: Literal["committed", "rejected", "held", "failed"]
    version: int | None = None
    keys: list[str] = Field(default_factory=list)
    """Keys the commit changed."""
    audit: str = ""
    """Name of the audit that failed after commit (the board was rolled back)."""
    reason: str = ""
    """Rejection reason code (``validation``, ``ownership``, ``conflict``, ``policy``…)."""
    message: str = ""
    """The human-readable explanation, returned to the agent as feedback."""


ActivationStatus = Literal["queued", "running", "submitted", "timed_out", "failed", "cancelled"]
"""Where an activation is: waiting in its agent's queue, being run, done (its agent
submitted), or ended without a submission (timed out, failed, cancelled)."""


class Activation(BaseModel):
    """The supervisor telling one agent to act on one board, and what came of it."""

    activation_id: str
    board_id: str
    agent: str
    base: int
    """Board version when the activation was created."""
    trace_id: str
    parent: str = ""
    """The activation (or proposal) that caused this one."""
    reason: Literal["start", "handoff", "trigger", "router", "rewrite", "summarise"] = "trigger"
    feedback: str = ""
    """For a rewrite: what to fix (a rejection or a failed audit)."""
    payload: dict[str, Any] = Field(default_factory=dict)
    deadline_ms: int = 0
    created_ms: int = 0
    status: ActivationStatus = "queued"
    finished_ms: int = 0
    duration_ms: int = 0
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    outcome: str = ""
    keys_read: list[str] = Field(default_factory=list)
    """Keys the agent was given (the context it saw)."""
    output: dict[str, Any] = Field(default_factory=dict)
    """What it proposed: ``{"patch": [...], "handoff": {...}}``."""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    """Tool calls made: tool, idempotency key, duration."""
    submission: dict[str, Any] | None = None
    """Embedded mode, when committing and routing take more than one step: what the
    agent submitted, kept until the routing closes the activation, so a restart sends
    it again rather than running the agent a second time."""

    def timed_out(self, timeout_s: float) -> str:
        """What is recorded when it outlives its deadline, whoever notices first (its
        agent or the supervisor's watchdog): the same words either way. A deadline
        earlier than its own timeout (``timeout_s``) was the board's deadline."""
        if (
            self.deadline_ms
            and self.created_ms
            and self.deadline_ms < self.created_ms + timeout_s * 1000
        ):
            ran = max(0, self.deadline_ms - self.created_ms) / 1000
            return (
                f"activation {self.activation_id} of {self.agent!r} was cut by the board "
                f"deadline {ran:g} s after it was created (before its own {timeout_s:g} s timeout)"
            )
        return f"activation {self.activation_id} of {self.agent!r} timed out after {timeout_s:g} s"


@dataclass
class ContextRead:
    """What an agent's context is made of, read in the same atomic step as the commit
    that activated it (embedded mode): the board version, the raw JSON values of the
    keys it sees (None: unset), and the board's loop state."""

    version: int
    values: dict[str, str | None]
    loops: dict[str, str]


class Preview(BaseModel):
    """A proposal applied in memory: what the board would hold, for the keys involved."""

    version: int
    """The board's version when previewed."""
    kvers: dict[str, int]
    """Key -> version of its last change, for every key involved."""
    view: dict[str, Any]
    """Key -> value after the proposal (unset keys absent)."""
    writes: list[str]
    reads: list[str]
    """Keys the patch itself reads (test/copy) without writing."""
    duplicate_of: int | None = None
    """If this proposal id already committed: the version it committed as."""
    duplicate_keys: list[str] = Field(default_factory=list)
    """...and the keys that commit changed."""
