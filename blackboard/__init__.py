"""A blackboard for AI agents on Redis: a versioned, validated shared board.

The public API is what ``__all__`` lists; everything else may change.
"""

from blackboard.app import App, Audit, Gate, Limits, Policy
from blackboard.config import Settings
from blackboard.connection import connect
from blackboard.errors import (
    AgentError,
    AlreadyDecided,
    BlackboardError,
    BoardExists,
    BoardNotFound,
    BoardStopped,
    BudgetExceeded,
    ConfigError,
    ConflictError,
    CorruptData,
    Escalated,
    FatalError,
    LoopDetected,
    NeedsHuman,
    OwnershipError,
    ProposalRejected,
    SemanticError,
    StoreUnavailable,
    TransientError,
    ValidationFailed,
)
from blackboard.readmodel import ReadModel
from blackboard.records import (
    Activation,
    BoardInfo,
    BoardSize,
    BoardState,
    CommitResult,
    Handoff,
    LogEntry,
    Outcome,
    Proposal,
    SettledBoard,
    Submission,
)
from blackboard.schema import HUMAN, SUPERVISOR, BoardSchema, Key, KeySpec
from blackboard.store import BoardStore

__all__ = [
    "Activation",
    "AgentError",
    "AlreadyDecided",
    "App",
    "Audit",
    "BlackboardError",
    "BoardExists",
    "BoardInfo",
    "BoardNotFound",
    "BoardSchema",
    "BoardSize",
    "BoardState",
    "BoardStopped",
    "BoardStore",
    "BudgetExceeded",
    "CommitResult",
    "ConfigError",
    "ConflictError",
    "CorruptData",
    "Escalated",
    "FatalError",
    "Gate",
    "HUMAN",
    "Handoff",
    "Key",
    "KeySpec",
    "Limits",
    "LogEntry",
    "LoopDetected",
    "NeedsHuman",
    "Outcome",
    "OwnershipError",
    "Policy",
    "Proposal",
    "ProposalRejected",
    "ReadModel",
    "SUPERVISOR",
    "SemanticError",
    "Settings",
    "SettledBoard",
    "StoreUnavailable",
    "Submission",
    "TransientError",
    "ValidationFailed",
    "connect",
]
