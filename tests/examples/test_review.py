"""examples/review.py: parallel reviewers with structured findings, a synthesiser that
deduplicates and resolves votes, a judge for disagreements."""

from __future__ import annotations

import sys
from pathlib import Path

from bbtest import activations
from blackboard.supervisor import Deployment

from blackboard import BoardStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples import review


async def test_unanimous_review_is_decided_by_the_synthesiser(store: BoardStore) -> None:
    async with Deployment(review.app, store) as d:
        await d.start("pr-1", {"diff": review.DIFFS["clean"]})
        info = await d.settle("pr-1")
    assert info.status == "done"
    state = (await store.read("pr-1")).data
    assert (state["decision"], state["ruling"]) == ("approve", None)
    agents = [(a["agent"], a["reason"]) for a in await activations(store, "pr-1")]
    assert sorted(agents[:3]) == [("logic", "start"), ("security", "start"), ("style", "start")]
    assert agents[3:] == [("synthesiser", "trigger")]  # one join, after all three
    assert "judge" not in [a for a, _ in agents]


async def test_disagreement_goes_to_the_judge(store: BoardStore) -> None:
    async with Deployment(review.app, store) as d:
        await d.start("pr-2", {"diff": review.DIFFS["disputed"]})
        info = await d.settle("pr-2")
    assert info.status == "done"
    state = (await store.read("pr-2")).data
    assert state["decision"] is None
    assert state["ruling"].startswith("block (1 major finding(s); logic: approve, security: block")
    messages = [(f["line"], f["message"]) for f in state["findings"]]
    assert messages.count((2, "secret in code")) == 1  # found by two reviewers, kept once
    assert (3, "eval on input") in messages
    assert state["security"]["findings"][0]["severity"] in ("minor", "major")
    judge = [a for a in await activations(store, "pr-2") if a["agent"] == "judge"]
    assert judge[0]["reason"] == "handoff"
    assert judge[0]["payload"]["votes"] == {
        "security": "block",
        "style": "approve",
        "logic": "approve",
    }
