"""Procurement negotiation: a sourcing agent and a negotiation agent exchange offers. A
policy forbids an agreed price above max_budget, which belongs to the budget owner
(a human), not the negotiator: a proposal over budget is rejected and the negotiator
rewrites it. When the two repeat the same exchange with nothing new on the board, the
circuit breaker trips. An operator can roll a deal back to before the negotiator.

Run embedded:  python examples/procurement.py [--model SPEC]
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from blackboard.agents import (
    Context,
    Handoff,
    Model,
    OfflineModel,
    Output,
    agent,
    model_from_command_line,
)
from pydantic import BaseModel, Field

from blackboard import App, Key, Limits, Policy


class Deal(BaseModel):
    max_budget: Annotated[float, Field(gt=0), Key("human")] = 100.0
    supplier_floor: Annotated[float, Key("human")] = 90.0
    offer: Annotated[float | None, Key("sourcing")] = None
    counter: Annotated[float | None, Key("negotiation")] = None
    agreed_price: Annotated[float | None, Key("negotiation")] = None


@agent("sourcing", reads=("counter", "supplier_floor"), handoffs=("negotiation",))
async def sourcing(ctx: Context) -> Output:
    """Opens at 130, then meets the counter half-way, never below the supplier's floor."""
    counter = ctx.board["counter"]
    offer = (
        130.0
        if counter is None
        else max(ctx.board["supplier_floor"], round((ctx.board["offer"] + counter) / 2, 2))
    )
    return Output(updates={"offer": offer}, handoff=Handoff(to="negotiation", reason="offer"))


@agent("negotiation", reads=("offer", "max_budget"), handoffs=("sourcing",))
async def negotiation(ctx: Context) -> Output:
    """Raises its counter by 5 a round and accepts an offer within 5 of it; its first
    acceptance ignores the budget (the policy catches it)."""
    offer, counter = ctx.board["offer"], ctx.board["counter"]
    if counter is not None and offer - counter <= 5:
        price = offer if ctx.feedback else offer + 20  # an eager first acceptance
        return Output(
            updates={"agreed_price": price}, reason="deal within budget" if ctx.feedback else "deal"
        )
    new_counter = 80.0 if counter is None else counter + 5
    note = await ctx.model.complete([{"role": "user", "content": f"counter {new_counter}"}])
    return Output(
        updates={"counter": new_counter}, handoff=Handoff(to="sourcing", reason=note.text)
    )


within_budget = Policy(
    "within_budget",
    ("agreed_price", "max_budget"),
    lambda b: b.get("agreed_price") is None or b["agreed_price"] <= b["max_budget"],
    message="agreed price is above max_budget",
)

model = OfflineModel(default=lambda m: "We can do " + m[-1]["content"].split()[-1] + ".")

app = App(
    board=Deal,
    agents=[sourcing, negotiation],
    start=["sourcing"],
    policies=[within_budget],
    done=lambda b: b.get("agreed_price") is not None,
    done_reads=["agreed_price"],
    model=model,  # the offline model: the negotiator's messages, reproducible
    limits=Limits(loop_threshold=3, max_activations=40, activation_timeout_s=30),
)


@agent("sourcing", reads=("counter",), handoffs=("negotiation",))
async def stubborn_sourcing(ctx: Context) -> Output:
    return Output(updates={"offer": 150.0}, handoff=Handoff(to="negotiation", reason="offer"))


@agent("negotiation", reads=("offer",), handoffs=("sourcing",))
async def stubborn_negotiation(ctx: Context) -> Output:
    return Output(updates={"counter": 80.0}, handoff=Handoff(to="sourcing", reason="counter"))


stalemate = App(
    board=Deal,
    agents=[stubborn_sourcing, stubborn_negotiation],
    start=["sourcing"],
    policies=[within_budget],
    done=lambda b: b.get("agreed_price") is not None,
    done_reads=["agreed_price"],
    limits=Limits(loop_threshold=3, max_activations=40, activation_timeout_s=30),
)


async def main(model: Model | None = None) -> Any:
    from blackboard.supervisor import Deployment

    for name, chosen in (("deal", app), ("stalemate", stalemate)):
        async with Deployment(chosen if model is None else chosen.with_model(model)) as d:
            await d.start(name)
            info = await d.settle(name)
            print(f"== {name}: {info.status} at version {info.version}")
            for e in await d.store.history(name):
                print(f"   v{e.version:<2} {e.author:<12} {e.keys} {e.reason}")
            for _, inc in await d.store.redis.xrange(d.store.keys(name).incidents):
                print(f"   incident {inc['kind']}: {inc['detail']}")


if __name__ == "__main__":
    description = __doc__.splitlines()[0] if __doc__ else None
    asyncio.run(main(model=model_from_command_line(description)))
