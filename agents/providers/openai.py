"""OpenAI and every OpenAI-compatible server, on the official ``openai`` SDK.

``base_url`` picks the server: OpenAI itself by default; Azure OpenAI, vLLM, Ollama,
LM Studio or a LiteLLM proxy by their ``…/v1`` URL. Structured output is asked for with
a strict JSON-schema response format; tools are offered as functions.
"""

from __future__ import annotations

import json
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

__all__ = ["OpenAIModel"]

LOCAL_KEY = "not-needed"
"""Sent to an OpenAI-compatible server when no key is set: local servers need none, and
the SDK refuses to start without one."""


@dataclass
class OpenAIModel:
    """A chat model behind the OpenAI chat completions API.

    Args:
        name: the model, as the server names it (``gpt-4o-mini``, ``llama3.1:8b``…).
        api_key: default ``OPENAI_API_KEY``; required for OpenAI itself.
        base_url: the server's ``…/v1`` URL; None: OpenAI.
        provider: ``openai`` for OpenAI's API (prices are looked up for it); None for
            another server (an app with ``max_cost`` must then price the model).
        timeout: seconds one request may take; past it, a transient failure.
        max_tokens: cap on the answer's tokens (None: the server's default).
        temperature: None: the server's default.
        client: an ``openai.AsyncOpenAI`` to use instead of one made here (it should
            have ``max_retries=0``: the runtime retries).
    """

    name: str
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    provider: str | None = "openai"
    timeout: float = 60.0
    max_tokens: int | None = None
    temperature: float | None = None
    client: Any = None
    _sdk: SDK = field(init=False, repr=False)
    _formats: dict[type[BaseModel], dict[str, Any]] = field(
        default_factory=dict, init=False, repr=False
    )
    """Response format per output schema: building one costs more than the rest of a
    step's own work, and an agent asks with the same schema every time."""

    def __post_init__(self) -> None:
        key = api_key(self.api_key, "OPENAI_API_KEY", required=self.provider == "openai")
        self.api_key = key or LOCAL_KEY
        self._sdk = SDK(
            "openai",
            "AsyncOpenAI",
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
        request: dict[str, Any] = {
            "model": self.name,
            "messages": [_message(m) for m in messages],
        }
        if tools:
            request["tools"] = [_tool(t) for t in tools]
        if schema is not None:
            if schema not in self._formats:
                self._formats[schema] = _response_format(self._sdk.module, schema)
            request["response_format"] = self._formats[schema]
        if self.max_tokens is not None:
            # OpenAI's newer models take only max_completion_tokens; older servers only
            # max_tokens.
            cap = "max_completion_tokens" if self.provider == "openai" else "max_tokens"
            request[cap] = self.max_tokens
        if self.temperature is not None:
            request["temperature"] = self.temperature
        try:
            answer = await self._sdk.client().chat.completions.create(**request)
        except self._sdk.module.APIError as exc:
            raise classify(self._sdk.module, self._who, exc) from exc
        tokens_in, tokens_out, cached = _usage(answer)
        spent = Completion(
            "", tokens_in, tokens_out, self.name, provider=self.provider, cache_read=cached
        )
        with paid_for(spent):
            return self._completion(answer, schema, spent)

    @property
    def _who(self) -> str:
        return "OpenAI" if self.provider == "openai" else f"the server at {self.base_url}"

    def _completion(
        self, answer: Any, schema: type[BaseModel] | None, spent: Completion
    ) -> Completion:
        if not answer.choices:
            raise SemanticError(f"{self._who} answered with no choices; ask again.")
        choice = answer.choices[0]
        message = choice.message
        refusal = getattr(message, "refusal", None)
        if refusal:
            raise SemanticError(f"the model refused: {refusal}")
        if choice.finish_reason == "length":  # before parsing what is only a part
            raise cut_off(self.max_tokens)
        if choice.finish_reason == "content_filter":
            raise SemanticError(
                "the answer was withheld by the provider's content filter; rephrase the "
                "request or the board's content."
            )
        calls = [_call(c) for c in message.tool_calls or () if getattr(c, "function", None)]
        text = message.content or ""
        parsed = None
        if schema is not None and not calls:
            parsed = parse_output(schema, text)
        spent.text, spent.parsed, spent.tool_calls = text, parsed, calls
        return spent


def _usage(answer: Any) -> tuple[int, int, int]:
    """Prompt, completion and cached prompt tokens as the server reported them (a server
    that reports none counts 0). OpenAI's prompt tokens include the cached ones."""
    usage = answer.usage
    if usage is None:
        return 0, 0, 0
    details = getattr(usage, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", None) or 0)
    return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0), cached


def _message(m: Message) -> dict[str, Any]:
    role = m["role"]
    if role == "tool":
        return {"role": "tool", "tool_call_id": m["tool_call_id"], "content": m.get("content", "")}
    calls: Sequence[ToolCall] = m.get("tool_calls") or ()
    if role == "assistant" and calls:
        return {
            "role": "assistant",
            "content": m.get("content") or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in calls
            ],
        }
    return {"role": role, "content": m.get("content", "")}


def _tool(t: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": t.name,
            "description": t.description,
            "parameters": dict(t.parameters),
        },
    }


def _response_format(sdk: Any, schema: type[BaseModel]) -> dict[str, Any]:
    # The SDK's own strict form of a pydantic schema (every property required, no extra
    # properties): what OpenAI's strict structured outputs accept. A free-form object (a
    # dict key) cannot be strict, and strict mode would refuse the request: such a
    # schema is asked for without it (the answer is validated here either way).
    form = sdk.pydantic_function_tool(schema)["function"]["parameters"]
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.__name__, "schema": form, "strict": _closed(form)},
    }


def _closed(node: Any) -> bool:
    """Whether no object in the schema admits properties it does not name."""
    if isinstance(node, dict):
        if node.get("additionalProperties", False) is not False:
            return False
        return all(_closed(v) for v in node.values())
    if isinstance(node, list):
        return all(_closed(v) for v in node)
    return True


def _call(call: Any) -> ToolCall:
    name = call.function.name
    try:
        arguments = json.loads(call.function.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise SemanticError(
            f"the arguments of tool {name!r} are not a JSON object: "
            f"{call.function.arguments[:200]!r}; call it again with an object."
        )
    return ToolCall(id=call.id, name=name, arguments=arguments)
