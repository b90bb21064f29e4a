"""Summarisation as a supervisor duty (issue 20, items 3 and 4), embedded, on both
backends: one summarisation per threshold crossing, rewrites that keep what their
activation was given, summaries that write only the key they were asked to condense,
and the raw content readable in the log however long the board runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import pytest
import summapps
from bbtest import activations, incidents, outcome_of
from blackboard.agents import Agent, Context, Handoff, Output, Summariser, agent
from blackboard.supervisor import Deployment, Supervisor
from blackboard.supervisor.summarisation import STARTING_MS, OnTop, check_summary
from pydantic import BaseModel

from blackboard import (
    App,
    BoardSchema,
    BoardStore,
    ConflictError,
    Key,
    Limits,
    OwnershipError,
    Policy,
    Proposal,
    SemanticError,
    codec,
    connect,
)
from blackboard.records import Activation

THRESHOLD = 400
HELPERS = str(Path(__file__).resolve().parents[1] / "helpers")


class Notes(BaseModel):
    notes: Annotated[list[str], Key("writer", summarisable=True, summary_bytes=THRESHOLD)] = []
    count: Annotated[int, Key("writer")] = 0
    verdict: Annotated[str, Key("judge")] = ""


def note(n: int) -> str:
    return f"note {n}: checked source {n}, found nothing new."


def writer_until(total: int) -> Agent:
    """Appends one note per activation and hands off to itself until ``total``."""

    @agent("writer", reads=("notes", "count"), handoffs=("writer",))
    async def writer(ctx: Context) -> Output:
        n = ctx.board.get("count", 0)
        more = Handoff(to="writer", reason="more to check") if n + 1 < total else None
        return Output(
            updates={"notes": [*ctx.board.get("notes", []), note(n)], "count": n + 1},
            handoff=more,
        )

    return writer


@agent("judge")
async def judge(ctx: Context) -> Output:
    return Output()


def notes_app(total: int, summariser: Agent | None = None, **kwargs: Any) -> App:
    return App(
        board=Notes,
        agents=[writer_until(total), judge, summariser or Summariser()],
        start=["writer"],
        summariser="summariser",
        **kwargs,
    )


async def run(app: App, store: BoardStore, board: str = "n1", **initial: Any) -> Any:
    async with Deployment(app, store) as d:
        await d.start(board, initial or None)
        return await d.settle(board, timeout=60)


def size(value: Any) -> int:
    return codec.utf8_len(codec.dumps(value))


async def notes_by_version(store: BoardStore, board: str) -> list[tuple[int, str, list[str]]]:
    """(version, kind, notes after it) for every commit that changed ``notes``."""
    seen = []
    for entry in await store.history(board):
        for op in entry.patch:
            if op["path"] == "/notes":
                seen.append((entry.version, entry.kind, op["value"]))
    return seen


def crossings(changes: list[tuple[int, str, list[str]]], *, summaries_under: bool = True) -> int:
    """How many times the key crossed its threshold: went from at most the threshold to
    over it. A summary whose own output is under the threshold takes the key back under
    (``summaries_under``), even if what was appended while it was made keeps it over."""
    over, count = False, 0
    for _, kind, notes in changes:
        if kind == "summary" and summaries_under:
            over = False
            continue
        if size(notes) > THRESHOLD and not over:
            count += 1
        over = size(notes) > THRESHOLD
    return count


async def test_a_writer_handing_off_to_itself_is_summarised_not_escalated(
    store: BoardStore,
) -> None:
    info = await run(notes_app(12), store)
    assert info.status == "active"  # settled with nothing left to do: not escalated
    assert await incidents(store, "n1") == []
    changes = await notes_by_version(store, "n1")
    summaries = [(v, notes) for v, kind, notes in changes if kind == "summary"]
    assert summaries, "the key crossed its threshold and was never summarised"
    acts = await activations(store, "n1")
    summarising = [a for a in acts if a["reason"] == "summarise"]
    assert all(a["payload"] == {"key": "notes", "threshold": THRESHOLD} for a in summarising)
    # one summarisation per crossing, each committed at its first attempt
    assert len(summarising) == len(summaries) == crossings(changes)
    assert all(size(notes) <= THRESHOLD for _, notes in summaries)
    final = await store.read_key("n1", "notes")
    assert final[-1] == note(11)  # the newest note, verbatim
    assert await store.read_key("n1", "count") == 12


async def test_a_long_run_stays_bounded_and_keeps_the_raw_notes_in_the_log(
    store: BoardStore,
) -> None:
    total = 240
    info = await run(notes_app(total, limits=Limits(max_activations=1_000)), store)
    assert info.status == "active" and await incidents(store, "n1") == []
    assert await store.read_key("n1", "count") == total
    changes = await notes_by_version(store, "n1")
    sizes = [size(notes) for _, _, notes in changes]
    # bounded: a summary brings the key back under its threshold, and while one is being
    # made the writer adds a note or two
    assert max(sizes) <= THRESHOLD + 3 * size([note(total)])
    summaries = [v for v, kind, _ in changes if kind == "summary"]
    summarising = [a for a in await activations(store, "n1") if a["reason"] == "summarise"]
    assert len(summaries) == len(summarising) == crossings(changes) >= total // 10
    # Every raw note is readable in the log: each one a summary condensed was on the
    # board just before that summary, and the others are on it now.
    readable = set(await store.read_key("n1", "notes"))
    for version in summaries:
        readable.update((await store.read("n1", at=version - 1)).data["notes"])
    assert {note(n) for n in range(total)} <= readable


async def test_one_summarisation_per_crossing_rearmed_under_the_threshold(
    store: BoardStore,
) -> None:
    """A summariser whose summary leaves the key over its threshold is not activated
    again on every commit: only once the key falls back under and crosses again."""

    class Verbose(Agent):  # its "summary" is longer than what it was given
        name = "summariser"

        async def run(self, ctx: Context) -> Output:
            key = ctx.payload["key"]
            return Output(updates={key: [*ctx.board[key], "(all of it kept)"]})

    @agent("writer", reads=("notes", "count"), handoffs=("writer",))
    async def writer(ctx: Context) -> Output:
        n = ctx.board.get("count", 0)
        notes = [] if n == 14 else [*ctx.board.get("notes", []), note(n)]  # falls under
        more = Handoff(to="writer", reason="more") if n + 1 < 24 else None
        return Output(updates={"notes": notes, "count": n + 1}, handoff=more)

    app = App(
        board=Notes,
        agents=[writer, judge, Verbose()],
        start=["writer"],
        summariser="summariser",
    )
    info = await run(app, store)
    assert info.status == "active" and await incidents(store, "n1") == []
    changes = await notes_by_version(store, "n1")
    assert crossings(changes, summaries_under=False) == 2  # its summaries are not
    summarising = [a for a in await activations(store, "n1") if a["reason"] == "summarise"]
    assert len(summarising) == 2  # not one per commit while over the threshold
    assert [kind for _, kind, _ in changes].count("summary") == 2


async def test_a_slow_summary_that_leaves_the_key_over_is_followed_by_the_next(
    store: BoardStore,
) -> None:
    """While a summary is being made the writer goes on; what it appended follows the
    summary. If that keeps the key over its threshold, the key is summarised again at
    the next commit instead of growing for ever (the summary itself was under)."""
    appended = asyncio.Event()

    class Slow(Summariser):
        async def run(self, ctx: Context) -> Output:
            await asyncio.wait_for(appended.wait(), 10)  # the first one takes long
            return await super().run(ctx)

    @agent("writer", reads=("notes", "count"), handoffs=("writer",))
    async def writer(ctx: Context) -> Output:
        n = ctx.board.get("count", 0)
        if n == 25:  # well past the first crossing (the 9th note)
            appended.set()
        more = Handoff(to="writer", reason="more") if n + 1 < 60 else None
        return Output(
            updates={"notes": [*ctx.board.get("notes", []), note(n)], "count": n + 1},
            handoff=more,
        )

    app = App(
        board=Notes, agents=[writer, judge, Slow()], start=["writer"], summariser="summariser"
    )
    info = await run(app, store)
    assert info.status == "active" and await incidents(store, "n1") == []
    changes = await notes_by_version(store, "n1")
    summaries = [notes for _, kind, notes in changes if kind == "summary"]
    assert size(summaries[0]) > THRESHOLD  # 15 and more notes appended meanwhile
    assert summaries[0][0].startswith("[summary of ")
    assert len(summaries) >= 2 and size(summaries[1]) <= THRESHOLD
    final = await store.read_key("n1", "notes")
    assert size(final) <= THRESHOLD + 3 * size([note(60)])


async def test_a_rewrite_keeps_the_payload_of_the_activation_it_redoes(store: BoardStore) -> None:
    class Topic(BaseModel):
        ask: Annotated[str, Key("lead")] = ""
        answer: Annotated[str, Key("expert")] = ""

    @agent("lead", handoffs=("expert",))
    async def lead(ctx: Context) -> Output:
        return Output(
            updates={"ask": "pricing"},
            handoff=Handoff(to="expert", payload={"topic": "pricing", "feedback": "be brief"}),
        )

    @agent("expert")
    async def expert(ctx: Context) -> Output:
        topic = ctx.payload.get("topic", "?")
        return Output(updates={"answer": f"{topic}: " + ("short" if ctx.feedback else "long")})

    app = App(
        board=Topic,
        agents=[lead, expert],
        start=["lead"],
        policies=[
            Policy(
                "brief",
                ("answer",),
                lambda b: not b.get("answer", "").endswith("long"),
                message="answer too long",
            )
        ],
    )
    info = await run(app, store, "t1")
    assert info.status == "active" and await incidents(store, "t1") == []
    assert await store.read_key("t1", "answer") == "pricing: short"
    [first, rewrite] = [a for a in await activations(store, "t1") if a["agent"] == "expert"]
    assert first["payload"] == {"topic": "pricing", "feedback": "be brief"}
    assert (rewrite["reason"], rewrite["payload"]) == ("rewrite", first["payload"])
    assert "answer too long" in rewrite["feedback"]


async def test_a_summarisation_redone_after_a_rejection_commits_as_a_summary(
    store: BoardStore,
) -> None:
    class SecondTime(Summariser):
        async def run(self, ctx: Context) -> Output:
            if not ctx.feedback:
                raise SemanticError("the notes were unreadable")
            return await super().run(ctx)

    info = await run(notes_app(12, SecondTime()), store)
    assert info.status == "active" and await incidents(store, "n1") == []
    summarising = [a for a in await activations(store, "n1") if a["agent"] == "summariser"]
    retries = [a for a in summarising if a["feedback"]]
    assert retries and all(
        (a["reason"], a["payload"]) == ("summarise", {"key": "notes", "threshold": THRESHOLD})
        for a in summarising
    )
    assert all("the notes were unreadable" in a["feedback"] for a in retries)
    summaries = [e for e in await store.history("n1") if e.kind == "summary"]
    assert summaries and all((e.author, e.keys) == ("summariser", ["notes"]) for e in summaries)


async def test_a_summary_writes_only_the_key_it_was_activated_for(store: BoardStore) -> None:
    """A custom summariser's extra keys are refused with a typed rejection, which goes
    back to it as a rewrite; the other agents' keys stay theirs."""

    @agent("summ")
    async def summ(ctx: Context) -> Output:
        key = ctx.payload["key"]
        condensed = [f"[summary] {len(ctx.board[key])} notes"]
        if ctx.feedback:
            return Output(updates={key: condensed})
        return Output(updates={key: condensed, "verdict": "reject"})  # not its key

    app = App(
        board=Notes,
        agents=[writer_until(9), judge, summ],  # the 9th note crosses: the writer is done
        start=["writer"],
        summariser="summ",
    )
    info = await run(app, store, verdict="approve")
    assert info.status == "active" and await incidents(store, "n1") == []
    state = (await store.read("n1")).data
    assert (state["count"], state["verdict"]) == (9, "approve")
    summs = [a for a in await activations(store, "n1") if a["agent"] == "summ"]
    # each first try (no feedback) is refused; its rewrite carries the refusal and lands
    # (activations started in one millisecond may list in either order: pair by feedback)
    firsts = [a for a in summs if not a["feedback"]]
    rewrites = [a for a in summs if a["feedback"]]
    rejected = [await outcome_of(store, "n1", a["activation_id"]) for a in firsts]
    assert rejected and [o["status"] for o in rejected] == ["rejected"] * len(rejected)
    assert all(o["reason"] == "ownership" for o in rejected)
    redone = [await outcome_of(store, "n1", a["activation_id"]) for a in rewrites]
    assert len(redone) == len(rejected) and all(o["status"] == "committed" for o in redone)
    assert sorted(a["feedback"] for a in rewrites) == sorted(o["message"] for o in rejected)
    assert "may write only 'notes'" in rejected[0]["message"]
    assert "also writes 'verdict' (owned by 'judge')" in rejected[0]["message"]
    history = await store.history("n1")
    summaries = [e for e in history if e.kind == "summary"]
    assert summaries and all(e.keys == ["notes"] for e in summaries)
    assert all(e.author == "writer" for e in history if "count" in e.keys)


def test_a_summary_names_every_key_it_may_not_write() -> None:
    app = notes_app(1)
    proposal = Proposal.updates(
        "summariser", 3, {"notes": ["[summary]"], "count": 0, "verdict": "reject"}
    )
    with pytest.raises(OwnershipError) as caught:
        check_summary(app, proposal, "notes")
    assert str(caught.value) == (
        "a summary by 'summariser' may write only 'notes', the summarisable key it was "
        "activated for; it also writes 'count' (owned by 'writer'), 'verdict' (owned by "
        "'judge'). Propose the condensed 'notes' alone."
    )
    assert (caught.value.author, caught.value.key) == ("summariser", "count")
    with pytest.raises(OwnershipError, match="'count', which is not a summarisable key"):
        check_summary(app, Proposal.updates("summariser", 3, {"count": 0}), "count")
    check_summary(app, Proposal.updates("summariser", 3, {"notes": []}), "notes")


async def test_the_crossing_marker_decides_once_per_crossing(store: BoardStore) -> None:
    """summarise.lua's states: armed, pending while a summarisation of the key is open,
    done when its summary left the key over, re-armed under the threshold or when the
    summarisation died; two replicas deciding at once start one."""
    app = notes_app(1)
    replicas = [Supervisor(app, store, name=f"sup-{i}") for i in range(2)]
    await store.create("m1", app.schema)
    bk = replicas[0].keys.board("m1")
    long, short = [note(n) for n in range(10)], [note(0)]
    version = 0

    async def write(notes: list[str]) -> None:
        nonlocal version
        version = (
            await store.commit("m1", Proposal.updates("writer", version, {"notes": notes}))
        ).version

    async def due(
        author: str = "writer", replica: int = 0, routing: str = ""
    ) -> tuple[list[str], str | None]:
        pipe = store.redis.pipeline(transaction=True)
        routing = routing or f"p{version}"  # the commit's submission
        assert await replicas[replica].follow_up.crossings.queue(
            pipe, bk, ["notes"], author, routing
        )
        [keys] = await pipe.execute()
        marker = await store.redis.hget(bk.loops, "sum:notes")
        return keys, marker and marker.split("|")[0]

    async def summarising(aid: str) -> None:  # what routing records for the activation
        act = Activation(
            activation_id=aid,
            board_id="m1",
            agent="summariser",
            base=version,
            trace_id="t",
            reason="summarise",
            payload={"key": "notes", "threshold": THRESHOLD},
        )
        await store.redis.hset(bk.activations, aid, act.model_dump_json())
        await store.redis.zadd(bk.open, {aid: 0})

    await write(short)
    assert await due() == ([], None)  # under the threshold
    await write(long)
    both = await asyncio.gather(due(replica=0), due(replica=1, routing="other"))
    assert sorted(keys for keys, _ in both) == [[], ["notes"]]  # one replica starts it
    armed_by = (await store.redis.hget(bk.loops, "sum:notes")).split("|")[1]
    assert armed_by == ("p2" if both[0][0] else "other")
    await write([*long, note(10)])
    assert await due() == ([], "pending")  # not open yet: being created
    assert await due(routing=armed_by) == (["notes"], "pending")  # a redelivery: again
    await summarising("a1")
    await write([*long, note(11)])
    assert await due() == ([], "pending")  # running: not again
    assert await due("summariser") == ([], "done")  # its summary is still over
    await store.redis.zrem(bk.open, "a1")
    await write([*long, note(12)])
    assert await due() == ([], "done")  # its own output is not summarised again
    await write([*long, *(note(n) for n in range(20, 32))])  # another threshold past it
    assert await due() == (["notes"], "pending")  # so an over-long summary is no way out
    await write(short)
    assert await due() == ([], None)  # under: re-armed
    await write(long)
    assert await due() == (["notes"], "pending")  # the next crossing
    await write([*long, note(13)])
    assert await due() == ([], "pending")
    # a summarisation that died (timed out, say) and was never redone: re-armed once
    # its activation is overdue, so a resumed board does not grow for ever
    marker = await store.redis.hget(bk.loops, "sum:notes")
    overdue = int(time.time() * 1000) - STARTING_MS - 1
    await store.redis.hset(bk.loops, "sum:notes", marker.rsplit("|", 1)[0] + f"|{overdue}")
    await write([*long, note(14)])
    assert await due() == (["notes"], "pending")
    assert await due(routing="later") == ([], "pending")  # and once


@pytest.mark.real_redis
@pytest.mark.slow
async def test_summarisation_with_two_supervisor_replicas_as_processes(redis_server: Any) -> None:
    """The writer and the summariser as agent processes, two ``blackboard supervisor``
    replicas routing their submissions: the same one summarisation per crossing."""
    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client)
    env = {**os.environ, "PYTHONPATH": HELPERS, "BLACKBOARD_REDIS_URL": redis_server.url}
    spec = ("--app", "summapps:notes_app")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "blackboard", *args, *spec],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in (
            ("supervisor", "--name", "sup-1"),
            ("supervisor", "--name", "sup-2"),
            ("agent", "writer"),
            ("agent", "summariser"),
        )
    ]
    try:
        sup = Supervisor(summapps.notes_app, store)
        await sup.publish()
        for p in procs:  # each says so right before it consumes
            assert p.stderr is not None and "running" in p.stderr.readline()
        await sup.start("p1")
        bk = sup.keys.board("p1")

        async def settled() -> bool:
            pipe = client.pipeline(transaction=True)
            pipe.hget(bk.state, "count")
            pipe.zcard(bk.open)
            pipe.hlen(bk.outbox)
            pipe.hget(bk.meta, "status")
            count, still_open, outbox, status = await pipe.execute()
            return status != "active" or (
                count == str(summapps.TOTAL) and still_open == 0 and outbox == 0
            )

        deadline = time.monotonic() + 60
        while not await settled():
            assert time.monotonic() < deadline, "the board did not settle in 60 s"
            await asyncio.sleep(0.05)
        assert (await store.info("p1")).status == "active"
        assert await incidents(store, "p1") == []
        changes = await notes_by_version(store, "p1")
        summaries = [kind for _, kind, _ in changes].count("summary")
        summarising = [a for a in await activations(store, "p1") if a["reason"] == "summarise"]
        assert len(summarising) == summaries == crossings(changes) > 1
        final = await store.read_key("p1", "notes")
        assert final[-1] == summapps.note(summapps.TOTAL - 1)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(20)
            if p.stderr is not None:
                p.stderr.close()
        await store.close()


class Texts(BaseModel):
    notes: Annotated[list[str], Key("writer", summarisable=True)] = []
    text: Annotated[str, Key("writer", summarisable=True)] = ""


async def test_a_summary_lands_on_top_of_what_was_appended_since(store: BoardStore) -> None:
    await store.create("o1", BoardSchema.from_model(Texts))

    async def write(base: int, **values: Any) -> int:
        return (await store.commit("o1", Proposal.updates("writer", base, values))).version

    v1 = await write(0, notes=["a", "b", "c"], text="one. two. ")
    summary = Proposal.updates("summariser", v1, {"notes": ["[summary of 3]"]})
    on_top = OnTop(store, "o1", summary, "notes")
    assert await on_top.proposal() == summary  # nothing changed since its base
    v2 = await write(v1, notes=["a", "b", "c", "d"])
    v3 = await write(v2, notes=["a", "b", "c", "d", "e"])
    moved = await on_top.proposal()
    assert (moved.base, moved.patch) == (
        v3,
        [{"op": "add", "path": "/notes", "value": ["[summary of 3]", "d", "e"]}],
    )
    assert not on_top.stuck
    text = OnTop(store, "o1", Proposal.updates("summariser", v3, {"text": "[2 lines]"}), "text")
    v4 = await write(v3, text="one. two. three.")
    assert (await text.proposal()).patch[0]["value"] == "[2 lines]three."
    await write(v4, notes=["x"])  # rewritten, not appended to: it cannot be moved
    assert await on_top.proposal() == summary and on_top.stuck
    conflict = ConflictError("o1", v1, {"notes": v4 + 1})
    assert not on_top.may_retry(conflict)
    patched = Proposal(author="summariser", base=v1, patch=[{"op": "remove", "path": "/notes/0"}])
    odd = OnTop(store, "o1", patched, "notes")
    assert await odd.proposal() == patched and odd.stuck  # not one whole value
    fresh = OnTop(store, "o1", summary, "notes")
    assert fresh.may_retry(conflict) and not fresh.may_retry(
        ConflictError("o1", v1, {"notes": 9, "text": 9})
    )
