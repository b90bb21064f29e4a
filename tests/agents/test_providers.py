"""The real model adapters, on the official SDKs, against a scripted server on loopback:
what they send, what they make of the answer, and how failures are classified."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from blackboard.agents import Completion, OfflineModel, ToolCall, ToolSpec, cost_of
from blackboard.agents.pricing import Prices
from blackboard.agents.providers import AnthropicModel, OpenAIModel, model_from_spec
from llmstub import (
    LLMStub,
    Turn,
    anthropic_error,
    anthropic_refusal,
    anthropic_text,
    anthropic_tool_use,
    openai_error,
    openai_refusal,
    openai_text,
    openai_tool_call,
)
from pydantic import BaseModel

from blackboard import ConfigError, FatalError, SemanticError, TransientError


class Verdict(BaseModel):
    approve: bool
    reason: str


LOOKUP = ToolSpec(
    name="lookup",
    description="Look a customer up by id.",
    parameters={"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
)


@pytest.fixture
async def claude(llm_stub: LLMStub) -> AsyncIterator[AnthropicModel]:
    model = AnthropicModel("claude-sonnet-4-5", api_key="ak-test", base_url=llm_stub.url, timeout=2)
    yield model
    await model.aclose()


# -- OpenAI ---------------------------------------------------------------------------


async def test_openai_plain_answer_counts_the_reported_usage(
    gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(openai_text("Hello.", tokens=(123, 45)))
    result = await gpt.complete(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert (result.text, result.tokens_in, result.tokens_out) == ("Hello.", 123, 45)
    assert (result.model, result.provider, result.tool_calls) == ("gpt-4o-mini", "openai", [])
    [sent] = llm_stub.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert "response_format" not in sent.json and "tools" not in sent.json


async def test_openai_structured_output_asks_for_the_json_schema(
    gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(openai_text('{"approve": true, "reason": "income covers it"}'))
    result = await gpt.complete([{"role": "user", "content": "Decide."}], schema=Verdict)
    assert result.parsed == Verdict(approve=True, reason="income covers it")
    fmt = llm_stub.requests[0].json["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Verdict"
    assert fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert set(schema["properties"]) == {"approve", "reason"}
    assert schema["additionalProperties"] is False


class Loose(BaseModel):
    facts: dict[str, Any]


async def test_openai_schema_that_cannot_be_strict_is_sent_non_strict(
    gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    """OpenAI's strict mode refuses free-form objects (a dict key); rather than a 400,
    such a schema is asked for without strict, and validated here as always."""
    llm_stub.script(openai_text('{"facts": {"income": 90000}}'))
    result = await gpt.complete([{"role": "user", "content": "Facts?"}], schema=Loose)
    assert result.parsed == Loose(facts={"income": 90000})
    fmt = llm_stub.requests[0].json["response_format"]["json_schema"]
    assert fmt["strict"] is False
    assert fmt["schema"]["properties"]["facts"]["type"] == "object"


async def test_openai_invalid_json_is_semantic_with_the_validation_message(
    gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(openai_text('{"approve": "perhaps"', tokens=(21, 4)))
    with pytest.raises(SemanticError, match=r"does not match Verdict: .*Invalid JSON") as caught:
        await gpt.complete([{"role": "user", "content": "Decide."}], schema=Verdict)
    spent = caught.value.spent  # the unusable answer's tokens, still to be counted
    assert isinstance(spent, Completion) and (spent.tokens_in, spent.tokens_out) == (21, 4)
    llm_stub.script(openai_text('{"approve": "perhaps", "reason": "x"}'))
    with pytest.raises(SemanticError, match=r"approve: Input should be a valid boolean"):
        await gpt.complete([{"role": "user", "content": "Decide."}], schema=Verdict)


async def test_openai_tool_calls_come_back_and_tool_answers_go_out(
    gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(openai_tool_call("lookup", {"id": "c7"}, call_id="call_9"))
    first = await gpt.complete([{"role": "user", "content": "Who is c7?"}], tools=[LOOKUP])
    assert first.tool_calls == [ToolCall(id="call_9", name="lookup", arguments={"id": "c7"})]
    assert llm_stub.requests[0].json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look a customer up by id.",
                "parameters": LOOKUP.parameters,
            },
        }
    ]
    llm_stub.script(openai_text("c7 is Ada."))
    second = await gpt.complete(
        [
            {"role": "user", "content": "Who is c7?"},
            {"role": "assistant", "content": "", "tool_calls": first.tool_calls},
            {"role": "tool", "tool_call_id": "call_9", "content": '{"name": "Ada"}'},
        ],
        tools=[LOOKUP],
    )
    assert second.text == "c7 is Ada."
    assert llm_stub.requests[1].json["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"id": "c7"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": '{"name": "Ada"}'},
    ]


async def test_openai_tool_call_with_arguments_that_are_not_json_is_semantic(
    gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(openai_tool_call("lookup", '{"id": '))
    with pytest.raises(SemanticError, match="arguments of tool 'lookup' are not a JSON object"):
        await gpt.complete([{"role": "user", "content": "x"}], tools=[LOOKUP])


@pytest.mark.parametrize(
    ("turn", "words"),
    [
        (openai_refusal("I can't help with that."), "refused: I can't help with that."),
        (openai_text(None, finish="content_filter"), "content filter"),
        (openai_text('{"approve": tr', finish="length"), "cut off at the server's max_tokens"),
    ],
)
async def test_openai_refusal_filter_and_truncation_are_semantic(
    gpt: OpenAIModel, llm_stub: LLMStub, turn: Turn, words: str
) -> None:
    llm_stub.script(turn)
    with pytest.raises(SemanticError, match=words):
        await gpt.complete([{"role": "user", "content": "x"}], schema=Verdict)


@pytest.mark.parametrize(
    ("turn", "schema"),
    [
        (openai_text('{"approve": true, "reason": "fi', finish="length"), Verdict),
        (openai_text("The answer is", finish="length"), None),
        (Turn(body={**openai_tool_call("lookup", '{"id": "c').body}), None),
    ],
)
async def test_openai_an_answer_cut_at_max_tokens_says_so_not_that_it_is_invalid(
    llm_stub: LLMStub, turn: Turn, schema: Any
) -> None:
    turn.body["choices"][0]["finish_reason"] = "length"
    llm_stub.script(turn)
    model = OpenAIModel("gpt-4o-mini", api_key="k", base_url=llm_stub.openai_url, max_tokens=50)
    try:
        with pytest.raises(SemanticError) as caught:
            await model.complete([{"role": "user", "content": "x"}], schema=schema, tools=[LOOKUP])
    finally:
        await model.aclose()
    assert str(caught.value).startswith("the answer was cut off at max_tokens (50) before it")
    assert "raise the model's max_tokens or shorten the input" in str(caught.value)
    assert caught.value.spent.tokens_in == 11  # paid for all the same


async def test_openai_429_is_transient_with_retry_after_and_is_not_retried_by_the_sdk(
    gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(openai_error(429, "Rate limit reached", retry_after="7", kind="rate_limit"))
    with pytest.raises(TransientError, match="Rate limit reached") as caught:
        await gpt.complete([{"role": "user", "content": "x"}])
    assert caught.value.retry_after == 7.0
    assert len(llm_stub.requests) == 1  # the runtime's retry policy is the only one


@pytest.mark.parametrize("status", [500, 503])
async def test_openai_5xx_is_transient(gpt: OpenAIModel, llm_stub: LLMStub, status: int) -> None:
    llm_stub.script(openai_error(status, "upstream exploded", kind="server_error"))
    with pytest.raises(TransientError, match=f"HTTP {status}"):
        await gpt.complete([{"role": "user", "content": "x"}])
    assert len(llm_stub.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_openai_4xx_is_fatal_with_the_providers_message(
    gpt: OpenAIModel, llm_stub: LLMStub, status: int
) -> None:
    llm_stub.script(openai_error(status, "Invalid value for 'model': nope."))
    with pytest.raises(FatalError, match=rf"HTTP {status}.*Invalid value for 'model': nope\."):
        await gpt.complete([{"role": "user", "content": "x"}])


async def test_openai_hung_request_times_out_as_transient(llm_stub: LLMStub) -> None:
    model = OpenAIModel("gpt-4o-mini", api_key="k", base_url=llm_stub.openai_url, timeout=0.3)
    llm_stub.script(Turn(hang=True))
    try:
        with pytest.raises(TransientError, match="timed out"):
            await model.complete([{"role": "user", "content": "x"}])
    finally:
        await model.aclose()


async def test_openai_dropped_connection_is_transient(gpt: OpenAIModel, llm_stub: LLMStub) -> None:
    llm_stub.script(Turn(drop=True))
    with pytest.raises(TransientError, match="connection"):
        await gpt.complete([{"role": "user", "content": "x"}])


# -- Anthropic ------------------------------------------------------------------------


async def test_anthropic_plain_answer_moves_system_and_counts_usage(
    claude: AnthropicModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(anthropic_text("Hello.", tokens=(40, 3)))
    result = await claude.complete(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert (result.text, result.tokens_in, result.tokens_out) == ("Hello.", 40, 3)
    assert (result.model, result.provider) == ("claude-sonnet-4-5", "anthropic")
    [sent] = llm_stub.requests
    assert sent.path == "/v1/messages"
    # The key travels as x-api-key or, in newer SDKs, as a bearer token.
    assert "ak-test" in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "")[7:])
    assert sent.json["system"] == "Be brief."
    assert sent.json["messages"] == [{"role": "user", "content": "Hi"}]
    assert sent.json["max_tokens"] == 4096


async def test_anthropic_structured_output_is_a_forced_tool(
    claude: AnthropicModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(anthropic_tool_use("final_output", {"approve": False, "reason": "thin"}))
    result = await claude.complete([{"role": "user", "content": "Decide."}], schema=Verdict)
    assert result.parsed == Verdict(approve=False, reason="thin")
    assert result.tool_calls == []  # the output tool is not a tool call of the agent's
    sent = llm_stub.requests[0].json
    assert sent["tool_choice"] == {"type": "tool", "name": "final_output"}
    [tool] = sent["tools"]
    assert tool["name"] == "final_output"
    assert set(tool["input_schema"]["properties"]) == {"approve", "reason"}


async def test_anthropic_structured_output_failing_validation_is_semantic(
    claude: AnthropicModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(anthropic_tool_use("final_output", {"approve": "maybe"}))
    with pytest.raises(SemanticError, match="does not match Verdict"):
        await claude.complete([{"role": "user", "content": "Decide."}], schema=Verdict)
    llm_stub.script(anthropic_text("I think yes."))
    with pytest.raises(SemanticError, match="did not call final_output"):
        await claude.complete([{"role": "user", "content": "Decide."}], schema=Verdict)


async def test_anthropic_an_answer_cut_at_max_tokens_says_so_not_that_it_is_invalid(
    claude: AnthropicModel, llm_stub: LLMStub
) -> None:
    # The output tool's input as far as it got: valid JSON, missing a field.
    llm_stub.script(anthropic_tool_use("final_output", {"approve": True}, stop="max_tokens"))
    with pytest.raises(SemanticError) as caught:
        await claude.complete([{"role": "user", "content": "Decide."}], schema=Verdict)
    assert str(caught.value).startswith("the answer was cut off at max_tokens (4096) before")
    assert "does not match" not in str(caught.value)


async def test_anthropic_tool_calls_and_results_round_trip(
    claude: AnthropicModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(anthropic_tool_use("lookup", {"id": "c7"}, call_id="toolu_9"))
    first = await claude.complete([{"role": "user", "content": "Who is c7?"}], tools=[LOOKUP])
    assert first.tool_calls == [ToolCall(id="toolu_9", name="lookup", arguments={"id": "c7"})]
    assert llm_stub.requests[0].json["tools"] == [
        {
            "name": "lookup",
            "description": "Look a customer up by id.",
            "input_schema": LOOKUP.parameters,
        }
    ]
    llm_stub.script(anthropic_text("c7 is Ada."))
    await claude.complete(
        [
            {"role": "user", "content": "Who is c7?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": first.tool_calls},
            {"role": "tool", "tool_call_id": "toolu_9", "content": '{"name": "Ada"}'},
        ],
        tools=[LOOKUP],
    )
    assert llm_stub.requests[1].json["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"id": "c7"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_9", "content": '{"name": "Ada"}'}
            ],
        },
    ]


async def test_anthropic_refusal_is_semantic(claude: AnthropicModel, llm_stub: LLMStub) -> None:
    llm_stub.script(anthropic_refusal("No."))
    with pytest.raises(SemanticError, match="refused"):
        await claude.complete([{"role": "user", "content": "x"}])


@pytest.mark.parametrize(
    ("turn", "error", "words"),
    [
        (
            anthropic_error(429, "slow down", retry_after="3", kind="rate_limit_error"),
            TransientError,
            "slow down",
        ),
        (anthropic_error(529, "Overloaded", kind="overloaded_error"), TransientError, "HTTP 529"),
        (anthropic_error(500, "oops", kind="api_error"), TransientError, "HTTP 500"),
        (
            anthropic_error(400, "max_tokens: must be positive"),
            FatalError,
            r"HTTP 400.*max_tokens: must be positive",
        ),
    ],
)
async def test_anthropic_failures_are_classified(
    claude: AnthropicModel, llm_stub: LLMStub, turn: Turn, error: type[Exception], words: str
) -> None:
    llm_stub.script(turn)
    with pytest.raises(error, match=words) as caught:
        await claude.complete([{"role": "user", "content": "x"}])
    if turn.status == 429:
        assert caught.value.retry_after == 3.0  # type: ignore[attr-defined]
    assert len(llm_stub.requests) == 1


async def test_anthropic_hung_request_times_out_as_transient(llm_stub: LLMStub) -> None:
    model = AnthropicModel("claude-sonnet-4-5", api_key="k", base_url=llm_stub.url, timeout=0.3)
    llm_stub.script(Turn(hang=True))
    try:
        with pytest.raises(TransientError, match="timed out"):
            await model.complete([{"role": "user", "content": "x"}])
    finally:
        await model.aclose()


# -- spec strings ---------------------------------------------------------------------


def test_spec_strings_pick_the_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ak-env")
    gpt = model_from_spec("openai:gpt-4o-mini")
    assert isinstance(gpt, OpenAIModel)
    assert (gpt.name, gpt.provider, gpt.api_key, gpt.base_url) == (
        "gpt-4o-mini",
        "openai",
        "sk-env",
        None,
    )
    claude = model_from_spec("anthropic:claude-haiku-4-5")
    assert isinstance(claude, AnthropicModel)
    assert (claude.name, claude.provider, claude.api_key) == (
        "claude-haiku-4-5",
        "anthropic",
        "ak-env",
    )
    local = model_from_spec("openai-compatible:llama3.1:8b@http://127.0.0.1:11434/v1")
    assert isinstance(local, OpenAIModel)
    assert (local.name, local.provider, local.base_url) == (
        "llama3.1:8b",
        None,
        "http://127.0.0.1:11434/v1",
    )
    assert isinstance(model_from_spec("offline"), OfflineModel)


def test_a_local_server_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    local = model_from_spec("openai-compatible:qwen@http://localhost:8000/v1")
    assert isinstance(local, OpenAIModel) and local.api_key


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("gpt-4o", "expected one of"),
        ("openai:", "names no model"),
        ("mistral:large", "unknown provider 'mistral'"),
        ("openai-compatible:qwen", "NAME@URL"),
        ("openai-compatible:qwen@localhost:8000", "http:// or https://"),
    ],
)
def test_a_bad_spec_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, spec: str, words: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    with pytest.raises(ConfigError, match=words):
        model_from_spec(spec)


@pytest.mark.parametrize(
    ("spec", "variable"),
    [("openai:gpt-4o", "OPENAI_API_KEY"), ("anthropic:claude-sonnet-4-5", "ANTHROPIC_API_KEY")],
)
def test_a_missing_key_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, spec: str, variable: str
) -> None:
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match=f"{variable} is not set"):
        model_from_spec(spec)


@pytest.mark.parametrize(
    ("module", "cls"), [("openai", OpenAIModel), ("anthropic", AnthropicModel)]
)
def test_a_missing_sdk_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, module: str, cls: Any
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=rf"pip install 'redis-blackboard\[{module}\]'"):
        cls("m", api_key="k")


def test_completion_is_still_built_positionally() -> None:
    assert Completion("t", 1, 2, "offline").tool_calls == []


def test_retry_after_reads_seconds_milliseconds_and_dates_and_ignores_the_rest() -> None:
    """A header no server should send waits as if there were none: before, a malformed
    date raised ValueError, which turned a rate limit into a rewrite."""
    from email.utils import formatdate

    from blackboard.agents.providers.failures import retry_after

    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 8 <= (retry_after({"retry-after": formatdate(time.time() + 10)}) or 0) <= 10
    assert retry_after({"retry-after": formatdate(time.time() - 60)}) == 0.0  # past: at once
    for junk in ("soon", " ", "Mon, 99 Foo"):
        assert retry_after({"retry-after": junk}) is None


async def test_openai_cached_prompt_tokens_cost_the_libraries_cache_price(
    gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    from genai_prices import Usage, calc_price

    llm_stub.script(openai_text("ok", tokens=(10_000, 500), cached=6_000))
    result = await gpt.complete([{"role": "user", "content": "x"}])
    assert (result.tokens_in, result.tokens_out, result.cache_read) == (10_000, 500, 6_000)
    usage = Usage(input_tokens=10_000, cache_read_tokens=6_000, output_tokens=500)
    expected = float(calc_price(usage, "gpt-4o-mini", provider_id="openai").total_price)
    assert result.cost == pytest.approx(expected)
    assert result.cost < cost_of("gpt-4o-mini", 10_000, 500, "openai")  # cheaper than plain


async def test_anthropic_cache_reads_and_writes_cost_the_libraries_cache_prices(
    claude: AnthropicModel, llm_stub: LLMStub
) -> None:
    from genai_prices import Usage, calc_price

    llm_stub.script(anthropic_text("ok", tokens=(1_000, 500), cache=(8_000, 2_000)))
    result = await claude.complete([{"role": "user", "content": "x"}])
    assert (result.tokens_in, result.cache_read, result.cache_write) == (11_000, 8_000, 2_000)
    usage = Usage(
        input_tokens=11_000, cache_read_tokens=8_000, cache_write_tokens=2_000, output_tokens=500
    )
    price = calc_price(usage, "claude-sonnet-4-5", provider_id="anthropic")
    assert result.cost == pytest.approx(float(price.total_price))


def test_a_price_override_says_nothing_of_the_cache_so_cached_tokens_cost_as_input() -> None:
    prices = Prices({"gpt-4o-mini": (1.0, 2.0)})
    cost = prices.cost("gpt-4o-mini", "openai", 1_000_000, 0, cache_read=600_000)
    assert cost == pytest.approx(1.0)


def test_a_models_repr_does_not_show_its_key() -> None:
    # An app's model is logged and printed; its key must not be.
    gpt = OpenAIModel("gpt-4o-mini", api_key="sk-secret-1")
    claude = AnthropicModel("claude-haiku-4-5", api_key="ak-secret-2")
    assert "sk-secret-1" not in repr(gpt) and "ak-secret-2" not in repr(claude)
    assert "gpt-4o-mini" in repr(gpt)
