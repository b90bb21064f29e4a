"""Model access behind one small protocol, and a deterministic offline model.

A model takes chat messages (and optionally a pydantic output schema and the tools it may
call) and returns a :class:`Completion` with the provider's token counts; the runtime sums
tokens and cost per board, and the supervisor enforces the app's budgets. Nothing here
needs a network: the offline model answers from rules or a function, so tests and
examples are reproducible. Real providers live in ``blackboard.agents.providers``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from blackboard.agents.pricing import COSTS, Prices, cost_of
from blackboard.agents.pricing import DEFAULT_PRICES as _DEFAULT_PRICES
from pydantic import BaseModel, ValidationError

from blackboard import codec
from blackboard.errors import SemanticError

__all__ = [
    "COSTS",
    "Completion",
    "Message",
    "Metered",
    "Model",
    "OfflineModel",
    "ToolCall",
    "ToolSpec",
    "cost_of",
    "paid_for",
    "parse_output",
]

Message = Mapping[str, Any]
"""A chat message: ``role`` (``system``, ``user``, ``assistant`` or ``tool``) and
``content`` (text). An assistant message may carry ``tool_calls`` (a list of
:class:`ToolCall`); a tool message carries the ``tool_call_id`` it answers. Adapters
translate this one shape to each provider's."""


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to a model: its name, what it is for, and the JSON Schema of its
    arguments (an object)."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """A model asking to call a tool. ``id`` is the provider's, echoed in the answer."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Completion:
    """A model's answer: text, the validated object if a schema was asked for, the tool
    calls it asked for, and tokens as the provider reported them."""

    text: str
    tokens_in: int
    tokens_out: int
    model: str
    parsed: Any = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    provider: str | None = None
    """Who served it (``openai``, ``anthropic``; None when unknown): prices depend on it."""
    cache_read: int = 0
    """Of ``tokens_in``, those read from the provider's prompt cache (priced lower)."""
    cache_write: int = 0
    """Of ``tokens_in``, those written to the provider's prompt cache (Anthropic)."""

    @property
    def cost(self) -> float:
        """At the default prices; the runtime counts with the app's (see ``Metered``)."""
        return self.cost_at(_DEFAULT_PRICES)

    def cost_at(self, prices: Prices) -> float:
        """USD at ``prices``, cached tokens at their cache prices."""
        return prices.cost(
            self.model,
            self.provider,
            self.tokens_in,
            self.tokens_out,
            cache_read=self.cache_read,
            cache_write=self.cache_write,
        )


@runtime_checkable
class Model(Protocol):
    """One async method. Implement it to plug in any provider (see
    ``blackboard.agents.providers`` for two on official SDKs, :class:`OfflineModel` for a
    fake). ``name`` is the model's name, used to look up its price."""

    name: str

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] = (),
    ) -> Completion:
        """One request to the model: no retries of its own (the runtime retries, within
        the activation's deadline) and no tool runs (the runtime runs them).

        Args:
            messages: the conversation (see :data:`Message`), system turns first; after
                a tool call, the assistant turn carrying ``tool_calls`` and one ``tool``
                turn per call with its answer.
            schema: answer with an object of this pydantic type, asked for with the
                provider's structured output; the validated object goes in
                ``Completion.parsed`` (with :func:`parse_output`).
            tools: the tools the model may call instead of answering; calls come back
                in ``Completion.tool_calls`` (``parsed`` is then None). A model that
                takes no tools may leave the parameter out.

        Returns:
            The answer, with the tokens the provider reported (not estimates) and who
            served it (``provider``), since prices depend on both.

        Raises:
            TransientError: may succeed if sent again: rate limit (set
                ``retry_after`` from the provider's Retry-After), 5xx, timeout,
                dropped connection.
            SemanticError: the answer is unusable (fails ``schema``, cut off at
                max_tokens, refused, filtered): the agent is asked for a rewrite. Raise
                it inside :func:`paid_for` so the tokens it used still count.
            FatalError: the request cannot succeed as made (a 4xx: bad key, unknown
                model, invalid request), with the provider's message.
        """
        ...


def parse_output(schema: type[BaseModel], data: str | Mapping[str, Any]) -> Any:
    """Validate a model's answer (JSON text, or an object a tool-use answer carried)
    against ``schema``. A failure is semantic: its message, sent back to the agent as a
    rewrite request, says which fields are wrong and how, so the model can fix them."""
    try:
        if isinstance(data, str):
            return schema.model_validate_json(data)
        return schema.model_validate(data)
    except ValidationError as exc:
        problems = [
            ".".join(str(p) for p in err["loc"]) + ": " + err["msg"] if err["loc"] else err["msg"]
            for err in exc.errors()[:3]
        ]
        more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
        raise SemanticError(
            f"model output does not match {schema.__name__}: {'; '.join(problems)}{more}. "
            "Answer with a JSON object of that schema."
        ) from exc


def _tokens(text: str) -> int:
    return max(1, codec.approx_tokens(codec.utf8_len(text)))


@dataclass
class OfflineModel:
    """Deterministic: the first rule whose pattern occurs in the last user message
    answers; else ``default(messages)``; else the first sentence of the last message.

    Args:
        rules: substring -> answer text (JSON text when a schema is asked for).
        default: fallback answer function.
        name: the name used for the cost table (``offline`` costs nothing; use another
            name to exercise cost budgets).
    """

    rules: Mapping[str, str] = field(default_factory=dict)
    default: Callable[[Sequence[Message]], str] | None = None
    name: str = "offline"
    calls: list[Sequence[Message]] = field(default_factory=list)

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] = (),
    ) -> Completion:
        self.calls.append(list(messages))
        last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        text = next((answer for pattern, answer in self.rules.items() if pattern in last), None)
        if text is None:
            text = self.default(messages) if self.default else last.split(". ")[0][:200]
        tokens_in = sum(_tokens(str(m.get("content") or "")) for m in messages)
        result = Completion(text, tokens_in, _tokens(text), self.name)
        if schema is not None:
            with paid_for(result):
                result.parsed = parse_output(schema, text)
        return result


@contextmanager
def paid_for(spent: Completion) -> Iterator[None]:
    """An answer found unusable (a :class:`SemanticError` raised inside) was still paid
    for: the error carries what it used, so budgets count it."""
    try:
        yield
    except SemanticError as exc:
        exc.spent = spent
        raise


class Metered:
    """Wraps the app's model for one activation and sums what it used, so the runtime
    reports tokens and cost to the supervisor's budgets without the agent's help.
    ``prices``: the app's (with its overrides); default: the default prices."""

    def __init__(self, model: Model, prices: Prices | None = None) -> None:
        self.model = model
        self.prices = prices
        self.name = model.name
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost = 0.0

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] = (),
    ) -> Completion:
        try:
            # A model written before tools existed takes no ``tools``: pass it only if used.
            if tools:
                result = await self.model.complete(messages, schema=schema, tools=tools)
            else:
                result = await self.model.complete(messages, schema=schema)
        except SemanticError as exc:
            if isinstance(exc.spent, Completion):  # an unusable answer is paid for too
                self._count(exc.spent)
            raise
        self._count(result)
        return result

    def _count(self, result: Completion) -> None:
        self.tokens_in += result.tokens_in
        self.tokens_out += result.tokens_out
        self.cost += result.cost_at(self.prices or _DEFAULT_PRICES)
