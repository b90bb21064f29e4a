"""Apps with LLM agents on a real adapter, for the real-process tests: the model talks
to the scripted server at ``LLM_STUB_URL``; the ``notify`` tool's effect is a line
appended to the file ``LLM_EFFECTS`` (so the test sees effects made in any process)."""

from __future__ import annotations

import os
from typing import Annotated

from blackboard.agents import llm_agent
from blackboard.agents.providers import OpenAIModel
from blackboard.agents.tools import Tool, ToolRegistry
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


def clerk_app(**limits: float) -> App:
    clerk = llm_agent(
        "clerk",
        instructions="Notify the customer, then give their credit score.",
        model=model(),
        reads=["customer"],
        tools=["notify"],
    )
    return App(
        board=Case,
        agents=[clerk],
        start=["clerk"],
        done=lambda b: b.get("credit") is not None,
        done_reads=["credit"],
        tools=ToolRegistry([Tool("notify", notify, Who, Receipt, side_effects=True)]),
        limits=Limits(claim_idle_ms=300, activation_timeout_s=30, **limits),
    )


app = clerk_app()
budget_app = clerk_app(max_cost=0.01)
