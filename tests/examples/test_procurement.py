"""examples/procurement.py: two agents in a loop, a budget policy on a key the
negotiator does not own, rejection and rewrite, the circuit breaker, a rollback."""

from __future__ import annotations

import sys
from pathlib import Path

from bbtest import activations, incidents, outcomes
from blackboard.supervisor import Deployment

from blackboard import BoardStore
from blackboard.records import Submission

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples import procurement


async def test_deal_over_budget_is_rejected_then_rewritten(store: BoardStore) -> None:
    async with Deployment(procurement.app, store) as d:
        await d.start("deal")
        info = await d.settle("deal")
        assert info.status == "done"
        assert await store.read_key("deal", "agreed_price") == 92.5
        rejected = [o for o in await outcomes(store, "deal") if o["status"] == "rejected"]
        assert [o["reason"] for o in rejected] == ["policy"]
        assert "agreed price is above max_budget" in rejected[0]["message"]
        rewrite = [a for a in await activations(store, "deal") if a["reason"] == "rewrite"]
        assert rewrite[0]["agent"] == "negotiation"
        authors = [e.author for e in await store.history("deal")]
        assert authors == ["sourcing", "negotiation"] * 4  # the exchange, then the deal
        assert max(e.version for e in await store.history("deal")) == 8
        # The negotiator cannot touch the budget it is bound by.
        outcome = await d.supervisor.handle(
            Submission(
                kind="proposal",
                board_id="deal",
                author="negotiation",
                base=8,
                patch=[{"op": "add", "path": "/max_budget", "value": 1000.0}],
            )
        )
        assert (outcome.status, outcome.reason) == ("rejected", "ownership")
        back = await d.command("deal", "rollback", by="human:buyer", before_agent="negotiation")
        assert back.status == "committed"
        assert back.version is not None
        undone = (await store.read("deal", at=back.version)).data
        assert undone == (await store.read("deal", at=7)).data
        assert undone["agreed_price"] is None
        # The board was done: it is reopened, and the negotiator redoes its work.
        info = await d.settle("deal")
    assert info.status == "done"
    last = (await store.history("deal"))[-1]
    assert (last.author, last.version) == ("negotiation", back.version + 1)


async def test_repeated_exchange_trips_the_breaker(store: BoardStore) -> None:
    async with Deployment(procurement.stalemate, store) as d:
        await d.start("stuck")
        info = await d.settle("stuck")
    assert info.status == "escalated"
    [incident] = await incidents(store, "stuck")
    assert incident["kind"] == "loop"
    assert "repeated 3 times with no change to the board" in incident["detail"]
    assert [e.keys for e in await store.history("stuck")][2:] == [[], [], [], []]
