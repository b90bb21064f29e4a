"""The five examples as the soak runs them (tests/soak), each under its own key prefix.

Two changes, both to keep what the examples mean under kill -9 on a loaded machine:
the loan audit is slow (0.3 s, as a semantic check would be), so supervisors are killed
in the middle of audits too; and research's activation timeout is 10 s instead of
0.5 s, with the umbrella researcher's delay 12 s instead of 5 s: the umbrella branch
still times out and the aggregator still joins the partial results (what the example
shows), while an activation taken over from a killed process (about 5 s) can still make
its deadline. Nothing else differs from examples/*.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

from blackboard.agents import Summariser

from blackboard import App, Audit, Limits
from examples import loan, procurement, research, review, support


async def _slow_income_check(board: Mapping[str, Any]) -> bool | str:
    await asyncio.sleep(0.3)
    return loan.income_consistent(board)


loan_app = dataclasses.replace(
    loan.app,
    audits=[Audit("income_consistency", ("application", "verified_income"), _slow_income_check)],
)

research_app = dataclasses.replace(
    research.app,
    agents=[
        research.researcher("acme"),
        research.researcher("globex"),
        research.researcher("initech"),
        research.researcher("umbrella", delay=12.0),
        research.aggregator,
        research.critic,
        Summariser(keep_recent=1),
    ],
    limits=Limits(activation_timeout_s=10, max_activations=30),
)

APPS: dict[str, App] = {
    "loan": loan_app,
    "procurement": procurement.app,
    "research": research_app,
    "review": review.app,
    "support": support.app,
}
"""Example name -> the app its processes run (``--app soakapps:APPS_<name>``)."""

APPS_loan = loan_app
APPS_procurement = procurement.app
APPS_research = research_app
APPS_review = review.app
APPS_support = support.app

INPUTS: dict[str, dict[str, dict[str, Any] | None]] = {
    "loan": {case: {"application": data} for case, data in loan.CASES.items()},
    "procurement": {"deal": None},
    "research": {"competitors": None},
    "review": {name: {"diff": diff} for name, diff in review.DIFFS.items()},
    "support": {name: {"ticket": ticket} for name, ticket in support.TICKETS.items()},
}
"""Example name -> case -> the board's initial values."""


def intended(example: str, case: str, status: str, reason: str) -> bool:
    """Whether a settled board ended as its example intends: done; or held at the loan's
    AML gate; or the bounced support ticket escalated by the loop breaker."""
    if status == "done":
        return True
    if example == "loan" and case == "aml-hit":
        return status == "awaiting_approval"
    if example == "support" and case == "bounced":
        return status == "escalated" and reason.startswith("loop")
    return False
