"""Support triage: a hub (triage) routes tickets to technical, billing or account
agents, keeping the agents tried on the board. A specialist that cannot help hands the
ticket back. When triage sends the same ticket to the same agent again with nothing new
on the board, the loop breaker trips and the ticket escalates to a human lead.

Run embedded:  python examples/support.py [--model SPEC]
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from blackboard.agents import (
    Context,
    Handoff,
    Model,
    OfflineModel,
    Output,
    agent,
    model_from_command_line,
)
from blackboard.supervisor import Deployment
from pydantic import BaseModel

from blackboard import App, Key, Limits

Team = Literal["technical", "billing", "account"]


class Ticket(BaseModel):
    ticket: Annotated[dict[str, str], Key("human")] = {}
    category: Annotated[Team | None, Key("triage")] = None
    tried: Annotated[list[str], Key("triage")] = []
    technical_answer: Annotated[str | None, Key("technical")] = None
    billing_answer: Annotated[str | None, Key("billing")] = None
    account_answer: Annotated[str | None, Key("account")] = None
    resolution: Annotated[str | None, Key("human")] = None


# The offline model's classifier: keyword rules, deterministic. It misreads "refund"
# tickets about crashes as billing, which is what makes the second ticket bounce.
classifier = OfflineModel(
    rules={"refund": "billing", "crash": "technical", "password": "account"},
    default=lambda m: "account",
)


@agent("triage", reads=("ticket",), handoffs=("technical", "billing", "account"))
async def triage(ctx: Context) -> Output:
    text = ctx.board["ticket"].get("text", "")
    team = (await ctx.model.complete([{"role": "user", "content": text}])).text
    tried = ctx.board["tried"] if team in ctx.board["tried"] else [*ctx.board["tried"], team]
    return Output(
        updates={"category": team, "tried": tried},
        handoff=Handoff(to=team, reason=f"classified as {team}", confidence=0.7),
    )


def specialist(team: str, handles: str) -> Any:
    @agent(team, reads=("ticket",), handoffs=("triage",))
    async def run(ctx: Context) -> Output:
        text = ctx.board["ticket"].get("text", "")
        if handles not in text:
            return Output(handoff=Handoff(to="triage", reason=f"not a {team} issue"))
        return Output(updates={f"{team}_answer": f"{team}: resolved '{text}'"})

    return run


app = App(
    board=Ticket,
    agents=[
        triage,
        specialist("technical", "crash"),
        specialist("billing", "invoice"),
        specialist("account", "password"),
    ],
    start=["triage"],
    done=lambda b: any(
        b.get(k) for k in ("technical_answer", "billing_answer", "account_answer", "resolution")
    ),
    done_reads=["technical_answer", "billing_answer", "account_answer", "resolution"],
    model=classifier,
    limits=Limits(loop_threshold=2, max_activations=20, activation_timeout_s=30),
)

TICKETS = {
    "password": {"text": "I forgot my password"},
    "bounced": {"text": "the app crashes when I ask for a refund"},
}


async def main(model: Model | None = None) -> None:
    async with Deployment(app if model is None else app.with_model(model)) as d:
        for name, ticket in TICKETS.items():
            board = f"ticket-{name}"
            await d.start(board, {"ticket": ticket})
            info = await d.settle(board)
            print(f"== {board}: {info.status} (tried {await d.store.read_key(board, 'tried')})")
            for _, incident in await d.store.redis.xrange(d.store.keys(board).incidents):
                print(f"   incident {incident['kind']}: {incident['detail']}")
            if info.status == "escalated":  # the human lead takes it
                await d.command(board, "resume", by="human:lead")
                await d.command(
                    board,
                    "set",
                    by="human:lead",
                    values={"resolution": "lead: crash fixed, refund issued"},
                )
                info = await d.settle(board)
                print(f"   resolved by the lead: {info.status}")


if __name__ == "__main__":
    description = __doc__.splitlines()[0] if __doc__ else None
    asyncio.run(main(model=model_from_command_line(description)))
