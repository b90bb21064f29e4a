"""examples/support.py: hub-and-spoke routing with a routing history, and the loop
breaker escalating a bounced ticket to a human lead. Both backends."""

from __future__ import annotations

import sys
from pathlib import Path

from bbtest import activations, incidents
from blackboard.supervisor import Deployment

from blackboard import BoardStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples import support


async def test_routed_to_the_right_team(store: BoardStore) -> None:
    async with Deployment(support.app, store) as d:
        await d.start("t1", {"ticket": support.TICKETS["password"]})
        info = await d.settle("t1")
    assert info.status == "done"
    state = (await store.read("t1")).data
    assert (state["category"], state["tried"]) == ("account", ["account"])
    assert state["account_answer"] == "account: resolved 'I forgot my password'"
    assert [(a["agent"], a["reason"]) for a in await activations(store, "t1")] == [
        ("triage", "start"),
        ("account", "handoff"),
    ]


async def test_bounced_ticket_trips_the_breaker_and_a_lead_resolves_it(store: BoardStore) -> None:
    async with Deployment(support.app, store) as d:
        await d.start("t2", {"ticket": support.TICKETS["bounced"]})
        info = await d.settle("t2")
        assert info.status == "escalated"
        [incident] = await incidents(store, "t2")
        assert incident["kind"] == "loop"
        assert "triage>billing repeated 2 times with no change" in incident["detail"]
        hops = [(a["agent"], a["reason"]) for a in await activations(store, "t2")]
        assert hops == [("triage", "start"), ("billing", "handoff"), ("triage", "handoff")]
        assert await store.read_key("t2", "tried") == ["billing"]
        await d.command("t2", "resume", by="human:lead")
        outcome = await d.command("t2", "set", by="human:lead", values={"resolution": "fixed"})
        assert outcome.status == "committed"
        info = await d.settle("t2")
    assert info.status == "done"
    assert (await store.history("t2"))[-1].author == "human"
