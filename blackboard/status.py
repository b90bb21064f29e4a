"""A board's status: the one vocabulary the store, the supervisor, the CLI and the Lua
scripts share (``tests/blackboard/test_status.py`` checks the scripts use no other)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["SETTLED", "STOPPED", "BoardStatus"]


class BoardStatus(StrEnum):
    """Where a board stands. A ``StrEnum``: each member is its own string, as stored."""

    ACTIVE = "active"
    """Agents are at work; the supervisor routes after each commit."""
    PAUSED = "paused"
    """An operator paused it: nothing is dispatched until ``resume``."""
    AWAITING_APPROVAL = "awaiting_approval"
    """A person must act: a gate holds a proposal, or no agent has work left."""
    ESCALATED = "escalated"
    """Stopped for a person: a loop, a budget, a deadline, rewrites exhausted."""
    DONE = "done"
    """Its done condition holds."""
    FAILED = "failed"
    """An agent reported a fatal error."""
    ARCHIVED = "archived"
    """Its content is gone from Redis; its log was exported."""

    def __repr__(self) -> str:  # as stored: a record prints status='done'
        return repr(self.value)


STOPPED = frozenset({BoardStatus.ESCALATED, BoardStatus.DONE, BoardStatus.FAILED})
"""No agent acts on a board in these until an operator reopens it."""

SETTLED = frozenset(
    {
        BoardStatus.DONE,
        BoardStatus.ESCALATED,
        BoardStatus.FAILED,
        BoardStatus.AWAITING_APPROVAL,
        BoardStatus.PAUSED,
    }
)
"""Nothing more happens on a board in these without a person."""
