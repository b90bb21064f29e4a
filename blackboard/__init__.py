"""A blackboard for AI agents on Redis: a versioned, validated shared board.

The public API is what ``__all__`` lists; everything else may change.
"""

from blackboard.config import Settings
from blackboard.connection import connect
from blackboard.errors import (
    BlackboardError,
    BoardExists,
    BoardNotFound,
    BudgetExceeded,
    ConfigError,
    ConflictError,
    LoopDetected,
    OwnershipError,
    ProposalRejected,
    StoreUnavailable,
    ValidationFailed,
)
from blackboard.records import (
    BoardInfo,
    BoardSize,
    BoardState,
    CommitResult,
    LogEntry,
    Proposal,
)
from blackboard.schema import HUMAN, SUPERVISOR, BoardSchema, Key, KeySpec
from blackboard.store import BoardStore

__all__ = [
    "BlackboardError",
    "BoardExists",
    "BoardInfo",
    "BoardNotFound",
    "BoardSchema",
    "BoardSize",
    "BoardState",
    "BoardStore",
    "BudgetExceeded",
    "CommitResult",
    "ConfigError",
    "ConflictError",
    "HUMAN",
    "Key",
    "KeySpec",
    "LogEntry",
    "LoopDetected",
    "OwnershipError",
    "Proposal",
    "ProposalRejected",
    "SUPERVISOR",
    "Settings",
    "StoreUnavailable",
    "ValidationFailed",
    "connect",
]
