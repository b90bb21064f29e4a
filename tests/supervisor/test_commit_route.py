"""The combined commit-and-route script (proposals whose routing is known before the
commit): what it records must equal what the general path records."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Annotated, Any

import pytest
from bbtest import counting, outcome_of, run_until
from blackboard.agents import Context, Output, agent
from blackboard.supervisor import Supervisor
from blackboard.supervisor.fast_paths import ATOMIC, GENERAL
from blackboard.supervisor.routing import Routing
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError

from blackboard import App, BoardStore, Key, Limits, Settings, connect
from blackboard.errors import ConfigError, StoreUnavailable
from blackboard.keys import GlobalKeys
from blackboard.queues import submit
from blackboard.records import Handoff, Outcome, Submission
from blackboard.store import PreparedCommit


class Pair(BaseModel):
    x: Annotated[int, Key("a")] = 0
    y: Annotated[int, Key("b")] = 0


@agent("a", handoffs=["b"])
async def a(ctx: Context) -> Output:
    return Output()


@agent("b")
async def b(ctx: Context) -> Output:
    return Output()


APP = App(board=Pair, agents=[a, b])


def blind(board: str, pid: str, base: int, value: int) -> Submission:
    """a's proposal to set x, which needs no read of the board."""
    return Submission(
        kind="proposal",
        board_id=board,
        author="a",
        base=base,
        proposal_id=pid,
        patch=[{"op": "replace", "path": "/x", "value": value}],
    )


async def test_commit_and_handoff_in_one_script(store: BoardStore) -> None:
    sup = Supervisor(APP, store)
    assert (
        sup.fast.path(
            Submission(
                kind="proposal",
                board_id="p",
                author="a",
                patch=[{"op": "add", "path": "/x", "value": 1}],
            )
        )
        == ATOMIC
    )
    await store.create("p", APP.schema)
    sub = Submission(
        kind="proposal",
        board_id="p",
        author="a",
        base=0,
        proposal_id="p1",
        patch=[{"op": "replace", "path": "/x", "value": 5}],
        handoff=Handoff(to="b", reason="yours"),
        trace_id="t1",
    )
    outcome = await sup.handle(sub)
    assert outcome == Outcome(status="committed", version=1, keys=["x"])
    recorded = json.loads(await store.redis.hget(store.keys("p").results, "p1"))
    assert Outcome.model_validate(recorded) == outcome
    [act] = [
        json.loads(v) for v in (await store.redis.hgetall(store.keys("p").activations)).values()
    ]
    assert (act["agent"], act["base"], act["reason"], act["trace_id"]) == ("b", 1, "handoff", "t1")
    assert (await store.info("p")).compliant == 1
    queued = await store.redis.xrange(f"{store.settings.key_prefix}:queue:b")
    assert [f["activation"] for _, f in queued] == [act["activation_id"]]
    again = await sup.handle(sub)  # redelivery: the same answer, nothing new
    assert again.version == 1 and await store.version("p") == 1
    assert len(await store.redis.xrange(f"{store.settings.key_prefix}:queue:b")) == 1


async def test_refused_commit_falls_back_and_is_recorded(store: BoardStore) -> None:
    sup = Supervisor(APP, store)
    await store.create("p", APP.schema)
    await sup.handle(blind("p", "new", 0, 1))
    outcome = await sup.handle(blind("p", "old", 0, 2))  # stale: x changed after 0
    assert (outcome.status, outcome.reason) == ("rejected", "conflict")
    assert "changed after base version 0" in outcome.message
    assert await store.read_key("p", "x") == 1
    acts = [
        json.loads(v) for v in (await store.redis.hgetall(store.keys("p").activations)).values()
    ]
    assert [(x["agent"], x["reason"]) for x in acts] == [("a", "rewrite")]


async def test_routing_arguments_past_the_unpack_limit_are_copied_in_a_loop(
    store: BoardStore,
) -> None:
    """The script copies route.lua's arguments with unpack, whose results Lua caps (the
    embedded fakeredis's below 9,000); a longer list (9,000 handoff pairs here) takes a
    loop instead, and commits and routes the same."""
    sup = Supervisor(APP, store)
    await store.create("p", APP.schema)
    proposal = blind("p", "p1", 0, 7).proposal([])
    prepared = await store.prepare("p", proposal)
    assert isinstance(prepared, PreparedCommit)
    pairs = [f"a>n{i}" for i in range(9000)]
    step = Routing(routing_id="p1", version=0, reset_rewrite="a", pairs=pairs)
    commit, routed, _ = await sup.router.commit_and_route("p", prepared.keys, prepared.args, step)
    assert routed is not None and (routed.outcome, routed.status) == ("ok", "active")
    assert commit[:2] == ["ok", "1"] and await store.read_key("p", "x") == 7
    loops = await store.redis.hgetall(store.keys("p").loops)
    window = 8 * APP.limits.loop_threshold  # the board's recent handoffs, counted
    assert [e.split("=")[0] for e in loops["recent"].split()] == pairs[-window:]
    recorded = json.loads(await store.redis.hget(store.keys("p").results, "p1"))
    assert (recorded["status"], recorded["version"]) == ("committed", 1)


async def test_a_commit_is_routed_only_under_its_own_proposal_id(store: BoardStore) -> None:
    """The script records a commit's routing under the proposal's id (it takes it from
    the commit): a step named otherwise is refused before anything is sent."""
    sup = Supervisor(APP, store)
    await store.create("p", APP.schema)
    prepared = await store.prepare("p", blind("p", "p1", 0, 7).proposal([]))
    assert isinstance(prepared, PreparedCommit)
    step = Routing(routing_id="other", version=0, reset_rewrite="a")
    with pytest.raises(ConfigError, match="routing id 'other' is not the committed proposal's"):
        await sup.router.commit_and_route("p", prepared.keys, prepared.args, step)


# -- a consumer batch in waves --------------------------------------------------------


async def consume(sup: Supervisor, subs: list[Submission], until: Any) -> list[int]:
    """Put ``subs`` on the stream, run the supervisor until ``until()`` holds, and return
    the sizes of the pipelines its Pipeliner sent."""
    for s in subs:
        await submit(sup.redis, sup.keys.prefix, s)
    sizes = counting(sup.router.pipeliner)
    await run_until(sup, until)
    return sizes


async def settled(store: BoardStore, boards: dict[str, int]) -> bool:
    """Every board has as many recorded outcomes as expected, and nothing is pending."""
    for board, n in boards.items():
        if await store.redis.hlen(store.keys(board).results) < n:
            return False
    stream = GlobalKeys(store.settings.key_prefix).submissions("a", 0)
    return (await store.redis.xpending(stream, "supervisor"))["pending"] == 0


async def test_a_batch_commits_each_boards_next_proposal_in_one_round_trip(
    store: BoardStore,
) -> None:
    sup = Supervisor(APP, store)
    boards = ["p", "q", "r"]
    for board in boards:
        await store.create(board, APP.schema)
    subs = [blind(b, f"{b}{i}", i, 10 * i + n) for i in range(3) for n, b in enumerate(boards)]
    await store.redis.script_load(sup.router.commit_route_script.script)  # no first-use reload
    sizes = await consume(sup, subs, lambda: settled(store, dict.fromkeys(boards, 3)))
    # three waves of three commits, then one XACK for all nine entries
    assert sizes == [3, 3, 3, 1]
    for n, board in enumerate(boards):
        assert await store.read_key(board, "x") == 20 + n
        log = await store.history(board)
        assert [e.proposal_id for e in log] == [f"{board}{i}" for i in range(3)]
        assert [e.version for e in log] == [1, 2, 3]


def trace_batches(sup: Supervisor) -> list[str]:
    """Record, in order, each batch worked on ("batch of N" .. "done") and each read of
    new entries: "read", or "read ahead" while a batch is being worked on."""
    events: list[str] = []
    work, take_new = sup.intake.work, sup.queues[0].take_new

    async def batch(queue: Any, deliveries: Any) -> None:
        if deliveries:  # (an empty one: the stream was empty)
            events.append(f"batch of {len(deliveries)}")
        await work(queue, deliveries)
        if deliveries:
            events.append("done")

    async def read(*a: Any, **k: Any) -> Any:
        busy = events and events[-1] != "done"
        events.append("read ahead" if busy else "read")
        return await take_new(*a, **k)

    sup.intake.work = batch  # type: ignore[method-assign]
    sup.queues[0].take_new = read  # type: ignore[method-assign]
    return events


async def test_a_backlog_s_next_batch_is_read_while_the_last_is_worked_on(
    store: BoardStore,
) -> None:
    """With more waiting than a batch holds, the next batch is read (new entries only)
    while the last one is worked on, and worked on only once the last is acknowledged:
    each board's proposals still commit in order, and nothing stays pending. A batch
    that is not full means no backlog: nothing is read ahead of it."""
    sup = Supervisor(APP, store)
    boards = ["p", "q", "r"]
    for board in boards:
        await store.create(board, APP.schema)
    subs = [blind(b, f"{b}{i}", i, 10 * i + n) for i in range(4) for n, b in enumerate(boards)]
    for s in subs:
        await submit(sup.redis, sup.keys.prefix, s)
    events = trace_batches(sup)
    sup.queues[0]._next_reclaim = float("inf")  # reclaiming is not due in this test
    await run_until(sup, lambda: settled(store, dict.fromkeys(boards, 4)), batch=5)
    assert events[:10] == [
        "read",
        *("batch of 5", "read ahead", "done") * 2,
        *("batch of 2", "done"),
        "read",
    ]
    for n, board in enumerate(boards):
        assert await store.read_key(board, "x") == 30 + n
        assert [e.proposal_id for e in await store.history(board)] == [
            f"{board}{i}" for i in range(4)
        ]


@pytest.mark.parametrize("why", ["reclaiming is due", "entries are reclaimed soon"])
async def test_nothing_is_read_ahead_when_reclaiming_could_interfere(
    store: BoardStore, why: str
) -> None:
    """Reclaiming due: the next read must reclaim first. A short reclaim threshold: a
    batch waiting behind another could be claimed by another consumer meanwhile."""
    sup = Supervisor(APP, store)
    await store.create("p", APP.schema)
    for i in range(6):
        await submit(sup.redis, sup.keys.prefix, blind("p", f"p{i}", i, i + 1))
    events = trace_batches(sup)
    queue = sup.queues[0]
    if why == "reclaiming is due":
        queue.reclaim_due = lambda: True  # type: ignore[method-assign]
        queue._next_reclaim = float("inf")  # (take itself does not reclaim)
    else:
        queue.claim_idle_ms = 1000
    await run_until(sup, lambda: settled(store, {"p": 6}), batch=2)
    assert "read ahead" not in events
    assert events.count("batch of 2") == 3
    assert [e.proposal_id for e in await store.history("p")] == [f"p{i}" for i in range(6)]


async def test_after_an_outage_what_was_read_goes_first_in_stream_order(
    store: BoardStore,
) -> None:
    """An outage breaks a batch with the next one already read ahead: once Redis is
    back, the consumer works on what it holds (the broken batch, then the one read
    ahead) before anything new, so every board's proposals commit in order. Working
    on the batch read ahead first would find each board a version behind and refuse
    them all."""
    sup = Supervisor(APP, store)
    boards = ["p", "q", "r", "s"]
    for board in boards:
        await store.create(board, APP.schema)
    for i in range(3):
        for b in boards:
            await submit(sup.redis, sup.keys.prefix, blind(b, f"{b}{i}", i, i + 1))
    lanes = sup.intake.lanes

    async def first_fails(*a: Any, **k: Any) -> Any:
        if sup.intake.lanes is first_fails:  # once
            sup.intake.lanes = lanes  # type: ignore[method-assign]
            await asyncio.sleep(0.05)  # the batch read ahead comes in meanwhile
            raise RedisConnectionError("connection lost (injected)")
        return await lanes(*a, **k)

    sup.intake.lanes = first_fails  # type: ignore[method-assign]
    sup.queues[0]._next_reclaim = float("inf")
    await run_until(sup, lambda: settled(store, dict.fromkeys(boards, 3)), batch=4)
    for board in boards:
        assert [e.proposal_id for e in await store.history(board)] == [
            f"{board}{i}" for i in range(3)
        ]
        outcomes = await store.redis.hvals(store.keys(board).results)
        assert {Outcome.model_validate_json(o).status for o in outcomes} == {"committed"}


async def test_a_consumer_cancelled_with_a_batch_being_read_ahead_cancels_that_read(
    store: BoardStore,
) -> None:
    sup = Supervisor(APP, store)
    await store.create("p", APP.schema)
    for i in range(4):
        await submit(sup.redis, sup.keys.prefix, blind("p", f"p{i}", i, i + 1))
    queue = sup.queues[0]
    queue._next_reclaim = float("inf")
    take_new = queue.take_new
    reading, ended = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def slow_ahead(*a: Any, **k: Any) -> Any:
        if k.get("block_ms") is not None:  # a plain take's read
            return await take_new(*a, **k)
        reading.set()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            ended.set()

    work = sup.intake.work

    async def batch(q: Any, deliveries: Any) -> None:
        await work(q, deliveries)
        done.append(f"batch of {len(deliveries)}")
        await asyncio.Event().wait()  # the consumer stays in its first batch

    queue.take_new = slow_ahead  # type: ignore[method-assign]
    sup.intake.work = batch  # type: ignore[method-assign]
    task = asyncio.create_task(sup.run(asyncio.Event(), batch=2))
    async with asyncio.timeout(5):
        await reading.wait()
        while not done:
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set()  # the read ahead was cancelled, not left running
    assert await store.version("p") == 2  # the first batch; the rest was never read


async def test_a_stop_works_on_the_batch_read_ahead_and_reads_no_more(
    store: BoardStore,
) -> None:
    """Stopped while working on a batch with the next one read, the consumer works on
    that one too before it returns: nothing it read is left pending (to wait for a
    reclaim), and what it did not read is left for the next run."""
    sup = Supervisor(APP, store)
    boards = ["p", "q", "r", "s"]
    for board in boards:
        await store.create(board, APP.schema)
    subs = [blind(b, f"{b}{i}", i, i + 1) for i in range(3) for b in boards]
    for s in subs:
        await submit(sup.redis, sup.keys.prefix, s)
    stop = asyncio.Event()
    work = sup.intake.work
    sizes: list[int] = []

    async def batch(queue: Any, deliveries: Any) -> None:
        if queue is sup.queues[0]:  # (the other streams: those of b and the operators)
            sizes.append(len(deliveries))
            stop.set()  # while the first batch is worked on
        await work(queue, deliveries)

    sup.intake.work = batch  # type: ignore[method-assign]
    sup.queues[0]._next_reclaim = float("inf")  # reclaiming is not due in this test
    async with asyncio.timeout(10):
        await sup.run(stop, batch=4)
    assert sizes == [4, 4]  # the first batch and the one read ahead; no third read
    stream = GlobalKeys(store.settings.key_prefix).submissions("a", 0)
    assert (await store.redis.xpending(stream, "supervisor"))["pending"] == 0
    assert [await store.version(b) for b in boards] == [2, 2, 2, 2]
    sup.intake.work = work  # type: ignore[method-assign]
    await consume(sup, [], lambda: settled(store, dict.fromkeys(boards, 3)))
    assert [await store.version(b) for b in boards] == [3, 3, 3, 3]


async def test_many_boards_go_in_two_lanes_whose_waves_overlap(store: BoardStore) -> None:
    sup = Supervisor(APP, store)
    boards = [f"b{n}" for n in range(8)]
    for board in boards:
        await store.create(board, APP.schema)
    subs = [blind(b, f"{b}-{i}", i, 10 * i + n) for i in range(3) for n, b in enumerate(boards)]
    await store.redis.script_load(sup.router.commit_route_script.script)
    spans: list[tuple[str, frozenset[str]]] = []
    send = sup.intake.send_wave

    async def traced(wave: Any) -> Any:
        lane = frozenset(planned.sub.board_id for _, planned in wave)
        spans.append(("sent", lane))
        try:
            return await send(wave)
        finally:
            spans.append(("answered", lane))

    sup.intake.send_wave = traced  # type: ignore[method-assign]
    events: list[str] = []  # round trips written, proposals settled, in order
    pipeline, settle = sup.router.pipeliner._pipeline, sup.intake.settle_in_wave

    async def written(commands: Any) -> Any:
        events.append("written")
        return await pipeline(commands)

    async def settling(*a: Any, **k: Any) -> Any:
        events.append("settled")
        return await settle(*a, **k)

    sup.router.pipeliner._pipeline = written  # type: ignore[method-assign]
    sup.intake.settle_in_wave = settling  # type: ignore[method-assign]
    sizes = await consume(sup, subs, lambda: settled(store, dict.fromkeys(boards, 3)))
    # the second lane's wave goes out before the first lane's is settled
    assert events[:2] == ["written", "written"]
    # two lanes of four boards, three waves each, then one XACK for all 24 entries
    assert sizes == [4] * 6 + [1]
    lanes = {lane for _, lane in spans}
    assert len(lanes) == 2 and set().union(*lanes) == set(boards)
    assert sum(len(lane) for lane in lanes) == 8  # disjoint: a board keeps its order
    for n, board in enumerate(boards):
        assert await store.read_key(board, "x") == 20 + n
        assert [e.proposal_id for e in await store.history(board)] == [
            f"{board}-{i}" for i in range(3)
        ]
    if not type(store.redis).__module__.startswith("fakeredis"):
        # a real round trip suspends: the second lane is sent before the first's answer
        first, second = spans[0][1], next(lane for _, lane in spans if lane != spans[0][1])
        assert spans.index(("sent", second)) < spans.index(("answered", first))


async def test_a_wave_reads_new_boards_declarations_together(store: BoardStore) -> None:
    boards = [f"n{n}" for n in range(5)]
    for board in boards:
        await store.create(board, APP.schema)
    fresh = BoardStore(store.redis, store.settings)  # a supervisor that never saw them
    sup = Supervisor(APP, fresh)
    one_by_one: list[str] = []
    hget = fresh.redis.hget

    async def recording(key: str, field: str) -> Any:
        if field == "decl":
            one_by_one.append(key)
        return await hget(key, field)

    fresh.redis.hget = recording  # type: ignore[method-assign]
    try:
        subs = [blind(b, f"{b}-0", 0, 1) for b in boards]
        await consume(sup, subs, lambda: settled(store, dict.fromkeys(boards, 1)))
    finally:
        fresh.redis.hget = hget  # type: ignore[method-assign]
    assert one_by_one == []  # all five read in warm()'s one pipeline
    assert [await store.version(b) for b in boards] == [1] * 5


async def test_a_board_leaves_the_waves_at_a_proposal_the_script_refuses(
    store: BoardStore,
) -> None:
    """p's stale proposal is refused in a wave: the general path rejects it (recording
    why and asking for a rewrite), then p's later proposal commits after it; q, whose
    first proposal is not blind, goes the general path from the start, in order."""
    sup = Supervisor(APP, store)
    for board in ("p", "q"):
        await store.create(board, APP.schema)
    subs = [
        blind("p", "p0", 0, 1),
        Submission(
            kind="proposal",
            board_id="q",
            author="a",
            proposal_id="q0",
            patch=[
                {"op": "test", "path": "/x", "value": 0},
                {"op": "add", "path": "/x", "value": 7},
            ],
        ),
        blind("p", "stale", 0, 2),
        blind("q", "q1", 1, 8),
        blind("p", "p1", 1, 3),
    ]
    await consume(sup, subs, lambda: settled(store, {"p": 3, "q": 2}))
    assert [e.proposal_id for e in await store.history("p")] == ["p0", "p1"]
    assert [e.proposal_id for e in await store.history("q")] == ["q0", "q1"]
    assert await store.read_key("p", "x") == 3 and await store.read_key("q", "x") == 8
    stale = await outcome_of(store, "p", "stale")
    assert (stale["status"], stale["reason"]) == ("rejected", "conflict")
    # the rewrite it asked for was answered by p1's commit, which came after it
    loops = await store.redis.hgetall(store.keys("p").loops)
    assert "rw:a" not in loops


async def test_a_board_busy_in_this_process_is_not_committed_around(store: BoardStore) -> None:
    """A board whose lock a local submission holds waits for it; other boards do not."""
    sup = Supervisor(APP, store)
    for board in ("p", "q"):
        await store.create(board, APP.schema)
    busy = asyncio.Event()
    release = asyncio.Event()

    async def local_work() -> None:
        async with sup.boards.serial("p"):
            busy.set()
            await release.wait()

    holder = asyncio.create_task(local_work())
    await busy.wait()

    async def q_done_then_release() -> bool:
        if await store.version("q") == 1 and not release.is_set():
            assert await store.version("p") == 0  # still waiting for the lock
            release.set()
        return await settled(store, {"p": 1, "q": 1})

    await consume(sup, [blind("p", "p0", 0, 1), blind("q", "q0", 0, 1)], q_done_then_release)
    await holder
    assert await store.version("p") == 1 and await store.version("q") == 1


def test_the_one_script_decision_is_kept_per_shape_not_per_author(store: BoardStore) -> None:
    """The decision is cached by author, operations, paths and handoff target: a
    submission differing in any of them is decided afresh."""
    sup = Supervisor(APP, store)

    def sub(path: str = "/x", op: str = "replace", to: str | None = "b") -> Submission:
        return Submission(
            kind="proposal",
            board_id="p",
            author="a",
            patch=[{"op": op, "path": path, "value": 1}],
            handoff=Handoff(to=to, reason="r") if to else None,
        )

    assert sup.fast.path(sub()) == ATOMIC
    assert sup.fast.path(sub(to="a")) == GENERAL  # a may not hand off to a
    assert sup.fast.path(sub(path="/x/deep")) == GENERAL  # not blind
    assert sup.fast.path(sub(op="test")) == GENERAL  # reads the board
    assert sup.fast.path(sub(to=None)) == ATOMIC
    assert sup.fast.path(sub()) == ATOMIC  # and the first answer still holds


async def test_a_consumer_cancelled_while_planning_a_wave_frees_the_boards(
    store: BoardStore,
) -> None:
    """Cancelled while planning q (say, waiting on a first read of its declaration),
    with p already held for the wave: both boards are free afterwards."""
    sup = Supervisor(APP, store)
    for board in ("p", "q"):
        await store.create(board, APP.schema)
        await submit(sup.redis, sup.keys.prefix, blind(board, f"{board}0", 0, 1))
    planning_q = asyncio.Event()
    prepare = store.prepare

    async def slow_for_q(board_id: str, *a: Any, **k: Any) -> Any:
        if board_id == "q":
            planning_q.set()
            await asyncio.Event().wait()  # until cancelled
        return await prepare(board_id, *a, **k)

    store.prepare = slow_for_q  # type: ignore[method-assign]
    task = asyncio.create_task(sup.run(asyncio.Event()))
    await planning_q.wait()
    assert "p" in sup.boards.locks  # held for the wave being planned
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sup.boards.locks == {}
    store.prepare = prepare  # type: ignore[method-assign]
    async with asyncio.timeout(5), sup.boards.serial("p"), sup.boards.serial("q"):
        pass


async def test_an_outage_in_one_lane_stops_both_and_frees_every_board(
    store: BoardStore,
) -> None:
    """The first lane's round trip fails with an outage: the outage reaches the
    consumer (which backs off and retries), no board stays held, and nothing is
    acknowledged; once Redis answers again every proposal commits, once."""
    sup = Supervisor(APP, store)
    boards = [f"b{n}" for n in range(8)]
    for board in boards:
        await store.create(board, APP.schema)
    subs = [blind(b, f"{b}-{i}", i, i + 1) for i in range(2) for b in boards]
    send = sup.intake.send_wave
    failed: list[frozenset[str]] = []

    async def first_fails(wave: Any) -> Any:
        if not failed:
            failed.append(frozenset(planned.sub.board_id for _, planned in wave))
            raise RedisConnectionError("connection lost (injected)")
        return await send(wave)

    sup.intake.send_wave = first_fails  # type: ignore[method-assign]
    queue = sup.queues[0]
    for s in subs:
        await submit(sup.redis, sup.keys.prefix, s)
    deliveries = await queue.take(sup.name, count=100, block_ms=10)
    by_board: dict[str, Any] = {}
    for d in deliveries:
        sub = Submission.model_validate_json(d.fields["s"])
        by_board.setdefault(sub.board_id, deque()).append((d, sub))
    batch: list[Any] = []
    with pytest.raises(RedisConnectionError, match="injected"):
        await sup.intake.lanes(queue, by_board, batch)
    assert len(failed[0]) == 4  # one lane's boards
    assert sup.boards.locks == {}
    stream = GlobalKeys(store.settings.key_prefix).submissions("a", 0)
    assert (await store.redis.xpending(stream, "supervisor"))["pending"] == len(subs)
    for board in failed[0]:
        assert await store.version(board) == 0  # its wave never reached Redis
    # Redis is back: the pending entries are taken again and every board ends at 2.
    sup.queues[0].claim_idle_ms = 0
    await consume(sup, [], lambda: settled(store, dict.fromkeys(boards, 2)))
    for board in boards:
        assert [e.proposal_id for e in await store.history(board)] == [f"{board}-0", f"{board}-1"]


@pytest.mark.real_only
async def test_a_wave_waits_for_replicas_once(redis_servers: Any) -> None:
    """With wait_replicas, one WAIT follows a wave's scripts on their connection (not
    one per board, one after the other); with no replica, every commit still lands."""
    server = redis_servers()
    store = BoardStore(connect(server.url), Settings(wait_replicas=1, wait_timeout_ms=20))
    sup = Supervisor(APP, store)
    boards = [f"b{i}" for i in range(8)]
    for board in boards:
        await store.create(board, APP.schema)
    waits: list[int] = []
    execute = sup.router.pipeliner.execute

    async def counted(*commands: Any, **k: Any) -> Any:
        waits.append(sum(1 for c in commands if c[1] and c[1][0] == "WAIT"))
        return await execute(*commands, **k)

    sup.router.pipeliner.execute = counted  # type: ignore[method-assign]
    await consume(
        sup,
        [blind(b, f"{b}-0", 0, 1) for b in boards],
        lambda: settled(store, dict.fromkeys(boards, 1)),
    )
    assert waits[0] == 1  # the wave: eight scripts, one WAIT
    for board in boards:
        assert (await outcome_of(store, board, f"{board}-0"))["status"] == "committed"
    await store.close()


async def test_a_wave_whose_round_trip_fails_is_handled_one_by_one(store: BoardStore) -> None:
    """A wave's round trip that raises (not an outage) does not stop the supervisor:
    each of its proposals goes the general path, and commits once."""
    sup = Supervisor(APP, store)
    for board in ("p", "q"):
        await store.create(board, APP.schema)
    execute = sup.router.pipeliner.execute
    failed: list[int] = []

    async def fails_once(*commands: Any, **k: Any) -> Any:
        if not failed:
            failed.append(len(commands))
            raise InvalidResponse("garbled reply")
        return await execute(*commands, **k)

    sup.router.pipeliner.execute = fails_once  # type: ignore[method-assign]
    subs = [blind("p", "p0", 0, 1), blind("q", "q0", 0, 2)]
    await consume(sup, subs, lambda: settled(store, {"p": 1, "q": 1}))
    assert failed == [2]  # the wave's two scripts
    assert await store.read_key("p", "x") == 1 and await store.read_key("q", "x") == 2
    assert await store.version("p") == 1 and await store.version("q") == 1


async def test_an_error_reply_in_a_wave_leaves_only_that_proposal_pending(
    store: BoardStore, caplog: pytest.LogCaptureFixture
) -> None:
    """One board's script answers with an error: that proposal is logged and left
    pending (to be redelivered), uncommitted; the other board's commits and is acked."""
    sup = Supervisor(APP, store)
    for board in ("p", "q"):
        await store.create(board, APP.schema)
    execute = sup.router.pipeliner.execute

    async def p_fails(*commands: Any, **k: Any) -> Any:
        if len(commands) == 2 and commands[0][0] == "script":  # the wave: p's, then q's
            return [ResponseError("ERR p's script broke"), *await execute(*commands[1:], **k)]
        return await execute(*commands, **k)

    sup.router.pipeliner.execute = p_fails  # type: ignore[method-assign]
    stream = GlobalKeys(store.settings.key_prefix).submissions("a", 0)

    async def q_done() -> bool:
        if not await store.redis.hlen(store.keys("q").results):
            return False
        return (await store.redis.xpending(stream, "supervisor"))["pending"] == 1

    with caplog.at_level("ERROR"):
        await consume(sup, [blind("p", "p0", 0, 1), blind("q", "q0", 0, 2)], q_done)
    assert "submission p0 on board p failed" in caplog.text
    assert await store.redis.hget(store.keys("p").results, "p0") is None  # not recorded
    assert await store.version("p") == 0
    assert await store.read_key("q", "x") == 2
    [entry] = await store.redis.xpending_range(stream, "supervisor", "-", "+", 10)
    [(_, fields)] = await store.redis.xrange(stream, entry["message_id"], entry["message_id"])
    assert Submission.model_validate_json(fields["s"]).proposal_id == "p0"


async def test_a_flush_sends_each_streams_acks_as_one_xack_after_every_dispatch(
    store: BoardStore,
) -> None:
    sup = Supervisor(APP, store)
    stream = GlobalKeys(store.settings.key_prefix).submissions("a", 0)
    queue = f"{store.settings.key_prefix}:queue:b"
    await store.redis.xgroup_create(stream, "g", id="0", mkstream=True)
    await store.redis.xgroup_create(queue, "w", id="0", mkstream=True)
    ids = [await store.redis.xadd(stream, {"n": str(n)}) for n in range(3)]
    await store.redis.xreadgroup("g", "c", {stream: ">"})
    sent: list[Any] = []
    execute = sup.router.pipeliner.execute

    async def recording(*commands: Any, **kwargs: Any) -> list[Any]:
        sent.extend(commands)
        return await execute(*commands, **kwargs)

    sup.router.pipeliner.execute = recording  # type: ignore[method-assign]
    batch: list[Any] = [
        ("xadd", (queue, {"activation": "a0"}), {}),
        ("xack", (stream, "g", ids[0]), {}),
        ("xadd", (queue, {"activation": "a1"}), {}),
        ("xack", (stream, "g", ids[1]), {}),
        ("xack", (stream, "g", ids[2]), {}),
    ]
    await sup.router.flush(batch)
    assert batch == []
    assert [(name, args) for name, args, _ in sent] == [
        ("xadd", (queue, {"activation": "a0"})),
        ("xadd", (queue, {"activation": "a1"})),
        ("xack", (stream, "g", *ids)),
    ]
    assert (await store.redis.xpending(stream, "g"))["pending"] == 0
    assert [f["activation"] for _, f in await store.redis.xrange(queue)] == ["a0", "a1"]


async def test_a_dispatch_redis_refuses_keeps_the_activation_and_its_submission(
    store: BoardStore,
) -> None:
    """b's queue cannot take the handoff (here: a key of the wrong type; in life, say,
    Redis out of memory): the commit stands, the activation stays in the outbox, the
    submission stays pending, and the consumer goes on with other boards. Once the
    queue takes entries again, the redelivered submission dispatches it, once."""
    sup = Supervisor(APP, store)
    for board in ("p", "q"):
        await store.create(board, APP.schema)
    queue = f"{store.settings.key_prefix}:queue:b"
    await store.redis.set(queue, "not a stream")
    handoff = blind("p", "p0", 0, 1).model_copy(update={"handoff": Handoff(to="b")})
    stream = GlobalKeys(store.settings.key_prefix).submissions("a", 0)

    async def committed_but_pending() -> bool:
        done = await store.redis.hlen(store.keys("q").results) == 1
        return done and await store.version("p") == 1

    await consume(sup, [handoff, blind("q", "q0", 0, 1)], committed_but_pending)
    assert (await store.redis.xpending(stream, "supervisor"))["pending"] == 1
    [aid] = await store.redis.hkeys(store.keys("p").outbox)
    await store.redis.delete(queue)  # the queue takes entries again
    sup.queues[0].claim_idle_ms = 0  # redeliver at once

    async def dispatched() -> bool:
        pending = (await store.redis.xpending(stream, "supervisor"))["pending"]
        return pending == 0 and not await store.redis.hlen(store.keys("p").outbox)

    await consume(sup, [], dispatched)
    assert [f["activation"] for _, f in await store.redis.xrange(queue)] == [aid]
    assert await store.version("p") == 1 and await store.version("q") == 1


async def test_a_refused_dispatch_outside_a_batch_is_raised_and_kept_in_the_outbox(
    store: BoardStore,
) -> None:
    sup = Supervisor(APP, store)
    await store.create("p", APP.schema)
    queue = f"{store.settings.key_prefix}:queue:b"
    await store.redis.set(queue, "not a stream")
    sub = blind("p", "p0", 0, 1).model_copy(update={"handoff": Handoff(to="b")})
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await sup.handle(sub)  # nothing collected: the caller hears it
    assert await store.version("p") == 1  # the commit stands
    [aid] = await store.redis.hkeys(store.keys("p").outbox)
    await store.redis.delete(queue)
    await sup.router.dispatch("p", await sup.router.pending("p"))  # as resume does
    assert [f["activation"] for _, f in await store.redis.xrange(queue)] == [aid]
    assert await store.redis.hlen(store.keys("p").outbox) == 0


@pytest.mark.real_only
async def test_a_commit_redis_refuses_is_reported_as_the_store_unavailable(
    redis_servers: Any,
) -> None:
    """Out of memory on the one-script path: an outage (the consumer backs off and
    retries), as on the general path, and nothing is written."""
    store = BoardStore(connect(redis_servers().url))
    sup = Supervisor(APP, store)
    await store.create("p", APP.schema)
    await store.redis.config_set("maxmemory", "1")
    try:
        with pytest.raises(StoreUnavailable, match="refused to commit to board 'p'"):
            await sup.handle(blind("p", "p0", 0, 1))
    finally:
        await store.redis.config_set("maxmemory", "0")
    assert await store.version("p") == 0
    assert (await sup.handle(blind("p", "p0", 0, 1))).version == 1
    await store.close()


async def test_a_submission_is_committed_under_a_proposal_s_limits(store: BoardStore) -> None:
    """The supervisor commits a submission without copying it into a Proposal, so a
    submission holds to a Proposal's limits itself: one with a 129-character trace id
    is not a valid submission (dead-lettered, nothing committed); at 128 it commits."""
    sup = Supervisor(APP, store)
    await store.create("p", APP.schema)
    long, fits = blind("p", "p0", 0, 1), blind("p", "p1", 0, 2)
    long.trace_id, fits.trace_id = "t" * 129, "t" * 128
    for s in (long, fits):
        await sup.redis.xadd(sup.keys.submissions("a", 0), {"s": s.model_dump_json()})
    await consume(sup, [], lambda: settled(store, {"p": 1}))
    [entry] = await store.history("p")
    assert (entry.proposal_id, entry.trace_id) == ("p1", "t" * 128)
    [(_, letter)] = await store.redis.xrange(sup.keys.dead_letters)
    assert letter["dl_reason"] == "not a valid submission"
    assert '"p0"' in letter["s"]


async def test_a_read_ahead_that_fails_in_an_outage_loses_nothing(store: BoardStore) -> None:
    """The read of the next batch fails (Redis went away meanwhile): the consumer backs
    off, re-reads what it holds and goes on; every proposal commits once, in order."""
    sup = Supervisor(APP, store)
    boards = ["p", "q"]
    for board in boards:
        await store.create(board, APP.schema)
    for i in range(4):
        for b in boards:
            await submit(sup.redis, sup.keys.prefix, blind(b, f"{b}{i}", i, i + 1))
    queue = sup.queues[0]
    queue._next_reclaim = float("inf")
    take_new, failed = queue.take_new, []

    async def fails_once_ahead(*a: Any, **k: Any) -> Any:
        if k.get("block_ms") is None and not failed:  # the read ahead, not a plain take
            failed.append(True)
            raise RedisConnectionError("connection lost (injected)")
        return await take_new(*a, **k)

    queue.take_new = fails_once_ahead  # type: ignore[method-assign]
    await run_until(sup, lambda: settled(store, dict.fromkeys(boards, 4)), batch=2)
    assert failed
    for board in boards:
        assert [e.proposal_id for e in await store.history(board)] == [
            f"{board}{i}" for i in range(4)
        ]
        outcomes = await store.redis.hvals(store.keys(board).results)
        assert {Outcome.model_validate_json(o).status for o in outcomes} == {"committed"}


@pytest.mark.parametrize(
    ("limits", "spent", "detail"),
    [
        (Limits(max_tokens=100), ("tokens_used", "150"), "tokens used 150 > max_tokens 100"),
        (Limits(max_cost=0.5), ("cost_used", "0.75"), "cost 0.75 > max_cost 0.5"),
    ],
)
async def test_a_budget_already_spent_trips_a_step_that_spends_nothing(
    store: BoardStore, limits: Limits, spent: tuple[str, str], detail: str
) -> None:
    """A board over a budget it did not trip (an app whose budget was lowered, a board
    resumed): the next step trips it even if it reports no tokens and no cost; with a
    budget it is under, nothing trips."""
    app = App(board=Pair, agents=[a, b], limits=limits)
    sup = Supervisor(app, store)
    await store.create("spent", app.schema)
    await store.redis.hset(store.keys("spent").meta, *spent)
    routed, _ = await sup.router.route("spent", Routing(routing_id="r1", version=0))
    assert (routed.outcome, routed.trip_kind, routed.trip_detail) == ("tripped", "budget", detail)
    await store.create("fresh", app.schema)
    routed, _ = await sup.router.route("fresh", Routing(routing_id="r1", version=0))
    assert routed.outcome == "ok" and routed.status == "active"
