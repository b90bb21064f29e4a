"""``blackboard demo``: every mechanism of the framework once, on the embedded store,
offline and in about a second: commits, a trigger, the human gate, the audit rollback, a
policy's rejection with its reason, a validation failure rewritten, and the loop
breaker. Each commit prints as it lands (the loan example's timeline, from the boards'
event channels); rewrites and incidents print with their reasons after each case.

It runs the repository's examples (loan approval and procurement) plus one small board
of its own, so it needs a checkout (``pip install -e .``)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import click
from pydantic import BaseModel, Field

from blackboard.agents import Context, Output, agent
from blackboard.app import App
from blackboard.cli.base import EXIT_USAGE, Ctx, main, run_async
from blackboard.readmodel import ReadModel
from blackboard.schema import Key
from blackboard.status import BoardStatus
from blackboard.store import BoardStore

__all__: list[str] = []


class Invoice(BaseModel):
    """The demo's own board: an amount read from a line of text."""

    text: Annotated[str, Key("human")] = ""
    amount: Annotated[int | None, Field(gt=0), Key("reader")] = None


@agent("reader", reads=("text",))
async def reader(ctx: Context) -> Output:
    """Copies the amount as written the first time ("12k", not a number); told why that
    failed, it writes the number."""
    if not ctx.feedback:
        return Output(updates={"amount": "12k"})
    return Output(updates={"amount": 12_000})


invoices = App(
    board=Invoice,
    agents=[reader],
    start=["reader"],
    done=lambda b: b.get("amount") is not None,
    done_reads=["amount"],
)


@dataclass
class Case:
    """One case of the tour: what it shows, and how to run it."""

    shows: str
    app: App
    board: str
    initial: dict[str, Any] | None = None


def _cases(loan: Any, procurement: Any) -> list[Case]:
    def application(name: str) -> dict[str, Any]:
        return {"application": loan.CASES[name]}

    return [
        Case(
            "commits: three agents, each writing its own keys, one version per commit",
            loan.app,
            "loan-clean",
            application("clean"),
        ),
        Case(
            "a trigger: a tax id the registry does not know sends the case to a "
            "clarification agent, then back",
            loan.app,
            "loan-bad-tax-id",
            application("bad-tax-id"),
        ),
        Case(
            "the gate: an AML hit holds compliance's decision until a person approves it",
            loan.app,
            "loan-aml-hit",
            application("aml-hit"),
        ),
        Case(
            "the audit rollback: a misread payslip passes the policies, fails the audit "
            "after commit, is rolled back and redone",
            loan.app,
            "loan-income-slip",
            application("income-slip"),
        ),
        Case(
            "a rejection with its reason: the negotiator's deal breaks the budget policy "
            "and comes back as a rewrite",
            procurement.app,
            "deal",
        ),
        Case(
            'a validation failure rewritten: "12k" is not an integer; the reader is told '
            "why and writes 12000",
            invoices,
            "invoice",
            {"text": "Invoice 7: twelve thousand (12k) euros"},
        ),
        Case(
            "the loop breaker: two agents repeat one exchange with nothing new; the "
            "supervisor stops them and escalates",
            procurement.stalemate,
            "stalemate",
        ),
    ]


async def _why(store: BoardStore, board: str) -> None:
    """The rewrites (with the reason the proposal was refused) and the incidents."""
    reads = ReadModel(store)
    for act in await reads.activations(board):
        if act.reason == "rewrite":
            click.echo(f"  -> {act.agent} asked to rewrite: {act.feedback}")
    for incident in await reads.incidents([board]):
        click.echo(f"  incident {incident.kind}: {incident.detail}")


async def _run(case: Case, store: BoardStore) -> str:
    from blackboard.supervisor import Deployment

    async with Deployment(case.app, store) as d:
        await d.start(case.board, case.initial)
        info = await d.settle(case.board)
        if info.status == BoardStatus.AWAITING_APPROVAL:
            click.echo("  (held at the gate: human:officer approves it)")
            await d.command(case.board, "approve", by="human:officer", note="AML review done")
            info = await d.settle(case.board)
    await asyncio.sleep(0.02)  # the last events print before the summary
    await _why(store, case.board)
    return f"{info.status} at version {info.version}"


async def tour(loan: Any, cases: list[Case], pause: float) -> None:
    store = BoardStore.from_url(None)
    live = asyncio.create_task(loan.timeline(store, time.monotonic()))
    try:
        for number, case in enumerate(cases, 1):
            click.echo(f"\n== {number}. {case.shows}")
            click.echo(f"== {case.board}: {await _run(case, store)}")
            await asyncio.sleep(pause)
    finally:
        live.cancel()
        await store.close()
    click.echo(
        "\nInspect boards like these with `blackboard show|history|trace|incidents` "
        "against a real Redis (--redis URL)."
    )


@main.command()
@click.option("--fast", is_flag=True, help="No pauses between cases.")
@click.pass_obj
def demo(ctx: Ctx, fast: bool) -> None:
    """Every mechanism once, on the embedded store: commits, a trigger, the gate, the
    audit rollback, a rejection, a validation rewrite, the loop breaker."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "examples" / "loan.py").exists():
        click.echo(
            "error: examples/ not found: run the demo from a checkout of the repository "
            "(pip install -e .).",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    sys.path.insert(0, str(root))
    loan = importlib.import_module("examples.loan")
    procurement = importlib.import_module("examples.procurement")
    logger = logging.getLogger("blackboard")
    level = logger.level
    if not ctx.debug:  # the escalation the tour provokes is narrated, not a warning
        logger.setLevel(logging.ERROR)
    started = time.monotonic()
    try:
        run_async(ctx, lambda: tour(loan, _cases(loan, procurement), pause=0.0 if fast else 0.3))
    finally:  # (the demo may run inside another program: leave its logging as it was)
        logger.setLevel(level)
    click.echo(f"({time.monotonic() - started:.1f} s)")
