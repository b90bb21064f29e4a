"""Every error the framework raises, in one tree.

::

    BlackboardError
    ├── ConfigError            misuse: a bad declaration, setting or argument
    ├── BoardNotFound          no board with that id (the message suggests close ids)
    ├── BoardExists            create() on an id that is taken
    ├── ProposalRejected       a proposed write was refused; the board is unchanged
    │   ├── ValidationFailed   malformed patch, unknown key, bad value, too large
    │   │   └── HistoryCompacted  a version below the board's compacted history
    │   ├── OwnershipError     the author does not own a key it touches
    │   ├── ConflictError      a key written or read changed after the base version
    │   ├── BoardStopped       the board is escalated, done or failed
    │   └── AlreadyDecided     the supervisor already decided this proposal id
    ├── AgentError             an activation failed
    │   ├── TransientError     retried with backoff (timeouts, rate limits, connections)
    │   ├── SemanticError      the output is unusable: sent back as a rewrite request
    │   ├── FatalError         fails the activation and escalates the board
    │   └── NeedsHuman         the board waits for a person's answer
    ├── Escalated              a board stopped for a person (``settle(raise_on_escalation=True)``)
    │   ├── LoopDetected       a handoff cycle tripped the circuit breaker
    │   └── BudgetExceeded     an activation, token, cost or time budget is spent
    ├── StoreUnavailable       Redis could not be reached (wraps the redis error)
    └── CorruptData            a value stored in Redis does not decode (not written by us)

Every message says what happened and what to do about it. A rejection never changes
state: the commit script either applies a whole proposal or nothing. Redis errors reach
callers as :class:`StoreUnavailable` through one translation, :func:`redis_failures`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

from redis import exceptions as redis_errors

__all__ = [
    "AgentError",
    "AlreadyDecided",
    "BlackboardError",
    "BoardExists",
    "BoardNotFound",
    "BoardStopped",
    "BudgetExceeded",
    "ConfigError",
    "ConflictError",
    "CorruptData",
    "Escalated",
    "FatalError",
    "HistoryCompacted",
    "LoopDetected",
    "NeedsHuman",
    "OwnershipError",
    "ProposalRejected",
    "SemanticError",
    "StoreRefused",
    "StoreUnavailable",
    "TransientError",
    "ValidationFailed",
    "escalation",
    "redis_failures",
]


class BlackboardError(Exception):
    """Root of every error raised by this package."""


class ConfigError(BlackboardError):
    """The caller misused the library: a bad declaration, setting or argument."""


class BoardNotFound(BlackboardError):
    """No board has the given id."""

    def __init__(self, board_id: str, suggestions: Sequence[str] = ()) -> None:
        self.board_id = board_id
        self.suggestions = list(suggestions)
        hint = f" Did you mean {', '.join(map(repr, self.suggestions))}?" if suggestions else ""
        super().__init__(
            f"board {board_id!r} does not exist.{hint} "
            "List boards with `blackboard boards` or create it first."
        )


class BoardExists(BlackboardError):
    """create() was called with an id that is already in use."""

    def __init__(self, board_id: str) -> None:
        self.board_id = board_id
        super().__init__(
            f"board {board_id!r} already exists; pick another id, or delete it first "
            "if you really mean to start over."
        )


class ProposalRejected(BlackboardError):
    """A proposed write was refused. The board is unchanged.

    Attributes:
        reason: a short machine-readable reason (``schema``, ``ownership``, ``conflict``…)
            used for rejection statistics.
    """

    reason = "rejected"


class ValidationFailed(ProposalRejected):
    """The proposal is malformed, or a value fails its key's type or a limit.

    Attributes:
        key: the board key at fault, if one is.
        rule: which rule failed (``json_patch``, ``unknown_key``, ``type``,
            ``max_value_bytes``…).
        expected: what would have been accepted, in words.
    """

    reason = "validation"

    def __init__(
        self, message: str, *, key: str | None = None, rule: str, expected: str = ""
    ) -> None:
        self.key = key
        self.rule = rule
        self.expected = expected
        super().__init__(message)


class HistoryCompacted(ValidationFailed):
    """A version below the board's ``history_from``: :meth:`BoardStore.compact` dropped
    the log and snapshots that rebuilt it. Versions ``history_from..current`` still read.

    Attributes:
        board_id: the board.
        version: the version asked for.
        history_from: the oldest version the board can still rebuild.
        current: the board's version now.
    """

    def __init__(self, board_id: str, version: int, history_from: int, current: int) -> None:
        self.board_id = board_id
        self.version = version
        self.history_from = history_from
        self.current = current
        super().__init__(
            f"board {board_id!r}'s history before v{history_from} was compacted; versions "
            f"{history_from}..{current} can be read (version {version} cannot).",
            rule="compacted",
            expected=f"{history_from} <= version <= {current}",
        )


class OwnershipError(ProposalRejected):
    """The author touched a key it does not own, or is not a declared author at all."""

    reason = "ownership"

    def __init__(self, message: str, *, author: str, key: str | None = None) -> None:
        self.author = author
        self.key = key
        super().__init__(message)


class ConflictError(ProposalRejected):
    """A key the proposal writes or reads changed after its base version.

    Attributes:
        base: the base version the proposal was computed from.
        changed: key -> version at which it last changed (all newer than ``base``).
    """

    reason = "conflict"

    def __init__(self, board_id: str, base: int, changed: Mapping[str, int]) -> None:
        self.board_id = board_id
        self.base = base
        self.changed = dict(changed)
        detail = ", ".join(f"{k!r} at v{v}" for k, v in sorted(self.changed.items()))
        super().__init__(
            f"board {board_id!r} changed after base version {base}: {detail}. "
            "Re-read the board and recompute the proposal from the new version."
        )


class AgentError(BlackboardError):
    """An activation failed. Agents raise the subclass that says how to react."""


class TransientError(AgentError):
    """Worth retrying as is: a timeout, a rate limit, a dropped connection.

    Attributes:
        retry_after: seconds the provider asked to wait (a 429's Retry-After), if it
            did; the runtime waits at least that long before the next attempt.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class SemanticError(AgentError):
    """The output is unusable (failed validation): the agent gets a rewrite request with
    this message as feedback; never retried blindly.

    Attributes:
        spent: the model's answer (a ``Completion``, with its tokens) found unusable, if
            one was: it was paid for, so its tokens and cost still count.
    """

    spent: object = None


class FatalError(AgentError):
    """Retrying cannot help: the activation fails and the board escalates to a human."""


class BoardStopped(ProposalRejected):
    """The board is escalated, done or failed: it takes no writes until resumed."""

    reason = "board_stopped"


class AlreadyDecided(ProposalRejected):
    """The supervisor already decided this proposal id (a redelivery): its recorded
    outcome stands, whatever validating it again would say now."""

    reason = "decided"


class NeedsHuman(AgentError):
    """The activation asks a person: the board waits for an operator's ``set``."""


class Escalated(BlackboardError):
    """A board stopped for a person: escalated (a loop, a budget, a deadline, a timeout,
    rewrites exhausted) or failed (an agent's fatal error). Raised by
    ``Deployment.settle(..., raise_on_escalation=True)`` and ``Deployment.run_sync``;
    the board is left as it is, for an operator (``blackboard resume``, ``rollback``).

    Attributes:
        board_id: the board.
        kind: what stopped it, as recorded (``loop``, ``budget``, ``deadline``,
            ``timeout``, ``rewrites``, ``failed``…).
        detail: the recorded detail (which handoffs repeated, which budget…).
    """

    def __init__(self, board_id: str, kind: str, detail: str) -> None:
        self.board_id = board_id
        self.kind = kind
        self.detail = detail
        super().__init__(
            f"board {board_id!r} stopped for a person ({kind}: {detail}). See "
            f"`blackboard incidents {board_id}`; resume it (`blackboard resume`) or roll "
            "it back once the cause is fixed."
        )


class LoopDetected(Escalated):
    """The same handoff repeated with no change to the board; the board is escalated.
    If the repetition is meant, raise ``Limits.loop_threshold``."""


class BudgetExceeded(Escalated):
    """A board's activation, token or cost budget is spent, or its deadline passed;
    the board is escalated. If the board really needs more, raise the app's
    ``Limits.max_activations``, ``max_tokens``, ``max_cost`` or ``deadline_s``."""


_ESCALATIONS: dict[str, type[Escalated]] = {
    "loop": LoopDetected,
    "budget": BudgetExceeded,
    "deadline": BudgetExceeded,
}


def escalation(board_id: str, reason: str) -> Escalated:
    """The error for a board stopped with ``reason`` as recorded in its metadata
    (``"<kind>: <detail>"``): :class:`LoopDetected` for a loop, :class:`BudgetExceeded`
    for a budget or a deadline, :class:`Escalated` for anything else."""
    kind, _, detail = reason.partition(": ")
    cls = _ESCALATIONS.get(kind, Escalated)
    return cls(board_id, kind or "unknown", detail or "no reason was recorded")


class StoreUnavailable(BlackboardError):
    """Redis could not be reached, or cannot take the command for now (loading, out of
    memory, read-only during a failover); see ``__cause__``. An outage: retrying later
    can help."""


class StoreRefused(BlackboardError):
    """Redis answered the command with an error that retrying cannot change (a key of
    the wrong type, a malformed argument such as a stream id, a script error); see
    ``__cause__``. Not an outage."""


_BUSY_REPLIES = (
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
)
"""Error replies that describe the server's state, not the command: they pass."""


@asynccontextmanager
async def redis_failures(what: str) -> AsyncIterator[None]:
    """Redis failures surface as StoreUnavailable (an outage) or StoreRefused (an error
    reply about the command itself), the redis error kept as the cause (``what``: what
    was being done, for the message)."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise StoreUnavailable(
            f"Redis unreachable while trying to {what}: {str(exc).rstrip('.')}. Check that "
            "the server is up and BLACKBOARD_REDIS_URL points at it."
        ) from exc
    except _BUSY_REPLIES as exc:
        raise StoreUnavailable(f"Redis refused to {what}: {str(exc).rstrip('.')}.") from exc
    except redis_errors.RedisError as exc:
        raise StoreRefused(
            f"Redis refused to {what}: it answered {str(exc).rstrip('.')!r}. Retrying will "
            "not help: check the arguments given (ids, keys), and that nothing but this "
            "package writes under its key prefix."
        ) from exc


class CorruptData(BlackboardError):
    """A value stored in Redis does not decode as what this package writes there (it
    was written by something else, or damaged). Not an outage: retrying cannot help."""
