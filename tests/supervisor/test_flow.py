"""The supervisor end to end, embedded (supervisor + workers as tasks), on both backends."""

from __future__ import annotations

from blackboard.supervisor import Deployment

from blackboard import App, BoardStore


async def test_sequential_flow_to_done(app: App, store: BoardStore) -> None:
    async with Deployment(app, store) as d:
        await d.start("c1")
        info = await d.settle("c1")
    assert info.status == "done"
    state = await store.read("c1")
    assert state.data["decision"] == "approve"
    assert [(e.author, e.keys) for e in await store.history("c1")] == [
        ("intake", ["amount", "income"]),
        ("risk", ["score"]),
        ("compliance", ["decision"]),
    ]
    assert info.compliant == 3
