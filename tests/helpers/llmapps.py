"""Apps with LLM agents on a real adapter, for the real-process tests: the model talks
to the scripted server at ``LLM_STUB_URL``; the ``notify`` tool's effect is a line
appended to the file ``LLM_EFFECTS`` (so the test sees effects made in any process).
``app`` declares its clerk with ``llm_agent``; ``generic_app``'s clerk is a plain agent
that writes its own prompt and runs the tool loop with ``ctx.complete``."""

from __future__ import annotations

import os
from typing import Annotated

from blackboard.agents import Agent, Context, Output, agent, llm_agent
from blackboard.agents.providers import OpenAIModel
from blackboard.agents.tools import Tool, ToolRegistry
from llmdeploy import one_agent_app
from pydantic import BaseModel, Field

from blackboard import App, Key, Limits


class Case(BaseModel):
    customer: Annotated[str, Key("human")] = "c7"
    credit: Annotated[int | None, Field(ge=300, le=850), Key("clerk")] = None
    note: Annotated[str | None, Key("clerk")] = None


class Who(BaseModel):
    customer: str


class Receipt(BaseModel):
    receipt: str


async def notify(who: Who) -> Receipt:
    """Tell the customer the case is open (the side effect: one line in a file)."""
    with open(os.environ["LLM_EFFECTS"], "a+") as f:
        f.write(f"notified {who.customer} by {os.getpid()}\n")
        f.seek(0)
        n = len(f.readlines())
    return Receipt(receipt=f"n{n}")


def model() -> OpenAIModel:
    url = os.environ.get("LLM_STUB_URL", "http://127.0.0.1:9/v1")
    return OpenAIModel("gpt-4o-mini", api_key="sk-test", base_url=url, timeout=20)


class Answer(BaseModel):
    credit: int = Field(ge=300, le=850)
    note: str


@agent("clerk", reads=["customer"])
async def generic_clerk(ctx: Context) -> Output:
    """Not an llm_agent: its own prompt and output, the runtime's tool loop."""
    ask = f"Notify customer {ctx.board['customer']}, then give their credit score."
    if ctx.feedback:
        ask += f"\n\nYour previous answer was refused: {ctx.feedback}"
    answer = await ctx.complete(
        [{"role": "system", "content": "You are a clerk."}, {"role": "user", "content": ask}],
        tools=["notify"],
        schema=Answer,
    )
    return Output(updates=answer.parsed.model_dump())


def clerk_app(generic: bool = False, **limits: float) -> App:
    clerk: Agent = llm_agent(
        "clerk",
        instructions="Notify the customer, then give their credit score.",
        model=model(),
        reads=["customer"],
        tools=["notify"],
    )
    if generic:
        clerk = generic_clerk
    return one_agent_app(
        Case,
        clerk,
        "credit",
        tools=ToolRegistry([Tool("notify", notify, Who, Receipt, side_effects=True)]),
        model=model() if generic else None,
        limits=Limits(claim_idle_ms=300, activation_timeout_s=30, **limits),
    )


app = clerk_app()
generic_app = clerk_app(generic=True)
budget_app = clerk_app(max_cost=0.01)
