"""Code review by consensus: security, style and logic reviewers work in parallel and
write structured findings; a synthesiser (a join on all three) deduplicates them and
resolves the votes; a disagreement goes to a judge, whose ruling is final.

Run embedded:  python examples/review.py [--model SPEC]
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
    when_all,
)
from pydantic import BaseModel

from blackboard import App, Key, Limits

Vote = Literal["approve", "block"]


class Finding(BaseModel):
    line: int
    severity: Literal["info", "minor", "major"]
    message: str


class Review(BaseModel):
    vote: Vote
    findings: list[Finding]


class Board(BaseModel):
    diff: Annotated[str, Key("human")] = ""
    security: Annotated[Review | None, Key("security")] = None
    style: Annotated[Review | None, Key("style")] = None
    logic: Annotated[Review | None, Key("logic")] = None
    findings: Annotated[list[Finding], Key("synthesiser")] = []
    decision: Annotated[Vote | None, Key("synthesiser")] = None
    ruling: Annotated[str | None, Key("judge")] = None


def reviewer(name: str, rules: dict[str, tuple[str, str]]) -> Any:
    """A reviewer that looks for patterns in the diff (a stand-in for a model)."""

    @agent(name, reads=("diff",))
    async def run(ctx: Context) -> Output:
        findings = []
        for number, text in enumerate(ctx.board["diff"].splitlines(), start=1):
            for pattern, (severity, message) in rules.items():
                if pattern in text:
                    findings.append(Finding(line=number, severity=severity, message=message))
        vote: Vote = "block" if any(f.severity == "major" for f in findings) else "approve"
        return Output(updates={name: Review(vote=vote, findings=findings).model_dump()})

    return run


security = reviewer(
    "security", {"eval(": ("major", "eval on input"), "password": ("minor", "secret in code")}
)
style = reviewer("style", {"  ": ("info", "double space"), "password": ("minor", "secret in code")})
logic = reviewer("logic", {"== None": ("minor", "use `is None`")})


@agent(
    "synthesiser",
    reads=("security", "style", "logic"),
    triggers=(when_all("security", "style", "logic"),),
    handoffs=("judge",),
)
async def synthesiser(ctx: Context) -> Output:
    reviews = {k: Review.model_validate(ctx.board[k]) for k in ("security", "style", "logic")}
    unique: dict[tuple[int, str], Finding] = {}
    for review in reviews.values():
        for f in review.findings:
            unique.setdefault((f.line, f.message), f)  # the same finding twice counts once
    findings = [f.model_dump() for f in sorted(unique.values(), key=lambda f: f.line)]
    votes = {name: r.vote for name, r in reviews.items()}
    if len(set(votes.values())) == 1:
        return Output(updates={"findings": findings, "decision": next(iter(votes.values()))})
    return Output(
        updates={"findings": findings},
        handoff=Handoff(to="judge", payload={"votes": votes}, reason="the reviewers disagree"),
    )


@agent("judge", reads=("findings",))
async def judge(ctx: Context) -> Output:
    majors = [f for f in ctx.board["findings"] if f["severity"] == "major"]
    reply = await ctx.model.complete([{"role": "user", "content": f"{len(majors)} major"}])
    verdict = reply.text
    votes = ", ".join(f"{k}: {v}" for k, v in sorted(ctx.payload["votes"].items()))
    return Output(updates={"ruling": f"{verdict} ({len(majors)} major finding(s); {votes})"})


app = App(
    board=Board,
    agents=[security, style, logic, synthesiser, judge],
    start=["security", "style", "logic"],
    done=lambda b: b.get("decision") is not None or b.get("ruling") is not None,
    done_reads=["decision", "ruling"],
    limits=Limits(max_activations=10, activation_timeout_s=30),
    # The offline model's rule: any major finding blocks.
    model=OfflineModel(rules={"0 major": "approve"}, default=lambda m: "block"),
)

DIFFS = {
    "clean": "def total(items):\n    return sum(items)\n",
    "disputed": "def run(cmd):\n    password = 'x'\n    return eval(cmd)\n",
}


async def main(model: Model | None = None) -> None:
    from blackboard.supervisor import Deployment

    async with Deployment(app if model is None else app.with_model(model)) as d:
        for name, diff in DIFFS.items():
            await d.start(f"pr-{name}", {"diff": diff})
            info = await d.settle(f"pr-{name}")
            state = (await d.store.read(f"pr-{name}")).data
            print(
                f"== pr-{name}: {info.status}; decision {state['decision']}, "
                f"ruling {state['ruling']}, {len(state['findings'])} finding(s)"
            )


if __name__ == "__main__":
    description = __doc__.splitlines()[0] if __doc__ else None
    asyncio.run(main(model=model_from_command_line(description)))
