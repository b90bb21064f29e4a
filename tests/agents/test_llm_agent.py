"""An LLM agent declared from instructions, a model, reads and owns: its output schema
comes from the owned keys' types, the provider's structured output is asked for, the
answer becomes the proposal, and output failing validation is rewritten. End to end in a
Deployment against the scripted server, through the real adapters, on both backends."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import pytest
from bbtest import activations, incidents
from blackboard.agents import Context, Output, agent, llm_agent, when_changed
from blackboard.agents.providers import AnthropicModel, OpenAIModel
from llmdeploy import run
from llmstub import LLMStub, anthropic_tool_use, openai_text
from pydantic import BaseModel, Field

from blackboard import App, BoardStore, ConfigError, Key, Limits


class Loan(BaseModel):
    application: Annotated[str, Key("human")] = "Ada asks for 40000; she earns 90000 a year."
    amount: Annotated[float | None, Field(gt=0, description="Amount asked, USD"), Key("intake")] = (
        None
    )
    income: Annotated[float | None, Key("intake")] = None
    risk: Annotated[Literal["low", "high"] | None, Key("risk")] = None
    decision: Annotated[Literal["approve", "reject"] | None, Key("decide")] = None


@agent("decide", reads=("risk",))
async def decide(ctx: Context) -> Output:
    return Output(updates={"decision": "approve" if ctx.board["risk"] == "low" else "reject"})


def loan_app(model: Any, **limits: Any) -> App:
    intake = llm_agent(
        "intake",
        instructions="Extract the loan amount and the yearly income from the application.",
        model=model,
        reads=["application"],
    )
    risk = llm_agent(
        "risk",
        instructions="Rate the risk of the loan from amount and income.",
        model=model,
        reads=["amount", "income"],
        triggers=[when_changed("income")],
        handoffs=["decide"],
    )
    return App(
        board=Loan,
        agents=[intake, risk, decide],
        start=["intake"],
        done=lambda b: b.get("decision") is not None,
        done_reads=["decision"],
        limits=Limits(activation_timeout_s=5, **limits),
    )


def handoff(to: str | None, reason: str) -> dict[str, Any]:
    return {"handoff_to": to, "handoff_reason": reason}


async def test_structured_output_becomes_the_proposal_and_the_handoff(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(
        openai_text(json.dumps({"amount": 40000, "income": 90000}), tokens=(300, 20)),
        openai_text(json.dumps({"risk": "low", **handoff("decide", "income covers it")})),
    )
    info = await run(loan_app(gpt), store)
    assert info.status == "done"
    board = (await store.read("c1")).data
    assert (board["amount"], board["income"], board["risk"], board["decision"]) == (
        40000,
        90000,
        "low",
        "approve",
    )
    intake_req, risk_req = llm_stub.bodies()
    schema = intake_req["response_format"]["json_schema"]
    assert schema["name"] == "IntakeOutput"
    assert set(schema["schema"]["properties"]) == {"amount", "income"}
    assert schema["schema"]["properties"]["amount"]["description"] == "Amount asked, USD"
    system, user = intake_req["messages"]
    assert system["content"].startswith("Extract the loan amount")
    assert "Ada asks for 40000" in user["content"]  # it sees what it reads …
    assert "risk" not in user["content"]  # … and nothing else
    risk_schema = risk_req["response_format"]["json_schema"]["schema"]
    choice = risk_schema["properties"]["handoff_to"]["anyOf"][0]  # one target: a const
    assert choice.get("enum", [choice.get("const")]) == ["decide"]
    [risk_act] = [a for a in await activations(store, "c1") if a["agent"] == "risk"]
    assert risk_act["output"]["handoff"]["to"] == "decide"
    [intake_act] = [a for a in await activations(store, "c1") if a["agent"] == "intake"]
    assert (intake_act["tokens_in"], intake_act["tokens_out"]) == (300, 20)


async def test_output_failing_validation_is_rewritten_with_the_message(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(
        openai_text(json.dumps({"amount": -5, "income": 90000})),  # amount must be > 0
        openai_text(json.dumps({"amount": 40000, "income": 90000})),
        openai_text(json.dumps({"risk": "high", **handoff("decide", "thin margin")})),
    )
    info = await run(loan_app(gpt), store)
    assert info.status == "done"
    assert (await store.read("c1")).data["decision"] == "reject"
    retry = llm_stub.bodies()[1]["messages"][1]["content"]
    assert "Your previous answer was refused" in retry
    assert "amount: Input should be greater than 0" in retry
    reasons = [a["reason"] for a in await activations(store, "c1") if a["agent"] == "intake"]
    assert reasons == ["start", "rewrite"]


async def test_an_answer_cut_at_max_tokens_is_rewritten_saying_so(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(
        openai_text('{"amount": 40000, "inc', finish="length"),
        openai_text(json.dumps({"amount": 40000, "income": 90000})),
        openai_text(json.dumps({"risk": "low", **handoff("decide", "covered")})),
    )
    info = await run(loan_app(gpt), store)
    assert info.status == "done"
    retry = llm_stub.bodies()[1]["messages"][1]["content"]
    assert "the answer was cut off at the server's max_tokens before it was complete" in retry
    assert "does not match" not in retry
    first = next(a for a in await activations(store, "c1") if a["agent"] == "intake")
    assert first["outcome"] == "semantic"


async def test_invalid_json_past_max_rewrites_escalates(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(*[openai_text('{"amount": 4') for _ in range(3)])
    info = await run(loan_app(gpt, max_rewrites=1), store)
    assert info.status == "escalated"
    assert len(llm_stub.requests) == 2  # the first answer and one rewrite
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "rewrites"
    first, rewrite = await activations(store, "c1")
    assert rewrite["feedback"].startswith("model output does not match IntakeOutput: Invalid JSON")
    # Unusable answers were paid for: their tokens count toward the budgets.
    assert [(a["outcome"], a["tokens_in"], a["tokens_out"]) for a in (first, rewrite)] == [
        ("semantic", 11, 7),
        ("semantic", 11, 7),
    ]


async def test_on_anthropic_the_output_is_a_forced_tool(
    store: BoardStore, llm_stub: LLMStub
) -> None:
    claude = AnthropicModel("claude-haiku-4-5", api_key="ak", base_url=llm_stub.url, timeout=2)
    llm_stub.script(
        anthropic_tool_use("final_output", {"amount": 40000, "income": 90000}),
        anthropic_tool_use("final_output", {"risk": "low", **handoff("decide", "fine")}),
    )
    try:
        info = await run(loan_app(claude), store)
    finally:
        await claude.aclose()
    assert info.status == "done"
    assert (await store.read("c1")).data["decision"] == "approve"
    first = llm_stub.bodies()[0]
    assert first["tool_choice"] == {"type": "tool", "name": "final_output"}
    assert set(first["tools"][0]["input_schema"]["required"]) == {"amount", "income"}
    assert first["system"].startswith("Extract the loan amount")


def test_an_llm_agent_needs_a_model_and_a_free_handoff_field() -> None:
    with pytest.raises(ConfigError, match="llm agent 'intake' has no model"):
        loan_app(None)

    class Clash(BaseModel):
        handoff_to: Annotated[str | None, Key("a")] = None

    a = llm_agent("a", instructions="x", model="offline", handoffs=["b"])
    b = llm_agent("b", instructions="y", model="offline")
    with pytest.raises(ConfigError, match="owns a key named 'handoff_to'"):
        App(board=Clash, agents=[a, b])


def test_a_spec_string_names_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    a = llm_agent("intake", instructions="Extract.", model="openai:gpt-4o-mini")
    assert isinstance(a.model, OpenAIModel) and a.model.name == "gpt-4o-mini"
