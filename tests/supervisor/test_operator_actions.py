"""Operator actions never leave a board stuck (issue 20, item 11).

After any operator command a board is either settled with its done condition true, or
active with work queued, or escalated (or awaiting a person) with a reason: never active
with nothing to do. And a flag restores exactly what README says: the board as it was
before the newest agent write (or at the compliant version, if older), except the keys
people own, which keep what a person last set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
from bbtest import activations, build_app, incidents
from blackboard.agents import Context, Output, agent, when_all
from blackboard.supervisor import Deployment
from pydantic import BaseModel

from blackboard import App, Audit, BoardStore, Gate, Key, ReadModel
from blackboard.records import Submission

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples import loan


async def assert_not_stuck(store: BoardStore, app: App, board_id: str) -> None:
    """The invariant: settled with done true, active with work, or stopped with a reason."""
    bk = store.keys(board_id)
    pipe = store.redis.pipeline(transaction=True)  # one consistent look: agents run on
    pipe.hget(bk.meta, "status")
    pipe.zcard(bk.open)
    pipe.hlen(bk.outbox)
    pipe.hgetall(bk.state)
    status, open_, outbox, state = await pipe.execute()
    board = {k: json.loads(v) for k, v in state.items()}
    if status == "done":
        assert app.done is not None and app.done(board), f"done but the condition is false: {board}"
    elif status == "active":
        assert open_ + outbox > 0, f"active with nothing queued: {board}"
    else:
        assert status in ("escalated", "awaiting_approval", "failed", "paused"), status
        if status == "escalated":
            assert await escalated_reason(store, board_id), "escalated with no reason"


async def escalated_reason(store: BoardStore, board_id: str) -> str:
    return str(await store.redis.hget(store.keys(board_id).meta, "escalated_reason") or "")


async def done_board(d: Deployment, store: BoardStore) -> None:
    await d.start("c1")
    info = await d.settle("c1")
    assert (info.status, info.version) == ("done", 3)  # intake, risk, compliance


async def test_flag_on_a_done_board_reopens_it_and_the_author_redoes(store: BoardStore) -> None:
    app = build_app()
    async with Deployment(app, store) as d:
        await done_board(d, store)
        outcome = await d.command("c1", "flag", by="human:bob", reason="decision looks wrong")
        assert outcome.status == "committed", outcome
        await assert_not_stuck(store, app, "c1")
        info = await d.settle("c1")
    assert info.status == "done"
    history = await store.history("c1")
    assert [(e.kind, e.author) for e in history[3:]] == [
        ("rollback", "human:bob"),
        ("write", "compliance"),
    ]
    assert await store.read_key("c1", "decision") == "approve"
    [redo] = [a for a in await activations(store, "c1") if a["reason"] == "rewrite"]
    assert redo["agent"] == "compliance" and "decision looks wrong" in redo["feedback"]


async def test_rollback_before_an_agent_on_a_done_board_redoes_from_there(
    store: BoardStore,
) -> None:
    app = build_app()
    async with Deployment(app, store) as d:
        await done_board(d, store)
        outcome = await d.command("c1", "rollback", by="human:carol", before_agent="risk")
        assert outcome.status == "committed", outcome
        await assert_not_stuck(store, app, "c1")
        info = await d.settle("c1")
    assert info.status == "done"
    authors = [e.author for e in await store.history("c1")]
    # the rollback took back risk's and compliance's work; risk redid it, then compliance
    assert authors[3:] == ["human:carol", "risk", "compliance"]
    assert await store.read_key("c1", "score") == 700


async def test_rollback_that_keeps_the_done_condition_true_leaves_the_board_done(
    store: BoardStore,
) -> None:
    app = build_app()
    async with Deployment(app, store) as d:
        await done_board(d, store)
        outcome = await d.command("c1", "rollback", by="human:carol", to=3)  # a no-op
        assert outcome.status == "committed", outcome
        await assert_not_stuck(store, app, "c1")
        info = await d.settle("c1")
    assert info.status == "done"


async def test_rollback_to_the_start_of_a_done_board_runs_it_again(store: BoardStore) -> None:
    app = build_app()
    async with Deployment(app, store) as d:
        await done_board(d, store)
        await d.command("c1", "rollback", by="human:carol", to=0)
        await assert_not_stuck(store, app, "c1")
        info = await d.settle("c1")
    assert info.status == "done"
    authors = [e.author for e in await store.history("c1")]
    assert authors[3:] == ["human:carol", "intake", "risk", "compliance"]


async def test_set_on_a_done_board_keeps_it_settled(store: BoardStore) -> None:
    app = build_app()
    async with Deployment(app, store) as d:
        await done_board(d, store)
        outcome = await d.command("c1", "set", by="human:ann", values={"max_amount": 10.0})
        assert outcome.status == "committed", outcome
        await assert_not_stuck(store, app, "c1")
        info = await d.settle("c1")
    assert info.status == "done"
    assert await store.read_key("c1", "max_amount") == 10.0


async def test_set_that_leaves_nothing_to_do_waits_for_a_person_saying_so(
    store: BoardStore,
) -> None:
    """A done condition that a person's write makes false, with no agent to act: the
    board waits for a person and says why, rather than sitting active and idle."""
    app = build_app(
        done=lambda b: b.get("decision") is not None and b.get("max_amount", 0) > 100,
        done_reads=["decision", "max_amount"],
    )
    async with Deployment(app, store) as d:
        await done_board(d, store)
        await d.command("c1", "set", by="human:ann", values={"max_amount": 10.0})
        await assert_not_stuck(store, app, "c1")
        info = await d.settle("c1")
    assert info.status == "awaiting_approval"
    [stalled] = [i for i in await incidents(store, "c1") if i["kind"] == "stalled"]
    why = stalled["detail"]
    assert "done condition" in why and "set by human:ann" in why
    assert int(stalled["version"]) == info.version  # the board's version, not 0


async def test_flag_keeps_what_a_person_set_after_the_flagged_write(store: BoardStore) -> None:
    app = build_app(done=None, done_reads=[])
    async with Deployment(app, store) as d:
        await d.start("c1")
        await d.settle("c1")
        await d.command("c1", "set", by="human:ann", values={"max_amount": 5.0})  # v4
        outcome = await d.command("c1", "flag", by="human:bob", reason="wrong decision")
        assert outcome.status == "committed", outcome
        info = await d.settle("c1")
    history = await store.history("c1")
    rollback = history[4]
    assert (rollback.kind, rollback.author) == ("rollback", "human:bob")
    # compliance's decision (v3) is taken back; the person's later set (v4) stays
    assert await store.read_key("c1", "max_amount") == 5.0
    after = (await store.read("c1", at=rollback.version)).data
    assert after["decision"] is None and after["score"] == 700
    assert history[5].author == "compliance"
    assert info.status in ("active", "done")


@pytest.mark.parametrize("command", ["pause", "resume"])
async def test_pause_and_resume_refuse_a_done_board(store: BoardStore, command: str) -> None:
    app = build_app()
    args: dict[str, Any] = {}
    async with Deployment(app, store) as d:
        await done_board(d, store)
        outcome = await d.command("c1", command, by="human:ann", **args)
        assert (outcome.status, outcome.reason) == ("rejected", "ValidationFailed")
        assert "done" in outcome.message and "rollback" in outcome.message
        await assert_not_stuck(store, app, "c1")
    assert (await store.info("c1")).status == "done"


async def test_a_rollback_out_of_range_is_refused_and_claims_nothing(store: BoardStore) -> None:
    """Refused before anything is claimed: the audits of later commits still count
    (before, the claim stayed and every later audited commit was taken as dropped)."""
    app = build_app(audits=[Audit("fine", ("income",), lambda b: True)])
    async with Deployment(app, store) as d:
        await done_board(d, store)
        for to in (999, -1):
            bad = await d.command("c1", "rollback", by="human:carol", to=to)
            assert (bad.status, bad.reason) == ("rejected", "ValidationFailed"), bad
            assert f"v{to}" in bad.message and "versions are 0 to v3" in bad.message
        assert not await store.redis.hlen(store.keys("c1").claims)
        await d.command("c1", "rollback", by="human:carol", before_agent="risk")
        info = await d.settle("c1")
    assert info.status == "done"
    assert info.compliant == info.version  # the redone work's audits passed and count


async def test_a_redelivered_rollback_leaves_the_board_as_its_first_run_did(
    store: BoardStore,
) -> None:
    """A supervisor killed after the command's routing but before its answer: the
    redelivered command does not reopen the board its first run settled."""
    app = build_app()
    async with Deployment(app, store) as d:
        await done_board(d, store)
        command = Submission(
            kind="command", board_id="c1", author="human:carol", command="rollback", args={"to": 3}
        )
        first = await d.supervisor.handle(command)
        assert (await store.info("c1")).status == "done"
        await store.redis.hdel(store.keys("c1").results, command.proposal_id)  # the kill
        again = await d.supervisor.handle(command)
        assert again.version == first.version
        await assert_not_stuck(store, app, "c1")
    assert (await store.info("c1")).status == "done"


class Fan(BaseModel):
    a: Annotated[int | None, Key("pa")] = None
    b: Annotated[int | None, Key("pb")] = None
    total: Annotated[int | None, Key("sum")] = None


def fan_app() -> App:
    @agent("pa")
    async def pa(ctx: Context) -> Output:
        return Output(updates={"a": 1})

    @agent("pb")
    async def pb(ctx: Context) -> Output:
        return Output(updates={"b": 2})

    @agent("sum", reads=("a", "b"), triggers=(when_all("a", "b"),))
    async def total(ctx: Context) -> Output:
        return Output(updates={"total": ctx.board["a"] + ctx.board["b"]})

    return App(
        board=Fan,
        agents=[pa, pb, total],
        start=["pa", "pb"],
        done=lambda b: b.get("total") is not None,
        done_reads=["total"],
    )


async def test_a_rollback_of_a_fan_out_redoes_every_branch(store: BoardStore) -> None:
    """The roots of what a rollback took back redo: each branch of a fan-out (both
    started from v0), not only the first writer, so the join fires again."""
    app = fan_app()
    async with Deployment(app, store) as d:
        await d.start("f1")
        assert (await d.settle("f1")).status == "done"
        await d.command("f1", "rollback", by="human:carol", to=0)
        await assert_not_stuck(store, app, "f1")
        info = await d.settle("f1")
    assert info.status == "done"
    authors = sorted(e.author for e in (await store.history("f1"))[4:])
    assert authors == ["pa", "pb", "sum"]  # after the rollback (v4): each once
    assert (await store.read("f1")).data == {"a": 1, "b": 2, "total": 3}


async def test_resume_after_a_rollback_of_an_escalated_board_redoes_what_it_took_back(
    store: BoardStore,
) -> None:
    app = fan_app()
    async with Deployment(app, store) as d:
        await d.start("f2")
        await d.settle("f2")
        await store.redis.hset(store.keys("f2").meta, "status", "escalated")  # a human looks
        await d.command("f2", "rollback", by="human:carol", to=0)
        assert (await store.info("f2")).status == "escalated"  # nothing runs while it is
        outcome = await d.command("f2", "resume", by="human:carol")
        assert "pa" in outcome.message and "pb" in outcome.message, outcome.message
        info = await d.settle("f2")
    assert info.status == "done"
    assert (await store.read("f2")).data == {"a": 1, "b": 2, "total": 3}


async def test_a_persons_writes_count_as_compliant_in_an_audited_app(store: BoardStore) -> None:
    """No audit runs on an approval or a set: each records its own pass, so the
    compliant version follows it (an audit rollback later never goes behind it)."""
    gate = Gate("decision", ("amount",), lambda updates, board: "decision" in updates)
    app = build_app(gates=[gate], audits=[Audit("fine", ("income",), lambda b: True)])
    async with Deployment(app, store) as d:
        await d.start("c1")
        assert (await d.settle("c1")).status == "awaiting_approval"
        approved = await d.command("c1", "approve", by="human:alice")
        info = await d.settle("c1")
        assert (info.status, info.compliant) == ("done", approved.version)
        done = await d.command("c1", "set", by="human:ann", values={"max_amount": 10.0})
        info = await d.settle("c1")
    assert (info.status, info.compliant, info.version) == ("done", done.version, done.version)


async def test_a_rollback_of_a_board_held_at_a_gate_drops_the_stale_hold_and_redoes(
    store: BoardStore,
) -> None:
    """examples.loan's AML case: approve, flag, then roll back to v1 while the redone
    decision is held again. The hold on the content the rollback took back goes (its
    agent's proposal is answered), and the redo is dispatched: active, not stuck."""
    async with Deployment(loan.app, store) as d:
        await d.start("aml", {"application": loan.CASES["aml-hit"]})
        assert (await d.settle("aml")).status == "awaiting_approval"
        assert (await d.command("aml", "approve", by="human:ann")).status == "committed"
        flagged = await d.command("aml", "flag", by="human:ann", reason="again")
        assert flagged.status == "committed", flagged
        assert (await d.settle("aml")).status == "awaiting_approval"
        [stale] = await store.redis.hkeys(store.keys("aml").held)
        outcome = await d.command("aml", "rollback", by="human:ann", to=1)
        assert outcome.status == "committed", outcome
        assert await store.redis.hkeys(store.keys("aml").held) == []
        assert (await store.info("aml")).status == "active"
        await assert_not_stuck(store, loan.app, "aml")
        assert "aml" not in [e.board for e in await ReadModel(store).escalations()]
        answer = await store.redis.hget(store.keys("aml").results, stale)
        assert answer is not None and "rolled the board back to v1" in answer
        info = await d.settle("aml")
    assert info.status == "awaiting_approval"  # the redone decision, held afresh
    [fresh] = await store.redis.hkeys(store.keys("aml").held)
    assert fresh != stale
    queued = [a for a in await activations(store, "aml") if a["status"] == "queued"]
    assert queued == []


async def test_pausing_a_paused_board_says_it_already_is(store: BoardStore) -> None:
    app = build_app(
        gates=[Gate("decision", ("amount",), lambda updates, board: "decision" in updates)]
    )
    async with Deployment(app, store) as d:
        await d.start("c1")
        await d.settle("c1")
        first = await d.command("c1", "pause", by="human:ann")
        assert first.message == "paused by human:ann"
        updated = (await store.info("c1")).updated_ms
        again = await d.command("c1", "pause", by="human:bob")
    assert again.status == "committed"
    assert again.message == "already paused; resume it with `blackboard resume c1`"
    info = await store.info("c1")
    assert (info.status, info.updated_ms) == ("paused", updated)
