"""The app the summarisation process tests run in child processes: a writer that
appends a note per activation and hands off to itself, and the built-in summariser."""

from __future__ import annotations

from typing import Annotated

from blackboard.agents import Context, Handoff, Output, Summariser, agent
from pydantic import BaseModel

from blackboard import App, Key, Limits

THRESHOLD = 400
TOTAL = 60


class Notes(BaseModel):
    notes: Annotated[list[str], Key("writer", summarisable=True, summary_bytes=THRESHOLD)] = []
    count: Annotated[int, Key("writer")] = 0


def note(n: int) -> str:
    return f"note {n}: checked source {n}, found nothing new."


@agent("writer", reads=("notes", "count"), handoffs=("writer",))
async def writer(ctx: Context) -> Output:
    n = ctx.board.get("count", 0)
    more = Handoff(to="writer", reason="more to check") if n + 1 < TOTAL else None
    return Output(
        updates={"notes": [*ctx.board.get("notes", []), note(n)], "count": n + 1}, handoff=more
    )


notes_app = App(
    board=Notes,
    agents=[writer, Summariser()],
    start=["writer"],
    summariser="summariser",
    limits=Limits(activation_timeout_s=30),
)
