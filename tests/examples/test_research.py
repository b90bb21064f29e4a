"""examples/research.py: parallel researchers, one timing out, a join with partial
results that records the failure, a critic's rewrite request, summarisation."""

from __future__ import annotations

import sys
from pathlib import Path

from bbtest import activations, incidents
from blackboard.supervisor import Deployment

from blackboard import BoardStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples import research


async def test_fan_out_partial_failure_critic_and_summary(store: BoardStore) -> None:
    async with Deployment(research.app, store) as d:
        await d.start("r")
        info = await d.settle("r")
    assert info.status == "done"
    acts = await activations(store, "r")
    starts = [a for a in acts if a["reason"] == "start"]
    assert sorted(a["agent"] for a in starts) == [
        f"research_{c}" for c in sorted(research.COMPETITORS)
    ]
    assert len({a["created_ms"] for a in starts}) == 1  # one fan-out, all at once
    [umbrella] = [a for a in starts if a["agent"] == "research_umbrella"]
    assert (umbrella["status"], umbrella["outcome"]) == ("failed", "timeout")
    report = await store.read_key("r", "report")
    assert "missing: research_umbrella (activation" in report  # the failure, recorded
    assert "globex: revenue 4.1B (2025 filing)" in report  # the rewritten section
    rewrite = [a for a in acts if a["agent"] == "research_globex" and a["reason"] == "handoff"]
    assert rewrite[0]["payload"] == {"feedback": "cite the filing and verify pricing"}
    assert await store.read_key("r", "review") == "approved"
    history = await store.history("r")
    [summary] = [e for e in history if e.kind == "summary"]
    assert (summary.author, summary.keys) == ("summariser", ["transcript"])
    transcript = await store.read_key("r", "transcript")
    # The app has a model, so the summariser asked it for the condensed part.
    assert transcript[0] == "[summary of 3 earlier entries] revenue about 4B, several products"
    raw = (await store.read("r", at=summary.version - 1)).data["transcript"]
    assert len(raw) == 4 and "Raw notes" in raw[0]  # the raw content stays in the log
    assert await incidents(store, "r") == []  # a partial join is not an escalation
