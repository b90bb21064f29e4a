"""The records that cross the store's API: proposals in, commits, log entries and board
information out. All are pydantic models, so they encode to plain JSON."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BoardInfo",
    "BoardSize",
    "BoardState",
    "CommitKind",
    "CommitResult",
    "LogEntry",
    "Proposal",
]

CommitKind = Literal["write", "rollback", "summary", "approval", "system"]

_ID = r"^[A-Za-z0-9_.:-]{1,128}$"


def new_id() -> str:
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
    activation_id: str = Field(default="", max_length=128)
    trace_id: str = Field(default="", max_length=128)
    reason: str = Field(default="", max_length=2000)

    @classmethod
    def updates(cls, author: str, base: int, values: Mapping[str, Any], **fields: Any) -> Proposal:
        """Whole-key updates, the common case: ``{"risk_rating": "low"}`` becomes
        ``[{"op": "add", "path": "/risk_rating", "value": "low"}]``."""
        patch = [{"op": "add", "path": f"/{k}", "value": v} for k, v in values.items()]
        return cls(author=author, base=base, patch=patch, **fields)


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
    status: str
    version: int
    compliant: int
    bytes: int
    tokens: int
    created_ms: int
    updated_ms: int


class BoardSize(BaseModel):
    """Size accounting, kept incrementally by every commit."""

    board_id: str
    version: int
    bytes: int
    tokens: int
    keys: dict[str, tuple[int, int]]
    """Key -> (bytes, approximate tokens) of its JSON value; unset keys are absent."""
