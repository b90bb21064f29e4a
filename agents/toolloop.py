"""The model<->tool loop of one activation, for any agent that calls a model with tools.

``ctx.complete(messages, tools=[...])`` asks the activation's model, runs each tool call
it answers with through the app's tool registry (so every call keeps its permissions,
shared rate limit, breaker and compensation) and gives the model the results, until it
answers without calling a tool. Each call's idempotency key is made of the activation
and the call's arguments, so a retried or reclaimed activation (a worker killed with
kill -9 mid-loop) that makes the same call collects the first result instead of
repeating the effect. A tool's error goes back to the model as the tool's answer; an
identical call made twice in one activation is a loop, and the rounds of tool calls are
bounded: both end the attempt with a :class:`~blackboard.errors.SemanticError`, which
the supervisor turns into a rewrite request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from blackboard.agents.models import Completion, Message, ToolCall, ToolSpec
from pydantic import BaseModel

from blackboard.errors import AgentError, FatalError, SemanticError

if TYPE_CHECKING:
    from blackboard.agents.agent import Context
    from blackboard.agents.tools import ToolRegistry

__all__ = ["DEFAULT_MAX_ROUNDS", "ToolLoop", "tool_problem", "tool_specs"]

DEFAULT_MAX_ROUNDS = 8
"""Model turns that call tools, per activation, unless the agent says otherwise."""


def tool_problem(registry: ToolRegistry | None, agent: str, name: str) -> str | None:
    """Why ``agent`` may not be offered the tool ``name``, or None if it may."""
    if registry is None:
        return "the app has no tools; give it App(tools=ToolRegistry([...]))."
    tool = registry.tool_or_none(name)
    if tool is None:
        return (
            f"no tool named {name!r} in the app's registry (tools: "
            f"{', '.join(registry.names) or 'none'}); add it to App(tools=ToolRegistry(...))."
        )
    if tool.agents is not None and agent not in tool.agents:
        return (
            f"tool {name!r} does not allow agent {agent!r} (allowed: "
            f"{', '.join(tool.agents)}); add the agent to the tool's agents."
        )
    return None


def tool_specs(ctx: Context, names: Sequence[str]) -> list[ToolSpec]:
    """What the model is offered for the app's tools ``names``; a tool it may not be
    offered is a misdeclaration, fatal to the activation."""
    if not names:
        return []
    registry: ToolRegistry | None = ctx.tools.registry if ctx.tools is not None else None
    agent = ctx.tools.agent if ctx.tools is not None else ""
    for name in names:
        if problem := tool_problem(registry, agent, name):
            raise FatalError(f"tool {name!r} was asked for, but {problem}")
    assert registry is not None  # else tool_problem would have said so
    return [registry.tool(name).spec for name in names]


@dataclass
class ToolLoop:
    """What one activation's loop remembers across its model calls: the calls that
    succeeded (to tell a loop) and the rounds made (to bound them)."""

    answered: set[str] = field(default_factory=set)
    rounds: int = 0

    async def complete(
        self,
        ctx: Context,
        messages: Sequence[Message],
        *,
        tools: Sequence[str] = (),
        schema: type[BaseModel] | None = None,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
    ) -> Completion:
        """The model's answer with no tool call left in it (see the module's doc)."""
        if ctx.model is None:
            raise FatalError("this agent has no model: give it one, or give the app one.")
        specs = tool_specs(ctx, tools)
        offered = {s.name for s in specs}
        conversation = list(messages)
        while True:
            answer: Completion = await ctx.model.complete(conversation, schema=schema, tools=specs)
            if not answer.tool_calls:
                return answer
            self.rounds += 1
            if self.rounds > max_rounds:
                raise SemanticError(
                    f"the model kept calling tools past the bound of {max_rounds} tool "
                    "rounds per activation; answer with what the tools already gave."
                )
            conversation.append(
                {"role": "assistant", "content": answer.text, "tool_calls": answer.tool_calls}
            )
            for call in answer.tool_calls:
                content = await self._call(ctx, call, offered)
                conversation.append({"role": "tool", "tool_call_id": call.id, "content": content})

    async def _call(self, ctx: Context, call: ToolCall, offered: set[str]) -> str:
        """Run one tool call; its answer (or its error) as text for the model."""
        if call.name not in offered:
            return (
                f"error: no tool named {call.name!r} is offered to you (tools: "
                f"{', '.join(sorted(offered))})."
            )
        canonical = json.dumps(call.arguments, sort_keys=True, separators=(",", ":"))
        signature = f"{call.name}:{hashlib.sha256(canonical.encode()).hexdigest()[:24]}"
        if signature in self.answered:
            raise SemanticError(
                f"the model called tool {call.name!r} again with the same arguments "
                f"({canonical[:200]}) in one activation: a loop. Use the answer it gave."
            )
        try:
            # Keyed by the activation and the arguments: a retry of this activation
            # making the same call collects the first result, whatever the order.
            result: Any = await ctx.tools.call(
                call.name, call.arguments, idempotency_key=f"{ctx.activation_id}:{signature}"
            )
        except AgentError as exc:  # the tool's error is its answer
            return f"error: {exc}"
        self.answered.add(signature)
        return str(result.model_dump_json())
