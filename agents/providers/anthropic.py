"""Anthropic's models, on the official ``anthropic`` SDK (the messages API).

Structured output is asked for with tool use: the schema becomes the input of one tool,
``final_output``, that the model must call (or, when it also has the agent's tools, may
call instead of them); its input, validated, is the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from blackboard.agents.models import (
    Completion,
    Message,
    ToolCall,
    ToolSpec,
    paid_for,
    parse_output,
)
from blackboard.agents.providers.client import SDK, api_key
from blackboard.agents.providers.failures import classify, cut_off
from pydantic import BaseModel

from blackboard.errors import SemanticError

__all__ = ["OUTPUT_TOOL", "AnthropicModel"]

OUTPUT_TOOL = "final_output"
"""The tool whose input is the structured answer."""


@dataclass
class AnthropicModel:
    """A Claude model behind the Anthropic messages API.

    Args:
        name: the model (``claude-sonnet-4-5``, ``claude-haiku-4-5``…).
        api_key: default ``ANTHROPIC_API_KEY`` (required).
        base_url: None: Anthropic's API.
        timeout: seconds one request may take; past it, a transient failure.
        max_tokens: cap on the answer's tokens (the API requires one).
        temperature: None: the API's default.
        client: an ``anthropic.AsyncAnthropic`` to use instead of one made here (it
            should have ``max_retries=0``: the runtime retries).
    """

    name: str
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    timeout: float = 60.0
    max_tokens: int = 4096
    temperature: float | None = None
    client: Any = None
    provider: str = field(default="anthropic", init=False)
    _sdk: SDK = field(init=False, repr=False)
    _schemas: dict[type[BaseModel], dict[str, Any]] = field(
        default_factory=dict, init=False, repr=False
    )
    """JSON schema per output schema (built once: an agent asks with the same one)."""

    def __post_init__(self) -> None:
        self.api_key = api_key(self.api_key, "ANTHROPIC_API_KEY", required=True)
        self._sdk = SDK(
            "anthropic",
            "AsyncAnthropic",
            key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            client=self.client,
        )

    async def aclose(self) -> None:
        await self._sdk.aclose()

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] = (),
    ) -> Completion:
        system = "\n\n".join(str(m.get("content") or "") for m in messages if m["role"] == "system")
        request: dict[str, Any] = {
            "model": self.name,
            "max_tokens": self.max_tokens,
            "messages": _messages(messages),
        }
        if system:
            request["system"] = system
        offered = [_tool(t) for t in tools]
        if schema is not None:
            if schema not in self._schemas:
                self._schemas[schema] = schema.model_json_schema()
            offered.append(
                {
                    "name": OUTPUT_TOOL,
                    "description": f"Give the final answer as a {schema.__name__} object.",
                    "input_schema": self._schemas[schema],
                }
            )
            # Alone, the output tool is forced; beside the agent's tools, some tool is.
            forced = {"type": "tool", "name": OUTPUT_TOOL} if not tools else {"type": "any"}
            request["tool_choice"] = forced
        if offered:
            request["tools"] = offered
        if self.temperature is not None:
            request["temperature"] = self.temperature
        try:
            answer = await self._sdk.client().messages.create(**request)
        except self._sdk.module.APIError as exc:
            raise classify(self._sdk.module, "Anthropic", exc) from exc
        spent = _usage(answer, self.name, self.provider)
        with paid_for(spent):
            return self._completion(answer, schema, spent)

    def _completion(
        self, answer: Any, schema: type[BaseModel] | None, spent: Completion
    ) -> Completion:
        if answer.stop_reason == "refusal":
            raise SemanticError(
                "the model refused to answer (stop_reason 'refusal'); rephrase the request "
                "or the board's content."
            )
        if answer.stop_reason == "max_tokens":  # before parsing what is only a part
            raise cut_off(self.max_tokens)
        texts: list[str] = []
        calls: list[ToolCall] = []
        output: Any = None
        for block in answer.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use" and block.name == OUTPUT_TOOL:
                output = block.input
            elif block.type == "tool_use":
                calls.append(ToolCall(id=block.id, name=block.name, arguments=dict(block.input)))
        parsed = None
        if schema is not None and not calls:
            if output is None:
                raise SemanticError(
                    f"the model did not call {OUTPUT_TOOL}; answer by calling it with a "
                    f"{schema.__name__} object."
                )
            parsed = parse_output(schema, output)
        spent.text, spent.parsed, spent.tool_calls = "".join(texts), parsed, calls
        return spent


def _usage(answer: Any, model: str, provider: str) -> Completion:
    """What the answer used, as a Completion with no content yet. Anthropic counts cache
    reads and writes apart from ``input_tokens``: all three are prompt tokens, each kind
    at its own price."""
    usage = answer.usage
    read = int(getattr(usage, "cache_read_input_tokens", None) or 0)
    write = int(getattr(usage, "cache_creation_input_tokens", None) or 0)
    tokens_in = int(usage.input_tokens) + read + write
    return Completion(
        "",
        tokens_in,
        int(usage.output_tokens),
        model,
        provider=provider,
        cache_read=read,
        cache_write=write,
    )


def _messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The conversation in Anthropic's shape: no system turns (they go to ``system``),
    tool calls as ``tool_use`` blocks, tool answers as ``tool_result`` blocks of a user
    turn (consecutive answers share one)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "system":
            continue
        if role == "tool":
            result = {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": content}
            last = out[-1] if out else None
            if last and last["role"] == "user" and isinstance(last["content"], list):
                last["content"].append(result)
            else:
                out.append({"role": "user", "content": [result]})
            continue
        calls: Sequence[ToolCall] = m.get("tool_calls") or ()
        if role == "assistant" and calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if content else []
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in calls
            ]
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": role, "content": content})
    return out


def _tool(t: ToolSpec) -> dict[str, Any]:
    return {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
