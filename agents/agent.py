"""The agent contract: what users write.

An agent declares its name, the keys it owns, the keys it reads (it is given only those:
small context by construction), its triggers, and one async ``run(context)`` returning
key updates (or a JSON Patch) and an optional handoff::

    @agent("risk", reads=["verified_income"], triggers=[when_changed("verified_income")])
    async def risk(ctx: Context) -> Output:
        income = ctx.board["verified_income"]
        return Output(updates={"risk_rating": "low" if income > 50_000 else "high"},
                      handoff=Handoff(to="compliance", reason="scored"))
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from blackboard.agents.models import Completion, Message
from blackboard.agents.toolloop import DEFAULT_MAX_ROUNDS, ToolLoop
from pydantic import BaseModel

from blackboard.errors import ConfigError
from blackboard.records import Handoff

if TYPE_CHECKING:
    from blackboard.app import App

__all__ = [
    "Agent",
    "Context",
    "Output",
    "Trigger",
    "agent",
    "when_all",
    "when_changed",
]


def _is_set(value: Any) -> bool:
    return value is not None and value != [] and value != {} and value != ""


@dataclass(frozen=True)
class Trigger:
    """A condition on the board that makes the supervisor activate the agent.

    It is evaluated only after a commit that changed one of ``watches``. ``join`` makes
    it wait until every watched key is set; with ``partial`` a branch whose activation
    failed or timed out counts as done, so a fan-out completes with partial results.
    """

    watches: tuple[str, ...]
    condition: Callable[[Mapping[str, Any]], bool] | None = None
    join: bool = False
    partial: bool = False

    def fires(self, board: Mapping[str, Any], failed: Sequence[str] = ()) -> bool:
        if self.join:
            done = [k for k in self.watches if _is_set(board.get(k))]
            missing = [k for k in self.watches if k not in done]
            if missing and not (self.partial and all(k in failed for k in missing)):
                return False
        return self.condition is None or bool(self.condition(board))


def when_changed(
    *keys: str, condition: Callable[[Mapping[str, Any]], bool] | None = None
) -> Trigger:
    """Fire when any of ``keys`` changed (and ``condition`` holds on the board)."""
    return Trigger(tuple(keys), condition)


def when_all(
    *keys: str,
    partial: bool = False,
    condition: Callable[[Mapping[str, Any]], bool] | None = None,
) -> Trigger:
    """A join: fire once all ``keys`` are set (not None, "", [] or {}: give the keys a
    None default, since a default such as 0 already counts as set); with ``partial``,
    keys whose writer failed or timed out count as done."""
    return Trigger(tuple(keys), condition, join=True, partial=partial)


@dataclass
class Output:
    """What an activation produced. Empty updates and no patch with a handoff is a pure
    handoff; nothing at all ends the activation with no change."""

    updates: Mapping[str, Any] = field(default_factory=dict)
    patch: Sequence[Mapping[str, Any]] = ()
    handoff: Handoff | None = None
    reason: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    def operations(self) -> list[dict[str, Any]]:
        ops = [dict(op) for op in self.patch]
        ops += [{"op": "add", "path": f"/{k}", "value": v} for k, v in self.updates.items()]
        return ops


@dataclass
class Context:
    """What an activation sees."""

    board_id: str
    version: int
    """The board version ``board`` was read at: the proposal's base."""
    board: dict[str, Any]
    """The keys the agent reads and owns, at ``version`` (nothing else)."""
    activation_id: str
    trace_id: str
    feedback: str = ""
    """If this is a rewrite: the rejection or audit failure to fix."""
    payload: dict[str, Any] = field(default_factory=dict)
    """The handoff's payload, or the supervisor's (``{"key": ...}`` for a summariser)."""
    deadline_s: float | None = None
    """Seconds left before the activation times out (None: no limit)."""
    failed: dict[str, str] = field(default_factory=dict)
    """For a join with partial results: agent -> why its branch produced nothing."""
    model: Any = None
    """The agent's own model, else the app's (see ``blackboard.agents.models``), metered:
    its tokens and cost count toward the board's budgets."""
    tools: Any = None
    """The app's tool registry bound to this activation, if any."""
    _loop: ToolLoop = field(default_factory=ToolLoop, repr=False)

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[str] = (),
        schema: type[BaseModel] | None = None,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
    ) -> Completion:
        """Ask the activation's model (:attr:`model`), letting it call ``tools`` (names
        in the app's tool registry), and return its answer once it calls none.

        Each tool call runs through the registry inside this activation (permissions,
        shared rate limit, breaker, compensation) keyed by the activation and its
        arguments: a retried or reclaimed activation making the same call gets the first
        result back, and the effect happens once. A tool's error is given to the model
        as the tool's answer.

        Args:
            messages: the conversation so far (see ``blackboard.agents.models.Message``).
            tools: the tools the model may call (none: one plain model call).
            schema: ask for an answer of this pydantic type (``Completion.parsed``).
            max_rounds: model turns that call tools, counted over the activation.

        Raises:
            SemanticError: the model repeated an identical call, went past
                ``max_rounds``, or answered something unusable (a rewrite follows).
            FatalError: a tool that is not in the registry, or not allowed to this
                agent; no model.
            TransientError: the model's provider failed for now (the runtime retries).
        """
        return await self._loop.complete(
            self, messages, tools=tools, schema=schema, max_rounds=max_rounds
        )


RunFunction = Callable[[Context], Awaitable["Output | Mapping[str, Any] | None"]]


class Agent:
    """Base class of agents. Subclass it and implement :meth:`run`, or use :func:`agent`.

    Class attributes:
        name: unique within the app; also the owner name used on board keys.
        owns: keys this agent writes; default: the keys the board model gives it.
        reads: keys it is given besides those it owns.
        triggers: conditions that activate it.
        handoffs: agents it may hand off to (None: any agent of the app).
        model: its own model, given in its context (None: the app's model).
    """

    name: str = ""
    owns: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    handoffs: tuple[str, ...] | None = None
    model: Any = None

    def bind(self, app: App) -> None:
        """Called by the app that holds the agent once its keys are settled (``owns``
        filled in from the board model): the place to derive anything from them."""

    @property
    def sees(self) -> list[str]:
        """The board keys in its context: those it reads, then those it owns."""
        return [*dict.fromkeys([*self.reads, *self.owns])]

    async def run(self, ctx: Context) -> Output | Mapping[str, Any] | None:
        """Do one activation's work: read ``ctx.board`` (the keys it reads and owns, at
        ``ctx.version``), think (``ctx.complete`` asks the model, running its tool
        calls), and say what to write.

        Returns:
            An :class:`Output` (updates or a JSON Patch of its own keys, an optional
            handoff), a plain dict of key updates, or None for no change. The
            supervisor validates it like any proposal (owner, types, policies).

        Raises:
            TransientError: worth retrying as is (a rate limit, a timeout, a dropped
                connection; ``retry_after`` if the provider said when); the runtime
                retries with backoff within the activation's deadline. (Python's
                ``TimeoutError`` and ``ConnectionError`` count as transient too.)
            SemanticError: the work came out unusable; the supervisor asks for a
                rewrite with this message as ``ctx.feedback`` (``TypeError`` and
                ``ValueError`` count as semantic too).
            NeedsHuman: a person must answer first; the board waits.
            FatalError: retrying cannot help; the board fails (its tool effects are
                compensated). Any other exception is taken as a bug: fatal, logged.

        It may run more than once for one activation (a retry, a redelivery, a worker
        killed and its work taken over): make side effects through ``ctx.tools`` (or
        the tool loop), which gives a repeated call the first call's result. It is
        cancelled at the activation's deadline (``ctx.deadline_s``).
        """
        raise NotImplementedError(f"agent {self.name!r} must implement async run(ctx)")


class _FunctionAgent(Agent):
    def __init__(self, fn: RunFunction) -> None:
        self._fn = fn

    async def run(self, ctx: Context) -> Output | Mapping[str, Any] | None:
        return await self._fn(ctx)


def agent(
    name: str,
    *,
    owns: Sequence[str] = (),
    reads: Sequence[str] = (),
    triggers: Sequence[Trigger] = (),
    handoffs: Sequence[str] | None = None,
) -> Callable[[RunFunction], Agent]:
    """Make an agent from an async function of one :class:`Context`."""

    def wrap(fn: RunFunction) -> Agent:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"agent {name!r}: decorate an `async def` function.")
        instance = _FunctionAgent(fn)
        instance.name = name
        instance.owns = tuple(owns)
        instance.reads = tuple(reads)
        instance.triggers = tuple(triggers)
        instance.handoffs = None if handoffs is None else tuple(handoffs)
        instance.__doc__ = fn.__doc__
        return instance

    return wrap


def to_output(result: Output | Mapping[str, Any] | None) -> Output:
    """Normalise what ``run`` returned; anything else is a semantic failure."""
    if result is None:
        return Output()
    if isinstance(result, Output):
        return result
    if isinstance(result, Mapping):
        return Output(updates=dict(result))
    raise TypeError(
        f"run() returned {type(result).__name__}; return an Output, a dict of key updates, or None."
    )
