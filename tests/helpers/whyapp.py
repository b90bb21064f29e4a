"""An app whose boards fail in every way an operator must be able to see the reason of:
a validation failure, a policy, a handoff to an unknown agent, a gate with a message,
rejections repeated until the board escalates, a fatal error. ``brief.case`` picks one; the
writer fixes its mistake on the rewrite (except ``stubborn``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from blackboard.agents import Context, Handoff, Output, agent, when_changed
from pydantic import BaseModel, Field

from blackboard import App, FatalError, Gate, Key, Limits, Policy

CASES = ("validation", "policy", "handoff", "gate", "stubborn", "fatal")
FATAL = "the archive refused the draft: nothing can be published"
GATE_MESSAGE = "a legal review: a human decides whether this may be published"
LONG_WORD = "Pneumonoultramicroscopicsilicovolcanoconiosis-" * 4
"""A word too long for any column: it must be folded, never cut."""


class Doc(BaseModel):
    brief: Annotated[dict[str, Any], Key("human")] = {}
    draft: Annotated[str | None, Field(max_length=400), Key("writer")] = None
    words: Annotated[int | None, Field(ge=0), Key("writer")] = None
    verdict: Annotated[Literal["ok", "bad"] | None, Key("reviewer")] = None
    published: Annotated[bool | None, Key("publisher")] = None


@agent("writer", reads=("brief",), triggers=(when_changed("brief"),))
async def writer(ctx: Context) -> Output:
    case = ctx.board["brief"].get("case")
    fixed = bool(ctx.feedback) and case != "stubborn"
    draft = f"A short note. {LONG_WORD}"
    if case in ("validation", "stubborn") and not fixed:
        return Output(updates={"draft": draft, "words": -1})
    if case == "policy" and not fixed:
        return Output(updates={"draft": f"TODO: {LONG_WORD}", "words": 3})
    if case == "fatal":
        raise FatalError(FATAL)
    to = "reviewr" if case == "handoff" and not fixed else "reviewer"
    return Output(
        updates={"draft": draft, "words": 3},
        handoff=Handoff(to=to, reason="drafted"),
    )


@agent("reviewer", reads=("draft",))
async def reviewer(ctx: Context) -> Output:
    return Output(updates={"verdict": "ok"})


@agent("publisher", reads=("verdict",), triggers=(when_changed("verdict"),))
async def publisher(ctx: Context) -> Output:
    return Output(updates={"published": True})


def _no_todo(board: Any) -> bool | str:
    draft = board.get("draft") or ""
    return "TODO" not in draft or f"the draft still says TODO ({draft!r}): finish it"


app = App(
    board=Doc,
    agents=[writer, reviewer, publisher],
    start=["writer"],
    policies=[Policy("no_todo", ("draft",), _no_todo)],
    gates=[
        Gate(
            "legal",
            ("brief",),
            lambda updates, board: "published" in updates and board["brief"].get("case") == "gate",
            GATE_MESSAGE,
        )
    ],
    done=lambda b: b.get("published") is not None,
    done_reads=["published"],
    limits=Limits(activation_timeout_s=10, max_rewrites=2),
)
