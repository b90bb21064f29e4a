"""A board stopped for a person, as the typed error a caller catches: the recorded
reason (``"<kind>: <detail>"``, as route.lua writes it) picks the class."""

from __future__ import annotations

import pytest

from blackboard import BlackboardError, BudgetExceeded, Escalated, LoopDetected
from blackboard.errors import escalation


@pytest.mark.parametrize(
    ("reason", "cls", "kind", "detail"),
    [
        (
            "loop: handoff b>a repeated 3 times",
            LoopDetected,
            "loop",
            "handoff b>a repeated 3 times",
        ),
        (
            "budget: tokens used 15 > max_tokens 10",
            BudgetExceeded,
            "budget",
            "tokens used 15 > max_tokens 10",
        ),
        ("deadline: board deadline passed", BudgetExceeded, "deadline", "board deadline passed"),
        (
            "rewrites: agent a was rejected 3 times",
            Escalated,
            "rewrites",
            "agent a was rejected 3 times",
        ),
        ("timeout: a: timed out after 5 s", Escalated, "timeout", "a: timed out after 5 s"),
        ("", Escalated, "unknown", "no reason was recorded"),
    ],
)
def test_the_recorded_reason_picks_the_error(
    reason: str, cls: type[Escalated], kind: str, detail: str
) -> None:
    err = escalation("c1", reason)
    assert type(err) is cls
    assert isinstance(err, BlackboardError)
    assert (err.board_id, err.kind, err.detail) == ("c1", kind, detail)
    assert str(err).startswith(f"board 'c1' stopped for a person ({kind}: {detail}).")
    assert "`blackboard incidents c1`" in str(err)


def test_loop_and_budget_are_kinds_of_escalation() -> None:
    assert issubclass(LoopDetected, Escalated) and issubclass(BudgetExceeded, Escalated)
    assert not issubclass(LoopDetected, BudgetExceeded)
