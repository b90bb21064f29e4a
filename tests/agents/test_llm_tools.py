"""The model<->tool loop of an LLM agent, inside one activation, through the app's tool
registry: tool answers go back to the model, a tool's error is its answer, an identical
call repeated is a loop signal, rounds are bounded, and a retried activation does not
repeat an effect. Against the scripted server through the real adapter, both backends."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from bbtest import activations
from blackboard.agents import llm_agent
from blackboard.agents.providers import AnthropicModel, OpenAIModel
from blackboard.agents.tools import Tool, ToolRegistry
from llmdeploy import one_agent_app, rewrite_feedback, run
from llmstub import (
    LLMStub,
    anthropic_text,
    anthropic_tool_use,
    openai_error,
    openai_text,
    openai_tool_call,
)
from pydantic import BaseModel, Field

from blackboard import App, BoardStore, ConfigError, Key, Limits


class Case(BaseModel):
    customer: Annotated[str, Key("human")] = "c7"
    credit: Annotated[int | None, Key("clerk")] = None
    note: Annotated[str | None, Key("clerk")] = None


class Who(BaseModel):
    customer: str = Field(description="The customer id.")


class Score(BaseModel):
    score: int


class Receipt(BaseModel):
    receipt: str


def registry(effects: list[str], *, fail_lookup: bool = False) -> ToolRegistry:
    async def lookup(who: Who) -> Score:
        """Look up a customer's credit score."""
        if fail_lookup:
            raise ConnectionError("bureau unreachable")
        return Score(score=712)

    async def notify(who: Who) -> Receipt:
        effects.append(f"notified {who.customer}")
        return Receipt(receipt=f"n{len(effects)}")

    return ToolRegistry(
        [
            Tool("lookup", lookup, Who, Score),
            Tool(
                "notify",
                notify,
                Who,
                Receipt,
                side_effects=True,
                description="Tell the customer the case is open.",
            ),
        ]
    )


def clerk_app(model: Any, tools: ToolRegistry, **kw: Any) -> App:
    clerk = llm_agent(
        "clerk",
        instructions="Find the customer's credit score and notify them.",
        model=model,
        reads=["customer"],
        tools=["lookup", "notify"],
        **kw,
    )
    limits = Limits(activation_timeout_s=5, max_rewrites=1)
    return one_agent_app(Case, clerk, "credit", tools=tools, limits=limits)


ANSWER = json.dumps({"credit": 712, "note": "score 712, notified"})


async def test_tool_answers_go_back_to_the_model_until_it_answers(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    effects: list[str] = []
    llm_stub.script(
        openai_tool_call("lookup", {"customer": "c7"}, call_id="call_a", tokens=(100, 10)),
        openai_tool_call("notify", {"customer": "c7"}, call_id="call_b", tokens=(150, 10)),
        openai_text(ANSWER, tokens=(200, 30)),
    )
    info = await run(clerk_app(gpt, registry(effects)), store)
    assert info.status == "done"
    assert (await store.read("c1")).data["credit"] == 712
    assert effects == ["notified c7"]
    first, second, third = llm_stub.bodies()
    tools = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert tools["lookup"]["description"] == "Look up a customer's credit score."
    assert tools["notify"]["description"] == "Tell the customer the case is open."
    assert tools["lookup"]["parameters"]["properties"]["customer"]["type"] == "string"
    assert "response_format" in first  # the answer's schema, offered with the tools
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_a",
        "content": '{"score":712}',
    }
    assert third["messages"][-1]["content"] == '{"receipt":"n1"}'
    [act] = await activations(store, "c1")
    assert [c["tool"] for c in act["tool_calls"]] == ["lookup", "notify"]
    assert (act["tokens_in"], act["tokens_out"]) == (450, 50)  # every round counted


async def test_a_tools_error_is_its_answer(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(
        openai_tool_call("lookup", {"customer": "c7"}),
        openai_tool_call("nosuch", {"customer": "c7"}, call_id="call_2"),
        openai_tool_call("lookup", {"who": 1}, call_id="call_3"),
        openai_text(ANSWER),
    )
    info = await run(clerk_app(gpt, registry([], fail_lookup=True)), store)
    assert info.status == "done"
    answers = [b["messages"][-1]["content"] for b in llm_stub.bodies()[1:]]
    assert answers[0].startswith("error: tool 'lookup' failed: ConnectionError: bureau")
    assert answers[1].startswith("error: no tool named 'nosuch' is offered to you")
    assert answers[2].startswith("error: arguments of tool 'lookup' do not match its input")


async def test_an_identical_call_repeated_is_a_loop_signal(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(
        openai_tool_call("lookup", {"customer": "c7"}),
        openai_tool_call("lookup", {"customer": "c7"}, call_id="call_2"),
        openai_text(ANSWER),
    )
    info = await run(clerk_app(gpt, registry([])), store)
    assert info.status == "done"
    assert "called tool 'lookup' again with the same arguments" in await rewrite_feedback(store)


async def test_rounds_are_bounded(store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub) -> None:
    llm_stub.script(
        openai_tool_call("lookup", {"customer": "c1"}),
        openai_tool_call("lookup", {"customer": "c2"}),
        openai_text(ANSWER),
    )
    info = await run(clerk_app(gpt, registry([]), max_tool_rounds=1), store)
    assert info.status == "done"
    assert "kept calling tools past the bound of 1 tool rounds" in await rewrite_feedback(store)


async def test_a_retried_activation_does_not_repeat_an_effect(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    effects: list[str] = []
    llm_stub.script(
        openai_tool_call("notify", {"customer": "c7"}),
        openai_error(503, "overloaded", kind="server_error"),  # the attempt fails here
        openai_tool_call("notify", {"customer": "c7"}, call_id="call_again"),
        openai_text(ANSWER),
    )
    info = await run(clerk_app(gpt, registry(effects)), store)
    assert info.status == "done"
    assert effects == ["notified c7"]  # the retry collected the first call's result
    assert llm_stub.bodies()[3]["messages"][-1]["content"] == '{"receipt":"n1"}'
    [act] = await activations(store, "c1")
    assert act["retries"] == 1


async def test_on_anthropic_tools_and_the_answer_tool_are_offered_together(
    store: BoardStore, llm_stub: LLMStub
) -> None:
    claude = AnthropicModel("claude-haiku-4-5", api_key="ak", base_url=llm_stub.url, timeout=2)
    llm_stub.script(
        anthropic_tool_use("lookup", {"customer": "c7"}, call_id="toolu_1"),
        anthropic_text("Let me think."),  # neither a tool nor the answer: a rewrite
        anthropic_tool_use("final_output", {"credit": 712, "note": "ok"}),
    )
    try:
        info = await run(clerk_app(claude, registry([])), store)
    finally:
        await claude.aclose()
    assert info.status == "done"
    first, second, third = llm_stub.bodies()
    assert first["tool_choice"] == {"type": "any"}
    assert [t["name"] for t in first["tools"]] == ["lookup", "notify", "final_output"]
    assert second["messages"][-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"score":712}'}],
    }
    assert "did not call final_output" in third["messages"][-1]["content"]  # the rewrite


def test_tools_must_exist_and_allow_the_agent() -> None:
    with pytest.raises(
        ConfigError, match="llm agent 'clerk' uses tool 'lookup', but the app has no tools"
    ):
        App(
            board=Case,
            agents=[llm_agent("clerk", instructions="x", model="offline", tools=["lookup"])],
        )
    guarded = ToolRegistry(
        [Tool("lookup", registry([]).tool("lookup").fn, Who, Score, agents=("x",))]
    )
    with pytest.raises(ConfigError, match="tool 'lookup' does not allow agent 'clerk'"):
        App(
            board=Case,
            agents=[llm_agent("clerk", instructions="x", model="offline", tools=["lookup"])],
            tools=guarded,
        )
