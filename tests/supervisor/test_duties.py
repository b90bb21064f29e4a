"""Each supervisor duty, embedded (supervisor + workers as asyncio tasks), on both
backends. Assertions read the board, its log and what the supervisor recorded."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from bbtest import Case, activations, build_app, incidents, outcomes
from blackboard.agents import Context, Handoff, Output, agent, when_all, when_changed
from blackboard.supervisor import Deployment, Supervisor
from blackboard.supervisor.control import Wanted
from blackboard.supervisor.routing import Routing
from pydantic import BaseModel

from blackboard import App, Audit, BoardStore, ConfigError, Gate, Key, Limits, Policy, Proposal
from blackboard.keys import GlobalKeys
from blackboard.records import Submission


async def run(app: App, store: BoardStore, board: str = "c1", **initial: Any) -> Any:
    async with Deployment(app, store) as d:
        await d.start(board, initial or None)
        return await d.settle(board)


def cap(limit: float) -> Policy:
    return Policy(
        "amount_cap",
        ("amount", "max_amount"),
        lambda b: b.get("amount") is None or b["amount"] <= b["max_amount"],
        message="amount exceeds max_amount",
    )


async def test_policy_rejection_becomes_a_rewrite_with_feedback(store: BoardStore) -> None:
    app = build_app(policies=[cap(45_000)])
    info = await run(app, store, max_amount=45_000.0)
    assert info.status == "done"
    state = await store.read("c1")
    assert state.data["amount"] == 40_000.0  # the rewrite fixed it
    rejected = [o for o in await outcomes(store, "c1") if o["status"] == "rejected"]
    assert len(rejected) == 1 and rejected[0]["reason"] == "policy"
    assert "amount exceeds max_amount" in rejected[0]["message"]
    rewrite = [a for a in await activations(store, "c1") if a["reason"] == "rewrite"]
    assert rewrite[0]["agent"] == "intake"
    assert "amount exceeds max_amount" in rewrite[0]["feedback"]
    assert [e.author for e in await store.history("c1")][0] == "intake"


async def test_repeated_rejection_escalates(store: BoardStore) -> None:
    app = build_app(policies=[cap(10)], limits=Limits(max_rewrites=2, loop_threshold=10))
    info = await run(app, store, max_amount=10.0)
    assert info.status == "escalated"
    kinds = [i["kind"] for i in await incidents(store, "c1")]
    assert kinds == ["rewrites"]
    assert await store.history("c1") == []  # nothing invalid ever got in
    rejected = [o for o in await outcomes(store, "c1") if o["status"] == "rejected"]
    assert len(rejected) == 3  # first try + max_rewrites rewrites
    escalated = await store.redis.zrange(GlobalKeys(store.settings.key_prefix).escalations, 0, -1)
    assert escalated == ["c1"]


class PingPong(BaseModel):
    note: Annotated[str, Key("ping")] = ""
    other: Annotated[str, Key("pong")] = ""


async def test_handoff_loop_trips_the_circuit_breaker(store: BoardStore) -> None:
    @agent("ping", handoffs=["pong"])
    async def ping(ctx: Context) -> Output:
        return Output(handoff=Handoff(to="pong", reason="your turn"))

    @agent("pong")
    async def pong(ctx: Context) -> Output:
        return Output(handoff=Handoff(to="ping", reason="no, yours"))

    app = App(board=PingPong, agents=[ping, pong], start=["ping"], limits=Limits(loop_threshold=3))
    info = await run(app, store)
    assert info.status == "escalated"
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "loop"
    assert "repeated 3 times with no change to the board" in incident["detail"]
    assert incident["detail"].startswith("handoff ping>pong")
    assert len(await activations(store, "c1")) == 5  # ping pong ping pong ping, then stop


async def test_changing_board_is_not_a_loop(store: BoardStore) -> None:
    @agent("ping")
    async def ping(ctx: Context) -> Output:
        n = len(ctx.board["note"])
        return Output(
            updates={"note": ctx.board["note"] + "x"}, handoff=Handoff(to="pong") if n < 6 else None
        )

    @agent("pong")
    async def pong(ctx: Context) -> Output:
        return Output(handoff=Handoff(to="ping"))

    app = App(board=PingPong, agents=[ping, pong], start=["ping"])
    info = await run(app, store)
    assert info.status == "active"  # settled: nothing left to do
    assert await store.read_key("c1", "note") == "x" * 7
    assert await incidents(store, "c1") == []


async def test_unknown_or_forbidden_handoff_is_rejected(store: BoardStore) -> None:
    @agent("ping", handoffs=["pong"])
    async def ping(ctx: Context) -> Output:
        target = "nobody" if not ctx.feedback else "ping"
        return Output(updates={"note": "hi"}, handoff=Handoff(to=target))

    @agent("pong")
    async def pong(ctx: Context) -> Output:
        return None

    app = App(board=PingPong, agents=[ping, pong], start=["ping"], limits=Limits(max_rewrites=1))
    info = await run(app, store)
    assert info.status == "escalated"
    messages = [o["message"] for o in await outcomes(store, "c1") if o["status"] == "rejected"]
    assert any("handoff to unknown agent 'nobody'" in m for m in messages)
    assert any("may hand off only to pong, not 'ping'" in m for m in messages)
    assert await store.history("c1") == []


def big_loan_gate() -> Gate:
    return Gate(
        "big_loan",
        ("amount",),
        lambda updates, board: "decision" in updates and (board.get("amount") or 0) > 10_000,
        message="decision on a big loan",
    )


@pytest.mark.parametrize("approve", [True, False])
async def test_gate_holds_until_a_human_decides(store: BoardStore, approve: bool) -> None:
    app = build_app(gates=[big_loan_gate()])
    async with Deployment(app, store) as d:
        await d.start("c1")
        info = await d.settle("c1")
        assert info.status == "awaiting_approval"
        assert await store.read_key("c1", "decision") is None  # held, not committed
        held = await store.redis.hkeys(store.keys("c1").held)
        assert len(held) == 1
        if approve:
            outcome = await d.command("c1", "approve", by="human:alice", note="checked")
        else:
            outcome = await d.command("c1", "reject", by="human:alice", note="too big")
        assert outcome.status == "committed", outcome
        info = await d.settle("c1")
    if approve:
        assert info.status == "done"
        last = (await store.history("c1"))[-1]
        assert (last.kind, last.author, last.keys) == ("approval", "human:alice", ["decision"])
        assert "checked" in last.reason
    else:
        # The rejection went back to compliance as a rewrite; it proposed again and was
        # held again: the board waits for a human once more.
        assert info.status == "awaiting_approval"
        rewrites = [a for a in await activations(store, "c1") if a["reason"] == "rewrite"]
        assert rewrites[0]["agent"] == "compliance"
        assert "too big" in rewrites[0]["feedback"]
        assert await store.read_key("c1", "decision") is None


async def test_failed_audit_rolls_back_and_asks_for_a_rewrite(store: BoardStore) -> None:
    def consistent(b: Any) -> bool | str:
        if b.get("income") is not None and b["income"] > 1_000_000:
            return "income inconsistent with the payslips"
        return True

    @agent("intake")
    async def intake(ctx: Context) -> Output:
        income = 95_000.0 if ctx.feedback else 9_500_000.0  # a slip, fixed on rewrite
        return Output(updates={"amount": 50_000.0, "income": income})

    base = build_app()
    app = build_app(
        agents=[intake, *[a for a in base.agents if a.name != "intake"]],
        audits=[Audit("income_check", ("income",), consistent)],
    )
    info = await run(app, store)
    assert info.status == "done"
    history = [(e.version, e.kind, e.author) for e in await store.history("c1")]
    assert history[:3] == [
        (1, "write", "intake"),
        (2, "rollback", "supervisor"),
        (3, "write", "intake"),
    ]
    assert (await store.read("c1", at=2)).data == (await store.read("c1", at=0)).data
    assert await store.read_key("c1", "income") == 95_000.0
    assert [i["kind"] for i in await incidents(store, "c1")] == ["rollback"]
    assert info.compliant == info.version


async def test_flag_takes_back_the_newest_write_and_reactivates_its_author(
    store: BoardStore,
) -> None:
    app = build_app(done=None, done_reads=[])
    async with Deployment(app, store) as d:
        await d.start("c1")
        await d.settle("c1")
        assert await store.version("c1") == 3  # intake, risk, compliance
        outcome = await d.command("c1", "flag", by="human:bob", reason="decision looks wrong")
        assert outcome.status == "committed"
        await d.settle("c1")
    history = await store.history("c1")
    assert (history[3].kind, history[3].author) == ("rollback", "human:bob")
    assert "decision looks wrong" in history[3].reason
    assert (await store.read("c1", at=4)).data == (await store.read("c1", at=2)).data
    rewrites = [a for a in await activations(store, "c1") if a["reason"] == "rewrite"]
    assert rewrites[0]["agent"] == "compliance"
    assert "decision looks wrong" in rewrites[0]["feedback"]
    assert history[4].author == "compliance"  # it redid its work after the rollback


async def test_operator_rollback_before_an_agent(store: BoardStore) -> None:
    app = build_app()
    async with Deployment(app, store) as d:
        await d.start("c1")
        await d.settle("c1")
        outcome = await d.command("c1", "rollback", by="human:carol", before_agent="risk")
    assert outcome.status == "committed"
    assert (await store.read("c1", at=outcome.version)).data == (await store.read("c1", at=1)).data
    rollback = (await store.history("c1"))[outcome.version - 1]
    assert (rollback.kind, rollback.author, rollback.outcome) == (
        "rollback",
        "human:carol",
        "restored:1",
    )


async def test_summarisation_replaces_verbose_content_once(store: BoardStore) -> None:
    @agent("intake")
    async def intake(ctx: Context) -> Output:
        lines = [f"page {i}: " + "lorem ipsum " * 5 for i in range(8)]
        return Output(updates={"amount": 5.0, "income": 10.0, "log": lines})

    base = build_app()
    app = build_app(agents=[intake, *[a for a in base.agents if a.name != "intake"]])
    info = await run(app, store)
    assert info.status == "done"
    summary = [e for e in await store.history("c1") if e.kind == "summary"]
    assert len(summary) == 1 and summary[0].author == "summariser"
    log = await store.read_key("c1", "log")
    assert log[0].startswith("[summary of 6 earlier entries] page 0: lorem")
    assert log[1:] == [f"page {i}: " + "lorem ipsum " * 5 for i in (6, 7)]  # recent: verbatim
    raw = (await store.read("c1", at=summary[0].version - 1)).data["log"]
    assert len(raw) == 8  # the raw content stays retrievable from the log
    assert len([a for a in await activations(store, "c1") if a["reason"] == "summarise"]) == 1


async def test_activation_budget(store: BoardStore) -> None:
    app = build_app(limits=Limits(max_activations=2))
    info = await run(app, store)
    assert info.status == "escalated"
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "budget" and "max_activations 2" in incident["detail"]


async def test_token_budget(store: BoardStore) -> None:
    app = build_app(limits=Limits(max_tokens=10))
    info = await run(app, store)
    assert info.status == "escalated"
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "budget" and "tokens used 15 > max_tokens 10" in incident["detail"]


@pytest.mark.parametrize("max_cost", [0.005, 1e-05])
async def test_cost_budget(store: BoardStore, max_cost: float) -> None:
    """A fractional budget, in either of the forms Python writes floats in, survives the
    trip to the script and back (the intake agent reports a cost of 0.01)."""
    app = build_app(limits=Limits(max_cost=max_cost))
    info = await run(app, store)
    assert info.status == "escalated"
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "budget"
    assert f"cost 0.01 > max_cost {max_cost}" in incident["detail"]


async def test_activation_timeout_escalates(store: BoardStore) -> None:
    @agent("intake")
    async def slow(ctx: Context) -> Output:
        await asyncio.sleep(5)
        return Output()

    base = build_app()
    app = build_app(
        agents=[slow, *[a for a in base.agents if a.name != "intake"]],
        limits=Limits(activation_timeout_s=0.2),
    )
    info = await run(app, store)
    assert info.status == "escalated"
    kinds = [i["kind"] for i in await incidents(store, "c1")]
    assert kinds == ["timeout"]
    assert "timed out" in (await incidents(store, "c1"))[0]["detail"]


class Research(BaseModel):
    a: Annotated[str, Key("ra")] = ""
    b: Annotated[str, Key("rb")] = ""
    c: Annotated[str, Key("rc")] = ""
    report: Annotated[str, Key("aggregator")] = ""


async def test_fan_out_completes_with_partial_results(store: BoardStore) -> None:
    def researcher(name: str, key: str, delay: float) -> Any:
        @agent(name)
        async def run_(ctx: Context) -> Output:
            await asyncio.sleep(delay)
            return Output(updates={key: f"{key} found"})

        return run_

    @agent("aggregator", reads=("a", "b", "c"), triggers=(when_all("a", "b", "c", partial=True),))
    async def aggregator(ctx: Context) -> Output:
        found = [v for v in (ctx.board[k] for k in "abc") if v]
        missing = ", ".join(sorted(ctx.failed))
        return Output(updates={"report": f"{len(found)} of 3; failed: {missing}"})

    app = App(
        board=Research,
        agents=[
            researcher("ra", "a", 0),
            researcher("rb", "b", 0),
            researcher("rc", "c", 5),
            aggregator,
        ],
        start=["ra", "rb", "rc"],
        done=lambda b: bool(b.get("report")),
        done_reads=["report"],
        limits=Limits(activation_timeout_s=0.3),
    )
    info = await run(app, store)
    assert info.status == "done"
    assert await store.read_key("c1", "report") == "2 of 3; failed: rc"


async def test_board_deadline(store: BoardStore) -> None:
    @agent("intake")
    async def slow(ctx: Context) -> Output:
        await asyncio.sleep(5)
        return Output()

    base = build_app()
    app = build_app(
        agents=[slow, *[a for a in base.agents if a.name != "intake"]],
        limits=Limits(deadline_s=0.2, activation_timeout_s=30),
    )
    info = await run(app, store)
    assert info.status == "escalated"
    # The activation's deadline is the board's, so the agent's own timeout and the
    # board-deadline check fire together; either one escalates it as a deadline, and
    # only one records.
    kinds = [i["kind"] for i in await incidents(store, "c1")]
    assert kinds == ["deadline"]
    act = (await activations(store, "c1"))[0]
    assert act["deadline_ms"] - act["created_ms"] <= 200  # the board deadline propagated


async def test_pause_holds_activations_and_resume_dispatches_them(store: BoardStore) -> None:
    app = build_app()
    async with Deployment(app, store) as d:
        await store.create("c1", app.schema)  # created paused, before any activation
        await d.command("c1", "pause", by="human:dan")
        await d.supervisor.follow_up.route(
            "c1",
            Routing(routing_id="s", version=0),
            [Wanted("intake", "start")],
            parent="s",
            trace_id="t",
        )
        info = await d.settle("c1")
        assert info.status == "paused" and info.version == 0
        assert await store.redis.hlen(store.keys("c1").outbox) == 1
        await d.command("c1", "resume", by="human:dan")
        info = await d.settle("c1")
    assert info.status == "done"


async def test_a_different_declaration_is_refused(store: BoardStore) -> None:
    await Supervisor(build_app(), store).publish()
    other = build_app(limits=Limits(max_activations=7))
    with pytest.raises(ConfigError, match="another version of the app is deployed"):
        await Supervisor(other, store).publish()
    await Supervisor(other, store).publish(replace=True)


async def test_misdeclarations_fail_at_build() -> None:
    @agent("intake", owns=("score",))
    async def bad(ctx: Context) -> Output:
        return Output()

    with pytest.raises(ConfigError, match="gives that key to 'risk'"):
        build_app(agents=[bad, *[a for a in build_app().agents if a.name != "intake"]])
    with pytest.raises(ConfigError, match="not an agent of the app"):
        App(board=Case, agents=[])
    with pytest.raises(ConfigError, match="watches 'nope'"):

        @agent("risk", triggers=(when_changed("nope"),))
        async def risk(ctx: Context) -> Output:
            return Output()

        build_app(agents=[risk, *[a for a in build_app().agents if a.name != "risk"]])


async def test_router_adds_activations(store: BoardStore) -> None:
    routed: list[list[str]] = []

    def router(board: Any, changed: Any) -> list[str]:
        routed.append(sorted(changed))
        return ["compliance"] if board.get("score") and board.get("decision") is None else []

    @agent("risk")  # no handoff: the router sends the work on
    async def risk(ctx: Context) -> Output:
        return Output(updates={"score": 710})

    base = build_app()
    app = build_app(
        agents=[*[a for a in base.agents if a.name != "risk"], risk],
        start=["risk"],
        router=router,
        router_reads=["score", "decision"],
    )
    info = await run(app, store)
    assert info.status == "done"
    assert ["score"] in routed
    assert [(a["agent"], a["reason"]) for a in await activations(store, "c1")] == [
        ("risk", "start"),
        ("compliance", "router"),
    ]


async def test_policy_read_key_changed_concurrently_is_revalidated(store: BoardStore) -> None:
    """The commit races a change to a key a policy reads: the supervisor re-validates on
    fresh state (and here rejects), never commits against the stale value."""
    app = build_app(policies=[cap(0)])
    sup = Supervisor(app, store)
    await store.create("c1", app.schema, {"max_amount": 100_000.0})
    script = store.committer.script
    raced = False

    async def racing(keys: list[str], args: list[Any]) -> Any:
        nonlocal raced
        if not raced:  # a human lowers the cap between validation and commit
            raced = True
            await store.commit(
                "c1", Proposal.updates("human", 0, {"max_amount": 10_000.0}), kind="system"
            )
        return await script(keys=keys, args=args)

    store.committer.script = racing  # type: ignore[assignment]
    outcome = await sup.handle(
        Submission(
            kind="proposal",
            board_id="c1",
            author="intake",
            base=0,
            patch=[{"op": "add", "path": "/amount", "value": 50_000.0}],
        )
    )
    store.committer.script = script  # type: ignore[assignment]
    assert (outcome.status, outcome.reason) == ("rejected", "policy")
    assert await store.read_key("c1", "amount") is None
    assert await store.read_key("c1", "max_amount") == 10_000.0


async def test_gate_holds_survive_a_supervisor_restart(store: BoardStore) -> None:
    app = build_app(gates=[big_loan_gate()])
    async with Deployment(app, store) as d:
        await d.start("c1")
        assert (await d.settle("c1")).status == "awaiting_approval"
    async with Deployment(build_app(gates=[big_loan_gate()]), store) as again:  # new process
        outcome = await again.command("c1", "approve", by="human:eve", note="ok")
        assert outcome.status == "committed"
        info = await again.settle("c1")
    assert info.status == "done" and await store.read_key("c1", "decision") == "approve"


class Review(BaseModel):
    draft: Annotated[str, Key("writer")] = ""
    verdict: Annotated[str | None, Key("human")] = None
    final: Annotated[str, Key("publisher")] = ""


async def test_human_agent_waits_for_an_answer(store: BoardStore) -> None:
    from blackboard.agents import HumanAgent

    @agent("writer")
    async def writer(ctx: Context) -> Output:
        return Output(updates={"draft": "v1"}, handoff=Handoff(to="reviewer"))

    @agent("publisher", reads=("verdict",), triggers=(when_changed("verdict"),))
    async def publisher(ctx: Context) -> Output:
        return Output(updates={"final": f"published ({ctx.board['verdict']})"})

    reviewer = HumanAgent("reviewer", "Is the draft good to publish?", reads=("draft",))
    app = App(
        board=Review,
        agents=[writer, reviewer, publisher],
        start=["writer"],
        done=lambda b: bool(b.get("final")),
        done_reads=["final"],
    )
    async with Deployment(app, store) as d:
        await d.start("r1")
        info = await d.settle("r1")
        assert info.status == "awaiting_approval"
        [incident] = await incidents(store, "r1")
        assert incident["kind"] == "human_input"
        assert (
            "Is the draft good to publish?" in incident["detail"] and "'v1'" in incident["detail"]
        )
        bad = await d.command("r1", "set", by="human:ann", values={"draft": "mine"})
        assert (bad.status, bad.reason) == ("rejected", "ownership")  # humans write their keys
        outcome = await d.command("r1", "set", by="human:ann", values={"verdict": "yes"})
        assert outcome.status == "committed"
        info = await d.settle("r1")
    assert info.status == "done"
    assert await store.read_key("r1", "final") == "published (yes)"
    setter = [e for e in await store.history("r1") if e.author == "human"][0]
    assert setter.reason == "set by human:ann"
