"""Two supervisor replicas (two Supervisor instances on one Redis) handling one board's
submissions at the same time: an audit rollback keeps what passed and re-activates what
it drops, and a join fires once (issue 20, items 1 and 2)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import pytest
from bbtest import activations, outcome_of
from blackboard.agents import Context, Output, agent, when_all
from blackboard.supervisor import Supervisor
from blackboard.supervisor.routing import Routing
from pydantic import BaseModel

from blackboard import App, Audit, BoardStore, Key, Limits
from blackboard.records import Activation, Submission


async def wait_for(check: Any, timeout: float = 5) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)
    return result


class Pair(BaseModel):
    a: Annotated[int | None, Key("pa")] = None
    b: Annotated[str | None, Key("pb")] = None


def pair_app(check: Any) -> App:
    @agent("pa")
    async def pa(ctx: Context) -> Output:
        return Output(updates={"a": 1})

    @agent("pb")
    async def pb(ctx: Context) -> Output:
        return Output(updates={"b": "good" if ctx.feedback else "bad"})

    return App(
        board=Pair,
        agents=[pa, pb],
        start=["pa", "pb"],
        audits=[Audit("b_ok", ("a", "b"), check)],
        done=lambda b: b.get("a") is not None and b.get("b") == "good",
        done_reads=["a", "b"],
        limits=Limits(activation_timeout_s=30),
    )


async def replicas(app: App, store: BoardStore) -> tuple[Supervisor, Supervisor]:
    """Two replicas, each with a store of its own (as in two processes)."""
    first = Supervisor(app, BoardStore(store.redis), name="r1")
    second = Supervisor(app, BoardStore(store.redis), name="r2")
    await first.publish()
    return first, second


async def open_activation(store: BoardStore, board: str, agent_name: str) -> dict[str, Any]:
    acts = [
        a
        for a in await activations(store, board)
        if a["agent"] == agent_name and a["status"] == "queued"
    ]
    open_ids = set(await store.redis.zrange(store.keys(board).open, 0, -1))
    [act] = [a for a in acts if a["activation_id"] in open_ids]
    return act


def proposal(act: dict[str, Any], pid: str, updates: dict[str, Any], base: int) -> Submission:
    return Submission(
        kind="proposal",
        board_id=act["board_id"],
        author=act["agent"],
        base=base,
        proposal_id=pid,
        activation_id=act["activation_id"],
        trace_id=act["trace_id"],
        patch=[{"op": "add", "path": f"/{k}", "value": v} for k, v in updates.items()],
    )


async def test_audit_rollback_keeps_a_version_another_replica_passed(store: BoardStore) -> None:
    """pa's commit (v1) passes its audit on one replica just before pb's (v2) fails on
    the other: the rollback restores v1, not v0, and pa is not asked again."""
    pb_committed, pa_passed = asyncio.Event(), asyncio.Event()

    async def check(view: Any) -> bool | str:
        if view.get("b") == "bad":
            await pa_passed.wait()
            return "b is bad"
        if view.get("b") is None:  # pa's commit: passes once pb's is in
            await pb_committed.wait()
            pa_passed.set()
        return True

    app = pair_app(check)
    r1, r2 = await replicas(app, store)
    await r1.start("p1")
    # Scripts loaded now, so that no first use (NOSCRIPT, then a load) adds a round trip
    # between pa's audit passing and its pass being recorded.
    assert await r1.compliance.passed("p1", 0) is None
    act_a = await open_activation(store, "p1", "pa")
    act_b = await open_activation(store, "p1", "pb")
    first = asyncio.create_task(r1.handle(proposal(act_a, "pa-1", {"a": 1}, 0)))
    await wait_for(lambda: _at(store, "p1", 1))
    second = asyncio.create_task(r2.handle(proposal(act_b, "pb-1", {"b": "bad"}, 0)))
    await wait_for(lambda: _at(store, "p1", 2))
    pb_committed.set()
    outcome_a, outcome_b = await asyncio.gather(first, second)

    assert (outcome_a.status, outcome_a.version, outcome_a.audit) == ("committed", 1, "")
    assert (outcome_b.status, outcome_b.audit) == ("committed", "b_ok")
    rollback = (await store.history("p1"))[2]
    assert (rollback.version, rollback.kind, rollback.outcome) == (3, "rollback", "restored:1")
    assert (await store.read("p1")).data == (await store.read("p1", at=1)).data
    rewrites = [a for a in await activations(store, "p1") if a["reason"] == "rewrite"]
    assert [a["agent"] for a in rewrites] == ["pb"]  # pa's write stands: no redo
    assert "b is bad" in rewrites[0]["feedback"]

    # pb redoes its work; the board is done with pa's write kept.
    redo = await open_activation(store, "p1", "pb")
    done = await r2.handle(proposal(redo, "pb-2", {"b": "good"}, 3))
    assert done.status == "committed"
    info = await store.info("p1")
    assert info.status == "done"
    assert (await store.read("p1")).data == {"a": 1, "b": "good"}
    assert info.compliant == info.version


async def test_audit_passing_after_the_rollback_re_activates_the_dropped_write(
    store: BoardStore,
) -> None:
    """pb's commit (v2) fails its audit while pa's (v1) is still being audited on the
    other replica: the rollback drops v1 too, so pa is asked to redo it; pa's audit
    passing afterwards does not mark the rolled-back v1 compliant."""
    rolled_back = asyncio.Event()

    async def check(view: Any) -> bool | str:
        if view.get("b") == "bad":
            return "b is bad"
        if view.get("b") is None:  # pa's commit: its audit ends after the rollback
            await rolled_back.wait()
        return True

    app = pair_app(check)
    r1, r2 = await replicas(app, store)
    await r1.start("p2")
    act_a = await open_activation(store, "p2", "pa")
    act_b = await open_activation(store, "p2", "pb")
    first = asyncio.create_task(r1.handle(proposal(act_a, "pa-1", {"a": 1}, 0)))
    await wait_for(lambda: _at(store, "p2", 1))
    outcome_b = await r2.handle(proposal(act_b, "pb-1", {"b": "bad"}, 0))
    assert outcome_b.audit == "b_ok"
    rollback = (await store.history("p2"))[2]
    assert (rollback.kind, rollback.outcome) == ("rollback", "restored:0")
    rolled_back.set()
    outcome_a = await first

    assert outcome_a.status == "committed" and outcome_a.reason == "rolled_back"
    assert "rolled back" in outcome_a.message
    assert (await outcome_of(store, "p2", "pa-1"))["reason"] == "rolled_back"
    info = await store.info("p2")
    assert info.compliant != 1  # v1's content is gone: never compliant again
    assert (await store.read("p2")).data == (await store.read("p2", at=0)).data
    redo = await open_activation(store, "p2", "pa")
    assert redo["reason"] == "rewrite"
    assert "v1 was rolled back" in redo["feedback"] and "b is bad" in redo["feedback"]
    rewrite_b = await open_activation(store, "p2", "pb")
    assert rewrite_b["reason"] == "rewrite"

    # Both redo their work; the board is done with pa's key set.
    assert (await r1.handle(proposal(redo, "pa-2", {"a": 1}, 3))).status == "committed"
    assert (await r2.handle(proposal(rewrite_b, "pb-2", {"b": "good"}, 4))).status == "committed"
    info = await store.info("p2")
    assert info.status == "done"
    assert (await store.read("p2")).data == {"a": 1, "b": "good"}
    assert info.compliant == info.version


async def _at(store: BoardStore, board: str, version: int) -> bool:
    return await store.version(board) >= version


class Fan(BaseModel):
    a: Annotated[str | None, Key("ra")] = None
    b: Annotated[str | None, Key("rb")] = None
    report: Annotated[str | None, Key("agg")] = None


def fan_app(partial: bool, audits: list[Audit]) -> App:
    @agent("ra")
    async def ra(ctx: Context) -> Output:
        return Output(updates={"a": "x"})

    @agent("rb")
    async def rb(ctx: Context) -> Output:
        return Output(updates={"b": "y"})

    @agent("agg", reads=("a", "b"), triggers=(when_all("a", "b", partial=partial),))
    async def agg(ctx: Context) -> Output:
        return Output(updates={"report": f"{ctx.board['a']}+{ctx.board['b']}"})

    return App(
        board=Fan,
        agents=[ra, rb, agg],
        start=["ra", "rb"],
        audits=audits,
        done=lambda b: b.get("report") is not None,
        done_reads=["report"],
        limits=Limits(activation_timeout_s=30),
    )


def pause_after_commit(sup: Supervisor, committed: asyncio.Event, go: asyncio.Event) -> None:
    """Another client's commands run between this replica's commit and the read sent
    with it in one round trip (the Pipeliner promises no MULTI): here, made to happen."""
    execute = sup.router.pipeliner.execute

    async def split(*commands: Any, **kwargs: Any) -> list[Any]:
        if len(commands) < 2 or commands[0][0] != "script":
            return await execute(*commands, **kwargs)
        replies = await execute(commands[0], **kwargs)
        committed.set()
        await go.wait()
        return [*replies, *await execute(*commands[1:], **kwargs)]

    sup.router.pipeliner.execute = split  # type: ignore[method-assign]


@pytest.mark.parametrize("path", ["read", "general", "partial"])
async def test_join_fires_once_with_two_replicas(store: BoardStore, path: str) -> None:
    """Both branches are committed before either replica reads what routing needs, on
    the read path (the commit and the read in one round trip, another client's commit
    between them) and on the general path (a slow audit between commit and routing):
    both replicas see the join complete, and it fires once. A later change to a
    watched key fires it again."""
    both = asyncio.Event()
    seen: list[int] = []

    async def slow(view: Any) -> bool:
        seen.append(1)
        if len(seen) >= 2:
            both.set()
        await both.wait()
        return True

    audits = [] if path == "read" else [Audit("slow", ("a", "b"), slow)]
    app = fan_app(path == "partial", audits)
    r1, r2 = await replicas(app, store)
    for n in range(3):
        board = f"f{n}"
        both.clear()
        seen.clear()
        committed, go = asyncio.Event(), asyncio.Event()
        if path == "read":
            pause_after_commit(r1, committed, go)
        await r1.start(board)
        act_a = await open_activation(store, board, "ra")
        act_b = await open_activation(store, board, "rb")
        first = asyncio.create_task(r1.handle(proposal(act_a, f"a-{n}", {"a": "x"}, 0)))
        if path == "read":
            await committed.wait()
            await r2.handle(proposal(act_b, f"b-{n}", {"b": "y"}, 0))
            go.set()
            await first
            del r1.router.pipeliner.execute  # the class's again
        else:
            await asyncio.gather(first, r2.handle(proposal(act_b, f"b-{n}", {"b": "y"}, 0)))
        joins = [a for a in await activations(store, board) if a["agent"] == "agg"]
        assert len(joins) == 1, (board, joins)
        meta = await store.redis.hget(store.keys(board).meta, "activations")
        assert int(meta) == 3  # ra, rb, agg: the duplicate was not counted
        queued = await store.redis.xrange(f"{store.settings.key_prefix}:queue:agg")
        assert len([q for q in queued if q[1]["board"] == board]) == 1

    # ra writes again (a new version of a watched key): the join fires again, once.
    both.set()
    await r2.handle(
        Submission(
            kind="proposal",
            board_id="f0",
            author="ra",
            base=2,
            proposal_id="a-again",
            patch=[{"op": "add", "path": "/a", "value": "z"}],
        )
    )
    joins = [a for a in await activations(store, "f0") if a["agent"] == "agg"]
    assert len(joins) == 2


async def test_routing_skips_an_activation_the_board_already_has(store: BoardStore) -> None:
    """Two routing steps asking for one activation id (a join's, computed by two
    replicas): it is created, counted and dispatched once."""
    app = fan_app(False, [])
    sup = Supervisor(app, store)
    await store.create("d", app.schema)

    def step(routing_id: str) -> Routing:
        join = Activation(activation_id="a-join", board_id="d", agent="agg", base=2, trace_id="t")
        return Routing(routing_id=routing_id, version=2, activations=[join])

    first, _ = await sup.router.route("d", step("r1"))
    again, _ = await sup.router.route("d", step("r2"))
    assert [row[0] for row in first.dispatch] == ["a-join"]
    assert (again.outcome, again.dispatch) == ("ok", [])
    bk = store.keys("d")
    assert await store.redis.hget(bk.meta, "activations") == "1"
    assert await store.redis.hkeys(bk.outbox) == ["a-join"]


async def test_a_flagged_version_never_becomes_a_rollback_target(store: BoardStore) -> None:
    """A flag takes back a version whose audits passed; a later audit rollback goes back
    to the flag's rollback (the content it restored), never to the flagged version."""

    async def check(view: Any) -> bool | str:
        return "b is bad" if view.get("b") == "bad" else True

    app = pair_app(check)
    sup, _ = await replicas(app, store)
    await sup.start("p3")
    act_a = await open_activation(store, "p3", "pa")
    act_b = await open_activation(store, "p3", "pb")
    assert (await sup.handle(proposal(act_a, "pa-1", {"a": 1}, 0))).version == 1
    assert (await store.info("p3")).compliant == 1
    flag = Submission(
        kind="command", board_id="p3", author="human:bob", command="flag", reason="wrong"
    )
    assert (await sup.handle(flag)).status == "committed"
    assert (await store.read("p3")).data == (await store.read("p3", at=0)).data  # v2
    outcome = await sup.handle(proposal(act_b, "pb-1", {"b": "bad"}, 2))
    assert (outcome.version, outcome.audit) == (3, "b_ok")
    last = (await store.history("p3"))[-1]
    assert (last.version, last.kind, last.outcome) == (4, "rollback", "restored:2")
    assert (await store.read("p3")).data == (await store.read("p3", at=0)).data
    assert (await store.info("p3")).compliant == 4


async def test_an_operators_rollback_is_never_undone_by_a_later_audit_rollback(
    store: BoardStore,
) -> None:
    """An operator rolls back a version whose audits passed; a later audit rollback goes
    back to the operator's rollback (the content it restored), never to what it took back."""

    async def check(view: Any) -> bool | str:
        return "b is bad" if view.get("b") == "bad" else True

    app = pair_app(check)
    sup, _ = await replicas(app, store)
    await sup.start("p4")
    act_a = await open_activation(store, "p4", "pa")
    act_b = await open_activation(store, "p4", "pb")
    assert (await sup.handle(proposal(act_a, "pa-1", {"a": 1}, 0))).version == 1
    assert (await store.info("p4")).compliant == 1
    back = Submission(
        kind="command",
        board_id="p4",
        author="human:bob",
        command="rollback",
        args={"to": 0},
        reason="a is wrong",
    )
    assert (await sup.handle(back)).version == 2
    assert (await store.info("p4")).compliant == 0  # lowered to the target, never raised
    outcome = await sup.handle(proposal(act_b, "pb-1", {"b": "bad"}, 2))
    assert (outcome.version, outcome.audit) == (3, "b_ok")
    last = (await store.history("p4"))[-1]
    assert last.kind == "rollback" and last.outcome != "restored:1"
    assert (await store.read("p4")).data["a"] is None  # what the operator took back stays out
