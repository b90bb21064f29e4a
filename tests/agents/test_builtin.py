"""The built-in summariser and the offline model."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from blackboard.agents import Context, OfflineModel, Summariser, condense, cost_of
from blackboard.agents.builtin import RATIO
from blackboard.agents.models import Completion, Metered
from blackboard.agents.pricing import Prices
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from blackboard import SemanticError, codec


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


def size(value: object) -> int:
    return codec.utf8_len(codec.dumps(value))


NOTES = [
    "Called the bank about the transfer. It was closed until Monday.",
    "FACT: income 96,000",
    "Emailed HR about the missing payslip for March, no answer yet.",
    "Got the payslips for January and February from the applicant.",
    "Looked up the employer in the registry; it is a going concern.",
    "Asked the applicant for a bank statement covering six months.",
    "Checked the tax id.",
    "Got the bank statement.",
]


def test_condense_keeps_recent_and_facts_verbatim_and_halves_the_rest() -> None:
    out = condense(NOTES, keep_recent=2)
    assert out[0] == "FACT: income 96,000"
    assert out[1].startswith("[summary of 5 earlier entries] Called the bank")
    assert out[2:] == ["Checked the tax id.", "Got the bank statement."]
    assert size(out) <= RATIO * size(NOTES)
    assert condense(NOTES[:2], keep_recent=2) == NOTES[:2]


def test_condense_hardly_condensed_short_notes_before() -> None:
    """Issue 20 item 5: notes under 60 characters came out 1-4% smaller (or larger)."""
    items = [f"note {n}: checked source {n}, found nothing new." for n in range(12)]
    out = condense(items, keep_recent=3)
    assert size(out) <= size(items) // 2
    assert out[0].startswith("[summary of 9 earlier entries] note 0")
    assert out[1:] == items[-3:]


def test_condense_counts_what_earlier_summaries_condensed() -> None:
    items = [f"note {n}: checked source {n}, found nothing new." for n in range(21)]
    once = condense(items[:12], keep_recent=3)
    grown = [*once, *items[12:]]
    again = condense(grown, keep_recent=3)
    assert again[0].startswith("[summary of 18 earlier entries] note 0")  # 9, and 9 more
    assert again[1:] == items[-3:]
    assert size(again) <= size(grown) // 2


_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=160)
_NOTE = st.one_of(_TEXT, _TEXT.map(lambda t: "FACT: " + t))


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(_NOTE, max_size=60),
    keep_recent=st.integers(0, 6),
    threshold=st.none() | st.integers(64, 4000),
)
def test_condense_reaches_its_ratio(
    items: list[str], keep_recent: int, threshold: int | None
) -> None:
    """At most half the input's JSON bytes (or of the key's threshold, if smaller),
    unless the lines kept verbatim (fact lines, the newest items, the summary line's
    count) take more than that by themselves; never larger than the input; facts and
    the newest items verbatim and in order."""
    out = condense(items, keep_recent=keep_recent, threshold=threshold)
    assert size(out) <= size(items)
    if len(items) <= keep_recent:
        assert out == items
        return
    older = items[: len(items) - keep_recent]
    recent = items[len(items) - keep_recent :]
    facts = [i for i in older if re.match(r"^\s*(FACT|DECISION|ID)\s*:", i, re.I)]
    if out == items:  # nothing would be smaller: left as it was
        floor = size([*facts, f"[summary of {len(older) - len(facts)} earlier entries]", *recent])
        assert len(facts) == len(older) or floor >= size(items)
        return
    assert out[: len(facts)] == facts
    assert out[len(out) - len(recent) :] == recent
    assert len(out) == len(facts) + 1 + len(recent)
    header = f"[summary of {len(older) - len(facts)} earlier entries]"
    assert out[len(facts)].startswith(header)
    target = RATIO * min(size(items), threshold or size(items))
    assert size(out) <= max(target, size([*facts, header, *recent]))


def test_condense_leaves_room_under_the_threshold() -> None:
    """A key far over its threshold (the writer went on while a summary was made) is
    condensed to half its threshold, not to half of itself."""
    items = [f"note {n}: checked source {n}, found nothing new." for n in range(40)]
    out = condense(items, keep_recent=3, threshold=400)
    assert size(out) <= 200 < size(condense(items, keep_recent=3))
    assert out[0].startswith("[summary of 37 earlier entries]") and out[1:] == items[-3:]


async def test_summariser_without_a_model() -> None:
    out = await Summariser(keep_recent=1).run(ctx({"notes": NOTES}, "notes"))
    notes = out.updates["notes"]
    assert notes[0] == "FACT: income 96,000"
    assert notes[1].startswith("[summary of 6 earlier entries] Called the bank")
    assert notes[2] == NOTES[-1]
    assert size(notes) <= RATIO * size(NOTES)
    text = "Intro.\n\nMiddle one. More.\n\nMiddle two.\n\nEnd."
    out = await Summariser().run(ctx({"t": text}, "t"))
    assert out.updates["t"] == "Intro.\n\n[summary] Middle one. Middle two.\n\nEnd."


async def test_summariser_with_the_apps_model() -> None:
    model = OfflineModel(rules={"Called the bank": "The bank, HR and the registry were asked."})
    out = await Summariser(keep_recent=2).run(ctx({"n": NOTES}, "n", model))
    assert out.updates["n"] == [
        "FACT: income 96,000",
        "[summary of 5 earlier entries] The bank, HR and the registry were asked.",
        *NOTES[-2:],
    ]
    [call] = model.calls
    assert "at most" in call[0]["content"]  # the model is told its budget


async def test_summariser_with_a_model_of_its_own_is_metered_at_the_apps_prices() -> None:
    """``Summariser(model=...)`` is the agent's own model: the runtime hands it over
    metered at the app's prices (before, the summariser metered it again at the default
    prices, so a model only the app prices cost $0). A digest longer than the ratio
    allows is cut."""
    own = OfflineModel(default=lambda m: "Long. " * 200, name="my-local")
    summariser = Summariser(keep_recent=2, model=own)
    assert summariser.model is own  # what the runtime meters for this agent
    meter = Metered(own, Prices({"my-local": (1000.0, 1000.0)}))
    out = await summariser.run(ctx({"n": NOTES}, "n", meter))
    notes = out.updates["n"]
    assert notes[1].startswith("[summary of 5 earlier entries] Long. Long.")
    assert notes[1].endswith("…") and size(notes) <= RATIO * size(NOTES)
    assert len(own.calls) == 1
    assert meter.tokens_in > 0 and meter.tokens_out > 0
    assert meter.cost == (meter.tokens_in + meter.tokens_out) * 1000.0 / 1e6
    assert (out.tokens_in, out.tokens_out, out.cost) == (0, 0, 0.0)  # counted once


async def test_a_subclass_writes_the_digest() -> None:
    class Counting(Summariser):
        async def digest(self, ctx: Context, texts: Sequence[str], budget: int) -> str:
            return f"{len(texts)} notes about the loan (budget {budget})"

    out = await Counting(keep_recent=2).run(ctx({"n": NOTES}, "n"))
    assert re.fullmatch(
        r"\[summary of 5 earlier entries\] 5 notes about the loan \(budget \d+\)",
        out.updates["n"][1],
    )


class _Fixed:
    """A fake model: the same answer, whatever it is asked."""

    name = "fake"

    def __init__(self, text: str) -> None:
        self.text = text

    async def complete(self, messages: object, *, schema: object = None) -> Completion:
        return Completion(self.text, 1, 1, self.name)


async def test_summariser_takes_any_model_of_the_protocol() -> None:
    summariser = Summariser(keep_recent=2, model=_Fixed("All checks done."))
    # the runtime hands an agent its own model, metered (runtime._context)
    out = await summariser.run(ctx({"n": NOTES}, "n", Metered(summariser.model)))
    assert out.updates["n"][1] == "[summary of 5 earlier entries] All checks done."


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
