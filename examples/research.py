"""Research fan-out / fan-in: four research agents, one per competitor, work in
parallel; one times out, and the aggregator (a join that accepts partial results)
proceeds and records the failure; a critic sends one section back for a rewrite; the
aggregator's transcript grows past its threshold and is summarised.

Run embedded:  python examples/research.py [--model SPEC]
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
    Summariser,
    agent,
    model_from_command_line,
    when_all,
    when_changed,
)
from pydantic import BaseModel

from blackboard import App, Key, Limits

COMPETITORS = ("acme", "globex", "initech", "umbrella")


class Research(BaseModel):
    acme: Annotated[str, Key("research_acme")] = ""
    globex: Annotated[str, Key("research_globex")] = ""
    initech: Annotated[str, Key("research_initech")] = ""
    umbrella: Annotated[str, Key("research_umbrella")] = ""
    report: Annotated[str, Key("aggregator")] = ""
    transcript: Annotated[list[str], Key("aggregator", summarisable=True, summary_bytes=400)] = []
    review: Annotated[str, Key("critic")] = ""


def researcher(company: str, delay: float = 0.0) -> Any:
    @agent(f"research_{company}")
    async def run(ctx: Context) -> Output:
        await asyncio.sleep(delay)  # umbrella's sources never answer in time
        ask = f"Summarise {company}'s market position."
        if ctx.payload.get("feedback"):
            ask += f" Feedback: {ctx.payload['feedback']}"
        reply = await ctx.model.complete([{"role": "user", "content": ask}])
        return Output(updates={company: f"{company}: {reply.text}"})

    return run


@agent("aggregator", reads=COMPETITORS, triggers=(when_all(*COMPETITORS, partial=True),))
async def aggregator(ctx: Context) -> Output:
    sections = [ctx.board[c] for c in COMPETITORS if ctx.board[c]]
    failed = ", ".join(
        f"{agent} ({why.split(' after ')[0]})" for agent, why in sorted(ctx.failed.items())
    )
    report = "\n".join(sections) + (f"\nmissing: {failed}" if failed else "")
    if not ctx.board["transcript"]:  # the first pass keeps the raw notes: verbose
        notes = [
            f"v{ctx.version} read {s}. Raw notes: sources checked, figures copied "
            "from the annual report, competitor pages archived."
            for s in sections
        ]
        notes += [f"v{ctx.version} no answer from {failed}"] if failed else []
    else:
        notes = [f"v{ctx.version} report revised"]
    return Output(updates={"report": report, "transcript": [*ctx.board["transcript"], *notes]})


@agent(
    "critic", reads=("report",), triggers=(when_changed("report"),), handoffs=("research_globex",)
)
async def critic(ctx: Context) -> Output:
    if (
        "globex" in ctx.board["report"]
        and "verified" not in ctx.board["report"].split("globex:")[1].split("\n")[0]
    ):
        return Output(
            updates={"review": "globex section unsourced"},
            handoff=Handoff(
                to="research_globex",
                payload={"feedback": "cite the filing and verify pricing"},
                reason="globex section needs sources",
            ),
        )
    return Output(updates={"review": "approved"})


app = App(
    board=Research,
    agents=[
        researcher("acme"),
        researcher("globex"),
        researcher("initech"),
        researcher("umbrella", delay=5.0),
        aggregator,
        critic,
        Summariser(keep_recent=1),
    ],
    start=[f"research_{c}" for c in COMPETITORS],
    summariser="summariser",
    # The offline model: deterministic answers, so runs are reproducible.
    model=OfflineModel(
        rules={"Feedback": "revenue 4.1B (2025 filing), 3 product lines, pricing verified"},
        default=lambda m: "revenue about 4B, several products",
    ),
    done=lambda b: b.get("review") == "approved",
    done_reads=["review"],
    limits=Limits(activation_timeout_s=0.5, max_activations=30),
)


async def main(model: Model | None = None) -> None:
    from blackboard.supervisor import Deployment

    async with Deployment(app if model is None else app.with_model(model)) as d:
        await d.start("competitors")
        info = await d.settle("competitors")
        print(f"== competitors: {info.status} at version {info.version}")
        for e in await d.store.history("competitors"):
            print(f"   v{e.version:<2} {e.kind:<8} {e.author:<18} {', '.join(e.keys)}")
        print(await d.store.read_key("competitors", "report"))


if __name__ == "__main__":
    description = __doc__.splitlines()[0] if __doc__ else None
    asyncio.run(main(model=model_from_command_line(description)))
