"""The read model on both backends: the reasons of rejections and gates whole, who a
board waits on, agents' liveness, dead letters, and a board followed live; each answer
in a few pipelined round trips."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
import whyapp
from bbtest import count_into
from blackboard.agents import Context, Output, agent
from blackboard.supervisor import Deployment, Supervisor
from pydantic import BaseModel

from blackboard import (
    App,
    Audit,
    BoardNotFound,
    BoardStore,
    Key,
    Limits,
    ReadModel,
    StoreRefused,
)
from blackboard.keys import GlobalKeys
from blackboard.outages import OUTAGE
from blackboard.queues import Delivery, Liveness, WorkQueue
from blackboard.views import Event


async def run_cases(store: BoardStore, *cases: str) -> None:
    async with Deployment(whyapp.app, store) as d:
        for case in cases:
            await d.start(case, {"brief": {"case": case}})
            await d.settle(case)


async def test_rejections_and_gates_say_why(store: BoardStore) -> None:
    await run_cases(store, "policy", "gate", "stubborn")
    reads = ReadModel(store)
    [rejected, *commits] = await reads.history("policy")
    assert (rejected.kind, rejected.version, rejected.outcome) == ("rejected", None, "policy")
    assert rejected.reason.startswith("the draft still says TODO ('TODO: " + whyapp.LONG_WORD)
    assert [c.version for c in commits] == [1, 2, 3]
    assert [r.kind for r in await reads.history("policy", rejections=False)] == ["write"] * 3
    assert [r.version for r in await reads.history("policy", limit=2)] == [2, 3]
    hops = (await reads.trace("gate")).hops
    assert [(h.agent, h.outcome, h.commit) for h in hops] == [
        ("writer", "committed", 1),
        ("reviewer", "committed", 2),
        ("publisher", "held:gate:legal", None),
    ]
    assert hops[-1].message == whyapp.GATE_MESSAGE
    [incident] = await reads.incidents(["stubborn"])
    assert incident.kind == "rewrites" and "greater than or equal to 0" in incident.rejection
    gate, stubborn = sorted(await reads.escalations(), key=lambda e: e.board)
    assert [(h.gate, h.message, h.author) for h in gate.held] == [
        ("legal", whyapp.GATE_MESSAGE, "publisher")
    ]
    assert gate.why.endswith(f": {whyapp.GATE_MESSAGE}")
    assert stubborn.rejection == incident.rejection and stubborn.rejection in stubborn.why
    assert (await reads.waiting("gate")).action.startswith("approve it with")
    with pytest.raises(BoardNotFound, match="Did you mean 'gate'"):
        await reads.trace("gat")


async def test_an_answer_costs_a_few_round_trips(store: BoardStore) -> None:
    await run_cases(store, *whyapp.CASES)
    reads = ReadModel(store)
    sizes: list[int] = []
    pipeline = store.redis.pipeline

    def counted(*a: Any, **k: Any) -> Any:
        return count_into(pipeline(*a, **k), sizes)

    store.redis.pipeline = counted  # type: ignore[method-assign]
    rows = await reads.escalations()
    assert {r.board for r in rows} == {"gate", "stubborn", "fatal"}
    # besides the escalations and board indexes: one pipeline for every board's
    # metadata, one for the work of every board that may wait (nothing active here:
    # no liveness to read), however many boards there are
    assert sizes == [2 * len(whyapp.CASES), 6 * len(rows)]


async def test_agents_liveness_waiting_work_and_unserved(store: BoardStore) -> None:
    reads = ReadModel(store)
    assert await reads.agents() is None  # no app published yet
    supervisor = Supervisor(whyapp.app, store)
    await supervisor.publish(replace=True)
    await supervisor.start("b1", {"brief": {"case": "policy"}})
    seen = await reads.agents()
    assert seen is not None and seen.app == whyapp.app.name
    writer = next(a for a in seen.agents if a.agent == "writer")
    assert (writer.waiting, writer.in_flight, writer.live, writer.needed_by) == (1, 0, 0, ["b1"])
    [stuck] = await reads.escalations()
    assert stuck.unserved == ["writer", "supervisor"] and stuck.status == "active"
    # an instance took the entry and died holding it: in flight, its instance dead
    keys = GlobalKeys(store.settings.key_prefix)
    queue = WorkQueue(store.redis, keys.queue("writer"), "workers", dead_letters=keys.dead_letters)
    [taken] = await queue.take("writer-1", count=1)
    await store.redis.zadd(keys.consumers, {"writer-1": 1})  # it beat once, long ago
    seen = await reads.agents()
    assert seen is not None
    writer = next(a for a in seen.agents if a.agent == "writer")
    assert (writer.waiting, writer.in_flight) == (0, 1)
    [instance] = writer.instances
    assert (instance.name, instance.alive, instance.in_flight) == ("writer-1", False, 1)
    assert instance.beat_age_ms is not None and instance.beat_age_ms > 10**9
    await store.redis.set(keys.live("writer-1"), 1)  # it beats again
    seen = await reads.agents()
    assert seen is not None
    writer = next(a for a in seen.agents if a.agent == "writer")
    assert writer.live == 1 and writer.needed_by == []
    # processes that beat and were never given an entry (no group lists them yet)
    for name in ("sup-host-7-abcdef", "reviewer-host-8-abcdef", "reviewer-2-x"):
        await Liveness(store.redis, keys, name).beat()
    seen = await reads.agents()
    assert seen is not None
    assert [(i.name, i.alive) for i in seen.supervisors] == [("sup-host-7-abcdef", True)]
    by_name = {a.agent: a for a in seen.agents}
    assert [i.name for i in by_name["reviewer"].instances] == [
        "reviewer-2-x",
        "reviewer-host-8-abcdef",
    ]
    assert by_name["reviewer"].live == 2 and by_name["publisher"].instances == []
    # its writer and a supervisor are alive now: nothing for a person to do
    assert await reads.escalations() == []
    await queue.dead_letter(Delivery(taken.entry_id, taken.fields, 6), "gave up")
    [letter] = await reads.dead_letters()
    assert (letter.reason, letter.deliveries, letter.stream) == ("gave up", 6, queue.stream)


async def test_follow_from_before_the_board_exists(store: BoardStore) -> None:
    events: list[Event] = []

    async def follow() -> None:
        async for event in ReadModel(store).follow("stubborn", poll_s=0.02):
            events.append(event)
            if event.event == "status" and event.status == "escalated":
                return

    following = asyncio.create_task(follow())
    while not events:  # it said the board is missing before the board exists
        await asyncio.sleep(0.01)
    assert events[0].event == "missing"
    await run_cases(store, "stubborn")
    await asyncio.wait_for(following, 10)
    finished = [e for e in events if e.phase == "finished"]
    assert [e.outcome.status for e in finished if e.outcome] == ["rejected"] * 3
    assert "rejected 3 times" in (events[-1].waiting.why if events[-1].waiting else "")


async def test_a_paused_board_waits_for_resume(store: BoardStore) -> None:
    async with Deployment(whyapp.app, store) as d:
        await d.start("p1", {"brief": {"case": "gate"}})
        await d.settle("p1")
        await d.command("p1", "pause")
    [paused] = await ReadModel(store).escalations()
    assert (paused.board, paused.status) == ("p1", "paused")
    assert paused.why == "an operator paused it: nothing is dispatched"
    assert paused.action == "resume it with `blackboard resume p1`"


async def test_activity_is_one_consistent_look(store: BoardStore) -> None:
    reads = ReadModel(store)
    supervisor = Supervisor(whyapp.app, store)
    await supervisor.publish(replace=True)
    await supervisor.start("b1", {"brief": {"case": "gate"}})  # no agent runs it
    going = await reads.activity("b1")
    assert (going.status, going.version, going.open, going.idle) == ("active", 0, 1, False)
    await run_cases(store, "gate")
    held = await reads.activity("gate")
    assert (held.status, held.version, held.idle) == ("awaiting_approval", 2, True)
    with pytest.raises(BoardNotFound, match="Did you mean 'gate'"):
        await reads.activity("gatf")


class Note(BaseModel):
    text: Annotated[str | None, Key("scribe")] = None


@agent("scribe", reads=())
async def scribe(ctx: Context) -> Output:
    return Output(updates={"text": "lorem"})


AUDITED = App(
    board=Note,
    agents=[scribe],
    start=["scribe"],
    audits=[Audit("no_lorem", ("text",), lambda b: b.get("text") != "lorem", "lorem ipsum again")],
    done=lambda b: False,
    limits=Limits(activation_timeout_s=10, max_rewrites=1),
)


async def test_an_escalation_by_failed_audits_says_the_last_failure(store: BoardStore) -> None:
    async with Deployment(AUDITED, store) as d:
        await d.start("note")
        assert (await d.settle("note")).status == "escalated"
    reads = ReadModel(store)
    [row] = [e for e in await reads.escalations() if e.board == "note"]
    assert row.rejection == "lorem ipsum again"
    assert row.why.endswith("; the last rejection: lorem ipsum again")
    [rewrites] = [i for i in await reads.incidents(["note"]) if i.kind == "rewrites"]
    assert rewrites.rejection == "lorem ipsum again"


async def test_an_error_reply_is_refused_not_an_outage(store: BoardStore) -> None:
    """A malformed stream id is the caller's mistake: retrying cannot help, so it is
    no outage a loop would ride out for ever."""
    with pytest.raises(StoreRefused, match="Invalid stream ID") as raised:
        await ReadModel(store).dead_letters("nope")
    assert not isinstance(raised.value, OUTAGE)
    assert "Retrying will not help" in str(raised.value)


async def test_follow_tells_what_happened_in_time_order(store: BoardStore) -> None:
    """A whole run seen in one look (the follower was busy): its events come oldest
    first, and only a status event carries a status."""
    following = ReadModel(store).follow("policy", poll_s=0.02)
    assert (await anext(following)).event == "missing"
    await run_cases(store, "policy")  # everything happens before the next look
    events = [await anext(following)]
    while events[-1].event != "status":
        events.append(await anext(following))
    await following.aclose()
    assert [e.event for e in events].count("commit") == 3
    assert [e.ts_ms for e in events] == sorted(e.ts_ms for e in events)
    assert {e.status for e in events[:-1]} == {None}
    assert events[-1].status == "done"
