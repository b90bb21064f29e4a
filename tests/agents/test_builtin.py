"""The built-in summariser and the offline model."""

from __future__ import annotations

import pytest
from blackboard.agents import Context, OfflineModel, Summariser, condense, cost_of
from pydantic import BaseModel

from blackboard import SemanticError


def ctx(board: dict, key: str, model: object = None) -> Context:
    return Context(
        board_id="b",
        version=3,
        board=board,
        activation_id="a",
        trace_id="t",
        payload={"key": key},
        model=model,
    )


def test_condense_keeps_recent_and_facts_verbatim() -> None:
    items = [
        "Called the bank. It was closed.",
        "FACT: income 96,000",
        "Emailed HR about it.",
        "Got the payslips.",
        "Checked the tax id.",
    ]
    assert condense(items, keep_recent=2) == [
        "FACT: income 96,000",
        "[summary of 2 earlier entries] Called the bank.; Emailed HR about it.",
        "Got the payslips.",
        "Checked the tax id.",
    ]
    assert condense(items[:2], keep_recent=2) == items[:2]


async def test_summariser_without_a_model() -> None:
    items = [f"Step {i}. Details follow here." for i in range(6)]
    out = await Summariser(keep_recent=1).run(ctx({"notes": items}, "notes"))
    assert out.updates["notes"] == [
        "[summary of 5 earlier entries] Step 0.; Step 1.; Step 2.; Step 3.; Step 4.",
        "Step 5. Details follow here.",
    ]
    text = "Intro.\n\nMiddle one. More.\n\nMiddle two.\n\nEnd."
    out = await Summariser().run(ctx({"t": text}, "t"))
    assert out.updates["t"] == "Intro.\n\n[summary] Middle one. Middle two.\n\nEnd."


async def test_summariser_with_a_model() -> None:
    model = OfflineModel(rules={"Step": "Five steps were taken."})
    items = [f"Step {i}." for i in range(5)]
    out = await Summariser(keep_recent=2).run(ctx({"n": items}, "n", model))
    assert out.updates["n"] == [
        "[summary of 3 earlier entries] Five steps were taken.",
        "Step 3.",
        "Step 4.",
    ]
    assert len(model.calls) == 1


async def test_summariser_refuses_what_it_cannot_condense() -> None:
    with pytest.raises(SemanticError, match="holds dict"):
        await Summariser().run(ctx({"d": {"a": 1}}, "d"))
    with pytest.raises(SemanticError, match="not on the board"):
        await Summariser().run(ctx({}, "d"))


class Verdict(BaseModel):
    approve: bool


async def test_offline_model_is_deterministic_and_counts_tokens() -> None:
    model = OfflineModel(rules={"loan": '{"approve": true}'}, name="gpt-4o-mini")
    messages = [{"role": "user", "content": "Should we approve this loan?"}]
    first = await model.complete(messages, schema=Verdict)
    second = await model.complete(messages, schema=Verdict)
    assert first == second
    assert first.parsed == Verdict(approve=True)
    assert (first.tokens_in, first.tokens_out) == (7, 5)
    assert first.cost == pytest.approx(cost_of("gpt-4o-mini", 7, 5))
    with pytest.raises(SemanticError, match="does not match Verdict"):
        await model.complete([{"role": "user", "content": "hello. there"}], schema=Verdict)


def test_rule_router() -> None:
    from blackboard.agents import Rule, RuleRouter

    router = RuleRouter(
        [
            Rule("billing", lambda b: b.get("topic") == "invoice", ("topic",)),
            Rule("technical", lambda b: b.get("topic") == "crash", ("topic",)),
            Rule("account", lambda b: True, ("topic",)),
        ]
    )
    assert router({"topic": "invoice"}, ["topic"]) == ["billing"]
    assert router({"topic": "other"}, ["topic"]) == ["account"]
    assert RuleRouter(router.rules, fan_out=True)({"topic": "crash"}, []) == [
        "technical",
        "account",
    ]
    assert router.reads == ["topic"]
