"""The app the crash tests run in separate OS processes (``--app crashapp:app``)."""

from __future__ import annotations

from typing import Annotated

from blackboard.agents import Context, Output, agent
from pydantic import BaseModel, Field, create_model

from blackboard import App, Key, Limits

SLOTS = 40

Slots: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "Slots",
    **{f"s{i}": (Annotated[int | None, Field(ge=0), Key("w")], None) for i in range(SLOTS)},
)


@agent("w")
async def writer(ctx: Context) -> Output:
    return Output()


app = App(
    board=Slots,
    agents=[writer],
    limits=Limits(
        claim_idle_ms=100,
        max_deliveries=50,
        max_activations=10_000,
        max_rewrites=10_000,
        loop_threshold=10_000,
    ),
)
