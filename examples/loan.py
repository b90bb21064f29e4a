"""Loan approval: sequential agents, a guardrail, a human gate and an audit rollback.

Document analysis extracts the application (with the offline model), risk scores it,
compliance decides. A tax id that fails validation sends the case to a clarification
agent instead of risk. An AML hit holds the decision at a human gate. An audit that
finds the extracted income inconsistent with the declared one rolls the board back to
the last compliant version and re-runs document analysis with the failure as feedback.

Run embedded:      python examples/loan.py [--model SPEC]
As processes:      see README ("Examples").
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Annotated, Any, Literal

from blackboard.agents import (
    Context,
    Handoff,
    Model,
    OfflineModel,
    Output,
    agent,
    model_from_command_line,
    when_changed,
)
from blackboard.supervisor import Deployment
from pydantic import BaseModel, Field

from blackboard import App, Audit, BoardStore, Gate, Key, Limits

TAX_ID = re.compile(r"^\d{2}-\d{7}$")
WATCHLIST = {"Ivan Launder"}


class LoanBoard(BaseModel):
    application: Annotated[dict[str, Any], Key("human")] = {}
    loan_amount: Annotated[float | None, Field(gt=0), Key("document_analysis")] = None
    collateral_value: Annotated[float | None, Field(ge=0), Key("document_analysis")] = None
    tax_id: Annotated[str | None, Key("document_analysis")] = None
    verified_income: Annotated[float | None, Field(ge=0), Key("document_analysis")] = None
    clarification: Annotated[str | None, Key("clarification")] = None
    credit_score: Annotated[int | None, Field(ge=300, le=850), Key("risk")] = None
    risk_rating: Annotated[Literal["low", "medium", "high"] | None, Key("risk")] = None
    debt_to_income: Annotated[float | None, Key("risk")] = None
    aml_flag: Annotated[bool | None, Key("compliance")] = None
    decision: Annotated[Literal["approve", "reject"] | None, Key("compliance")] = None


class Extraction(BaseModel):
    loan_amount: float
    collateral_value: float
    tax_id: str
    verified_income: float


def extractor(messages: Any) -> str:
    """The offline model's 'reading' of an application: deterministic, no network."""
    text = messages[-1]["content"]
    fields = dict(re.findall(r"(\w+)=([^;]+)", text))
    income = float(fields["income"])
    if "payslip_typo" in fields and "feedback:" not in text:
        income *= 100  # the model misreads a payslip the first time
    return Extraction(
        loan_amount=float(fields["amount"]),
        collateral_value=float(fields["collateral"]),
        tax_id=fields.get("corrected_tax_id", fields["tax_id"]),
        verified_income=income,
    ).model_dump_json()


model = OfflineModel(default=extractor, name="offline")


@agent("document_analysis", reads=("application",))
async def document_analysis(ctx: Context) -> Output:
    app = ctx.board.get("application") or {}
    prompt = ";".join(f"{k}={v}" for k, v in app.items())
    if ctx.payload.get("tax_id"):
        prompt += f";corrected_tax_id={ctx.payload['tax_id']}"
    if ctx.feedback:
        prompt += f";feedback: {ctx.feedback}"
    reply = await ctx.model.complete([{"role": "user", "content": prompt}], schema=Extraction)
    return Output(updates=reply.parsed.model_dump(), reason="extracted the application")


@agent(
    "clarification",
    reads=("tax_id", "application"),
    triggers=(when_changed("tax_id", condition=lambda b: not TAX_ID.match(b["tax_id"] or "")),),
)
async def clarification(ctx: Context) -> Output:
    on_file = ctx.board["application"].get("registry_tax_id", "")
    note = f"tax id {ctx.board['tax_id']!r} is invalid; the registry has {on_file!r}"
    return Output(
        updates={"clarification": note},
        handoff=Handoff(
            to="document_analysis",
            payload={"tax_id": on_file},
            reason="re-extract with the registry's tax id",
        ),
    )


@agent(
    "risk",
    reads=("loan_amount", "collateral_value", "verified_income", "tax_id"),
    triggers=(when_changed("tax_id", condition=lambda b: bool(TAX_ID.match(b["tax_id"] or ""))),),
    handoffs=("compliance",),
)
async def risk(ctx: Context) -> Output:
    b = ctx.board
    dti = round(b["loan_amount"] / 30 / max(b["verified_income"], 1), 3)
    score = 780 if b["collateral_value"] >= b["loan_amount"] else 640
    rating = "low" if dti < 0.4 and score > 700 else "medium" if dti < 0.6 else "high"
    return Output(
        updates={"credit_score": score, "risk_rating": rating, "debt_to_income": dti},
        handoff=Handoff(to="compliance", confidence=0.9, reason=f"rated {rating}"),
    )


@agent("compliance", reads=("risk_rating", "application"))
async def compliance(ctx: Context) -> Output:
    aml = ctx.board["application"].get("name") in WATCHLIST
    # A rejected approval comes back as feedback: the officer's word stands.
    decision = "reject" if ctx.board["risk_rating"] == "high" or ctx.feedback else "approve"
    return Output(updates={"aml_flag": aml, "decision": decision})


def income_consistent(b: Any) -> bool | str:
    declared = float((b.get("application") or {}).get("income", 0))
    verified = b.get("verified_income")
    if verified is not None and declared and not 0.5 <= verified / declared <= 2:
        return f"verified income {verified:,.0f} is inconsistent with declared {declared:,.0f}"
    return True


app = App(
    board=LoanBoard,
    agents=[document_analysis, clarification, risk, compliance],
    start=["document_analysis"],
    audits=[Audit("income_consistency", ("application", "verified_income"), income_consistent)],
    gates=[
        Gate(
            "aml_review",
            ("aml_flag",),
            lambda updates, board: (
                updates.get("decision") == "approve" and bool(board.get("aml_flag"))
            ),
            message="an AML hit: a human decides",
        )
    ],
    done=lambda b: b.get("decision") is not None,
    done_reads=["decision"],
    model=model,
    limits=Limits(max_activations=20, activation_timeout_s=30),
)

CASES: dict[str, dict[str, Any]] = {
    "clean": {
        "name": "Ada Lovelace",
        "amount": 250000,
        "collateral": 300000,
        "tax_id": "12-3456789",
        "income": 150000,
    },
    "bad-tax-id": {
        "name": "Alan Turing",
        "amount": 120000,
        "collateral": 90000,
        "tax_id": "12345",
        "registry_tax_id": "98-7654321",
        "income": 110000,
    },
    "aml-hit": {
        "name": "Ivan Launder",
        "amount": 90000,
        "collateral": 120000,
        "tax_id": "55-5555555",
        "income": 200000,
    },
    "income-slip": {
        "name": "Grace Hopper",
        "amount": 200000,
        "collateral": 250000,
        "tax_id": "11-1111111",
        "income": 130000,
        "payslip_typo": "yes",
    },
}


async def run_case(d: Deployment, name: str, answer: str = "approve") -> Any:
    """Run one case to its end; an AML hold is answered with ``answer``."""
    board = f"loan-{name}"
    await d.start(board, {"application": CASES[name]})
    info = await d.settle(board)
    if info.status == "awaiting_approval":
        print(f"  (held at the AML gate: human:officer decides: {answer})", flush=True)
        await d.command(board, answer, by="human:officer", note="AML review done")
        info = await d.settle(board)
    return info


async def timeline(store: BoardStore, started: float) -> None:
    """Print every commit of every board as it lands (the boards' event channels)."""
    pubsub = store.redis.pubsub()
    await pubsub.psubscribe(f"{store.settings.key_prefix}:*:events")
    try:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                e = json.loads(message["data"])
                print(
                    f"  {time.monotonic() - started:6.3f}s  {e['board']:<18} v{e['version']:<2} "
                    f"{e['kind']:<9} {e['author']:<18} {', '.join(e['keys'])}",
                    flush=True,
                )
    finally:
        await pubsub.aclose()


async def main(
    pause: float = 0.0, store: BoardStore | None = None, model: Model | None = None
) -> None:
    async with Deployment(app if model is None else app.with_model(model), store) as d:
        live = asyncio.create_task(timeline(d.store, time.monotonic()))
        for name in CASES:
            case = CASES[name]
            print(f"\n== {name}: {case['name']} asks for {case['amount']:,}", flush=True)
            info = await run_case(d, name)
            await asyncio.sleep(0.05)  # let the last events print before the summary
            decision = await d.store.read_key(info.board_id, "decision")
            print(f"== {name}: {info.status} at version {info.version}, decision {decision}")
            await asyncio.sleep(pause)
        live.cancel()


if __name__ == "__main__":
    description = __doc__.splitlines()[0] if __doc__ else None
    asyncio.run(main(model=model_from_command_line(description)))
