"""The runtime's model<->tool loop for any agent (``ctx.complete``), not only llm_agent:
tool answers go back to the model, a tool's error is its answer, an identical call is a
loop signal and rounds are bounded across the asks of one activation, and a tool the
agent may not use is a fatal misdeclaration. Against the scripted server through the
real OpenAI adapter, on both backends. (llm_agent runs the same loop: a retried
activation not repeating an effect is in test_llm_tools, kill -9 mid-loop on both paths
in test_llm_processes.)"""

from __future__ import annotations

import json
from typing import Annotated, Any

from bbtest import activations, incidents
from blackboard.agents import Context, Output, agent
from blackboard.agents.providers import OpenAIModel
from blackboard.agents.tools import Tool, ToolRegistry
from llmdeploy import one_agent_app, rewrite_feedback, run
from llmstub import LLMStub, openai_text, openai_tool_call
from pydantic import BaseModel

from blackboard import App, BoardStore, Key, Limits


class Case(BaseModel):
    customer: Annotated[str, Key("human")] = "c7"
    summary: Annotated[str | None, Key("clerk")] = None


class Who(BaseModel):
    customer: str


class Receipt(BaseModel):
    receipt: str


def registry(effects: list[str], *, only: tuple[str, ...] | None = None) -> ToolRegistry:
    async def notify(who: Who) -> Receipt:
        """Tell the customer the case is open."""
        if who.customer == "broken":
            raise ConnectionError("mail server unreachable")
        effects.append(who.customer)
        return Receipt(receipt=f"n{len(effects)}")

    return ToolRegistry([Tool("notify", notify, Who, Receipt, side_effects=True, agents=only)])


def clerk_app(model: Any, tools: ToolRegistry, *, asks: int = 1, **kw: Any) -> App:
    """A plain agent writing its own prompt; it asks the model ``asks`` times in one
    activation (each with the tool loop) and writes the last answer's text."""

    @agent("clerk", reads=["customer"])
    async def clerk(ctx: Context) -> Output:
        text = ""
        for n in range(asks):
            ask = f"Step {n}: notify {ctx.board['customer']} and summarise. {ctx.feedback}"
            answer = await ctx.complete([{"role": "user", "content": ask}], tools=["notify"], **kw)
            text = answer.text
        return Output(updates={"summary": text})

    limits = Limits(activation_timeout_s=5, max_rewrites=1)
    return one_agent_app(Case, clerk, "summary", tools=tools, model=model, limits=limits)


async def test_any_agent_runs_the_tool_loop_through_the_registry(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    effects: list[str] = []
    llm_stub.script(
        openai_tool_call("notify", {"customer": "c7"}, call_id="call_a", tokens=(100, 10)),
        openai_text("Notified c7.", tokens=(150, 20)),
    )
    info = await run(clerk_app(gpt, registry(effects)), store)
    assert info.status == "done"
    assert (await store.read("c1")).data["summary"] == "Notified c7."
    assert effects == ["c7"]
    first, second = llm_stub.bodies()
    [offered] = first["tools"]
    assert offered["function"]["name"] == "notify"
    assert offered["function"]["description"] == "Tell the customer the case is open."
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_a"
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_a",
        "content": '{"receipt":"n1"}',
    }
    [act] = await activations(store, "c1")
    assert [c["tool"] for c in act["tool_calls"]] == ["notify"]
    assert act["tool_calls"][0]["key"].startswith(f"{act['activation_id']}:notify:")
    assert (act["tokens_in"], act["tokens_out"]) == (250, 30)  # the runtime metered both


async def test_a_tools_error_is_its_answer(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(
        openai_tool_call("notify", {"customer": "broken"}),
        openai_tool_call("lookup", {"customer": "c7"}, call_id="call_2"),
        openai_text("Could not notify."),
    )
    info = await run(clerk_app(gpt, registry([])), store)
    assert info.status == "done"
    answers = [b["messages"][-1]["content"] for b in llm_stub.bodies()[1:]]
    assert answers[0].startswith("error: tool 'notify' failed: ConnectionError: mail server")
    assert answers[1] == "error: no tool named 'lookup' is offered to you (tools: notify)."


async def test_an_identical_call_in_one_activation_is_a_loop_signal_even_across_asks(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    effects: list[str] = []
    llm_stub.script(
        openai_tool_call("notify", {"customer": "c7"}),
        openai_text("first ask done"),
        openai_tool_call("notify", {"customer": "c7"}, call_id="call_2"),  # same call
        openai_text("rewritten"),
        openai_text("rewritten, second ask"),
    )
    info = await run(clerk_app(gpt, registry(effects), asks=2), store)
    assert info.status == "done"
    assert "called tool 'notify' again with the same arguments" in await rewrite_feedback(store)
    assert effects == ["c7"]


async def test_rounds_are_bounded_per_activation(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(
        openai_tool_call("notify", {"customer": "c1"}),
        openai_text("one"),
        openai_tool_call("notify", {"customer": "c2"}),  # round 2 of the activation
        openai_text("rewritten"),
        openai_text("rewritten, second ask"),
    )
    info = await run(clerk_app(gpt, registry([]), asks=2, max_rounds=1), store)
    assert info.status == "done"
    assert "kept calling tools past the bound of 1 tool rounds" in await rewrite_feedback(store)


async def test_a_tool_the_agent_may_not_use_is_fatal(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    info = await run(clerk_app(gpt, registry([], only=("someone_else",))), store)
    assert info.status == "failed"
    assert llm_stub.requests == []  # refused before the model was asked
    [act] = await activations(store, "c1")
    assert act["outcome"] == "fatal"
    [incident] = await incidents(store, "c1")
    assert (
        "tool 'notify' does not allow agent 'clerk' (allowed: someone_else)" in (incident["detail"])
    )


async def test_with_a_schema_the_answer_is_parsed(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    class Summary(BaseModel):
        summary: str

    @agent("clerk", reads=["customer"])
    async def clerk(ctx: Context) -> Output:
        answer = await ctx.complete(
            [{"role": "user", "content": "Summarise."}], tools=["notify"], schema=Summary
        )
        return Output(updates={"summary": answer.parsed.summary})

    llm_stub.script(openai_text(json.dumps({"summary": "ok"})))
    app = one_agent_app(Case, clerk, "summary", tools=registry([]), model=gpt)
    info = await run(app, store)
    assert info.status == "done"
    assert (await store.read("c1")).data["summary"] == "ok"
    [body] = llm_stub.bodies()
    assert body["response_format"]["json_schema"]["name"] == "Summary"


async def test_a_tool_not_in_the_registry_is_fatal(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    @agent("clerk", reads=["customer"])
    async def clerk(ctx: Context) -> Output:
        await ctx.complete([{"role": "user", "content": "Look it up."}], tools=["lookup"])
        return Output()

    info = await run(one_agent_app(Case, clerk, "summary", tools=registry([]), model=gpt), store)
    assert info.status == "failed"
    assert llm_stub.requests == []
    [incident] = await incidents(store, "c1")
    assert (
        "tool 'lookup' was asked for, but no tool named 'lookup' in the app's registry"
        in (incident["detail"])
    )
