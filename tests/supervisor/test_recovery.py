"""Regressions from review: crash windows, late reports, bad input. Both backends."""

from __future__ import annotations

from typing import Any

import pytest
from bbtest import activations, build_app, outcome_of
from blackboard.agents import Context, Output, agent
from blackboard.supervisor import Deployment, Supervisor

from blackboard import BoardStore, Limits, Policy
from blackboard.records import Submission


def cap() -> Policy:
    return Policy(
        "cap",
        ("amount", "max_amount"),
        lambda b: b.get("amount") is None or b["amount"] <= b["max_amount"],
    )


async def test_redelivery_after_commit_before_routing_still_routes(store: BoardStore) -> None:
    """Killed between the commit and its routing (general path): the redelivered
    proposal is a duplicate, and must still trigger what the commit changed."""
    app = build_app(policies=[cap()])
    sup = Supervisor(app, store)
    await store.create("c1", app.schema)
    sub = Submission(
        kind="proposal",
        board_id="c1",
        author="intake",
        base=0,
        proposal_id="p1",
        patch=[
            {"op": "add", "path": "/amount", "value": 5.0},
            {"op": "add", "path": "/income", "value": 90_000.0},
        ],
    )
    await sup.validator.decide("c1", sub.proposal())  # committed; then the "crash"
    outcome = await sup.handle(sub)
    assert (outcome.status, outcome.version, outcome.keys) == ("committed", 1, ["amount", "income"])
    assert [(a["agent"], a["reason"]) for a in await activations(store, "c1")] == [
        ("risk", "trigger")
    ]


async def test_approval_interrupted_before_release_completes_on_redelivery(
    store: BoardStore,
) -> None:
    from blackboard import Gate

    gate = Gate("big", ("amount",), lambda u, b: "decision" in u, message="check")
    app = build_app(gates=[gate])
    async with Deployment(app, store) as d:
        await d.start("c1")
        assert (await d.settle("c1")).status == "awaiting_approval"
        operator = d.supervisor.operator
        release = operator.release

        async def crash(*args: Any) -> None:
            raise ConnectionError("killed")

        operator.release = crash  # type: ignore[method-assign]
        command = Submission(
            kind="command", board_id="c1", author="human:a", command="approve", proposal_id="cmd1"
        )
        with pytest.raises(ConnectionError):
            await d.supervisor.handle(command)
        operator.release = release  # type: ignore[method-assign]
        outcome = await d.supervisor.handle(command)  # the redelivery
        assert outcome.status == "committed"
        info = await d.settle("c1")
    assert info.status == "done"
    assert [e.kind for e in await store.history("c1")].count("approval") == 1
    assert await store.redis.hlen(store.keys("c1").held) == 0


async def test_late_report_does_not_reopen_a_finished_board(store: BoardStore) -> None:
    app = build_app(limits=Limits(max_tokens=1_000))
    async with Deployment(app, store) as d:
        await d.start("c1")
        assert (await d.settle("c1")).status == "done"
        await d.supervisor.handle(
            Submission(
                kind="proposal", board_id="c1", author="risk", base=3, patch=[], tokens_in=5_000
            )
        )
    assert (await store.info("c1")).status == "done"


async def test_combined_path_respects_a_router_without_reads(store: BoardStore) -> None:
    routed = []

    def router(board: Any, changed: Any) -> list[str]:
        routed.append(list(changed))
        return ["compliance"] if "score" in changed else []

    @agent("risk")
    async def risk(ctx: Context) -> Output:
        return Output(updates={"score": 700})

    base = build_app()
    app = build_app(
        agents=[*[a for a in base.agents if a.name != "risk"], risk],
        start=["risk"],
        router=router,
        done=None,
        done_reads=[],
    )
    async with Deployment(app, store) as d:
        await d.start("c1")
        await d.settle("c1")
    assert ["score"] in routed
    assert ("compliance", "router") in [
        (a["agent"], a["reason"]) for a in await activations(store, "c1")
    ]


async def test_malformed_input_is_a_recorded_rejection(store: BoardStore) -> None:
    app = build_app()
    sup = Supervisor(app, store)
    await store.create("c1", app.schema)
    bad_op = await sup.handle(
        Submission(
            kind="proposal",
            board_id="c1",
            author="intake",
            proposal_id="bad",
            patch=[{"op": ["add"], "path": "/amount"}],
        )
    )
    assert (bad_op.status, bad_op.reason) == ("rejected", "validation")
    assert (await outcome_of(store, "c1", "bad"))["status"] == "rejected"
    bad_args = await sup.handle(
        Submission(
            kind="command", board_id="c1", author="human:a", command="rollback", args={"to": "abc"}
        )
    )
    assert (bad_args.status, bad_args.reason) == ("rejected", "usage")
    assert "bad arguments for rollback" in bad_args.message


async def test_an_enormous_error_message_does_not_kill_the_worker(store: BoardStore) -> None:
    from blackboard import SemanticError

    @agent("intake")
    async def verbose(ctx: Context) -> Output:
        if not ctx.feedback:
            raise SemanticError("x" * 10_000)
        return Output(updates={"amount": 1.0, "income": 2.0})

    base = build_app()
    app = build_app(agents=[verbose, *[a for a in base.agents if a.name != "intake"]])
    async with Deployment(app, store) as d:
        await d.start("c1")
        info = await d.settle("c1")
    assert info.status == "done"
    rewrite = [a for a in await activations(store, "c1") if a["reason"] == "rewrite"][0]
    assert len(rewrite["feedback"]) <= 2000


async def test_tool_output_failing_its_schema_never_repeats_the_effect(store: BoardStore) -> None:
    from blackboard.agents.tools import Tool, ToolRegistry
    from pydantic import BaseModel

    from blackboard import FatalError

    class In(BaseModel):
        n: int

    class Out(BaseModel):
        ok: bool

    effects = []

    async def pay(x: In) -> dict[str, str]:
        effects.append(x.n)
        return {"ok": "not a bool"}

    registry = ToolRegistry([Tool("pay", pay, In, Out, side_effects=True)])
    for _ in range(2):
        tools = registry.bind(
            store.redis, store.settings.key_prefix, agent="a", board_id="b", activation_id="act"
        )
        with pytest.raises(FatalError):
            await tools.call("pay", {"n": 5})
    assert effects == [5]
