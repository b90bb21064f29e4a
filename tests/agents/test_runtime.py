"""The agent runtime: duplicates commit once, failures are classified, an agent sees only
its keys. Embedded, on both backends."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bbtest import activations, build_app, incidents
from blackboard.agents import AgentWorker, Context, Output, agent
from blackboard.supervisor import Deployment

from blackboard import BoardStore, FatalError, Limits, ReadModel, SemanticError, TransientError
from blackboard.keys import GlobalKeys
from blackboard.records import Activation


def with_intake(fn: Any, **overrides: Any) -> Any:
    base = build_app()
    return build_app(agents=[fn, *[a for a in base.agents if a.name != "intake"]], **overrides)


async def run(app: Any, store: BoardStore, workers: int = 1) -> Any:
    async with Deployment(app, store, workers=workers) as d:
        await d.start("c1")
        return await d.settle("c1")


async def test_one_activation_delivered_three_times_commits_once(store: BoardStore) -> None:
    started = asyncio.Event()
    runs = 0

    @agent("intake")
    async def intake(ctx: Context) -> Output:
        nonlocal runs
        runs += 1
        started.set()
        await asyncio.sleep(0.05)  # overlap the three deliveries
        return Output(updates={"amount": 1.0, "income": 2.0})

    app = with_intake(intake)
    async with Deployment(app, store, workers=3) as d:
        await d.supervisor.publish(replace=True)
        await store.create("c1", app.schema)
        # The same queue entry three times, as a redelivery storm would produce.
        from blackboard.supervisor.control import Wanted
        from blackboard.supervisor.routing import Routing

        await d.supervisor.follow_up.route(
            "c1",
            Routing(routing_id="s", version=0),
            [Wanted("intake", "start")],
            parent="s",
            trace_id="t",
        )
        [act] = await activations(store, "c1")
        entry = {"agent": "intake", "board": "c1", "activation": act["activation_id"]}
        queue = GlobalKeys(store.settings.key_prefix).queue("intake")
        for _ in range(2):
            await store.redis.xadd(queue, entry)
        info = await d.settle("c1")
    assert info.status == "done"
    intake_commits = [e for e in await store.history("c1") if e.author == "intake"]
    assert len(intake_commits) == 1
    assert intake_commits[0].proposal_id == act["activation_id"]
    assert runs >= 1


async def test_transient_failures_are_retried(store: BoardStore) -> None:
    attempts = 0

    @agent("intake")
    async def flaky(ctx: Context) -> Output:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise TransientError("rate limited")
        return Output(updates={"amount": 1.0, "income": 2.0})

    info = await run(with_intake(flaky), store)
    assert info.status == "done"
    record = (await activations(store, "c1"))[0]
    assert (record["retries"], record["status"]) == (2, "submitted")
    assert attempts == 3


async def test_transient_failures_past_the_retries_escalate_with_the_count(
    store: BoardStore,
) -> None:
    attempts = 0

    @agent("intake")
    async def down(ctx: Context) -> Output:
        nonlocal attempts
        attempts += 1
        raise TransientError("upstream down")

    info = await run(with_intake(down), store)
    assert (info.status, attempts) == ("escalated", 3)  # retries=3: three attempts in all
    record = (await activations(store, "c1"))[0]
    assert (record["retries"], record["status"], record["outcome"]) == (2, "failed", "timeout")
    [incident] = [i for i in await incidents(store, "c1") if i["kind"] == "timeout"]
    assert "gave up after 3 attempts: TransientError: upstream down" in incident["detail"]


async def test_semantic_failure_is_a_rewrite_not_a_retry(store: BoardStore) -> None:
    seen: list[str] = []

    @agent("intake")
    async def picky(ctx: Context) -> Output:
        seen.append(ctx.feedback)
        if not ctx.feedback:
            raise SemanticError("the model returned prose, not the amount")
        return Output(updates={"amount": 1.0, "income": 2.0})

    info = await run(with_intake(picky), store)
    assert info.status == "done"
    assert seen == ["", "the model returned prose, not the amount"]
    reasons = [a["reason"] for a in await activations(store, "c1")]
    assert reasons[:2] == ["start", "rewrite"]


async def test_wrong_return_type_is_semantic(store: BoardStore) -> None:
    @agent("intake")
    async def sloppy(ctx: Context) -> Any:
        return "amount is 5" if not ctx.feedback else {"amount": 5.0, "income": 1.0}

    info = await run(with_intake(sloppy), store)
    assert info.status == "done"
    rewrite = [a for a in await activations(store, "c1") if a["reason"] == "rewrite"][0]
    assert "return an Output, a dict of key updates, or None" in rewrite["feedback"]


async def test_fatal_failure_fails_the_board(store: BoardStore) -> None:
    @agent("intake")
    async def broken(ctx: Context) -> Output:
        raise FatalError("credentials revoked")

    info = await run(with_intake(broken), store)
    assert info.status == "failed"
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "fatal" and "credentials revoked" in incident["detail"]


async def test_agent_sees_only_its_keys(store: BoardStore) -> None:
    seen: dict[str, Any] = {}

    @agent("risk", reads=("income",), triggers=())
    async def risk(ctx: Context) -> Output:
        seen.update(ctx.board)
        seen["version"] = ctx.version
        return Output(updates={"score": 700})

    base = build_app()
    app = build_app(agents=[*[a for a in base.agents if a.name != "risk"], risk], start=["risk"])
    await run(app, store)
    # Its read key and its owned key, nothing else of the board (amount, decision, log…).
    assert set(seen) == {"income", "score", "version"}


async def test_worker_ignores_finished_activation(store: BoardStore) -> None:
    info = await run(build_app(), store)
    assert info.status == "done"
    version = info.version
    act = (await activations(store, "c1"))[0]
    worker = AgentWorker(build_app(), "intake", store)
    queue = GlobalKeys(store.settings.key_prefix).queue("intake")
    await store.redis.xadd(
        queue, {"agent": "intake", "board": "c1", "activation": act["activation_id"]}
    )
    [delivery] = await worker.queue.take(worker.name, block_ms=10)
    await worker.handle(delivery)
    assert await store.version("c1") == version


async def test_a_corrupt_activation_record_is_dead_lettered_not_fatal(store: BoardStore) -> None:
    """A record no retry can mend goes to the dead letters, saying what it is; the worker
    goes on (before, a pydantic error escaped and ended the agent process)."""
    info = await run(build_app(), store)
    act = (await activations(store, "c1"))[0]
    bk = store.keys("c1")
    await store.redis.hset(bk.activations, act["activation_id"], '{"agent": 7}')
    worker = AgentWorker(build_app(), "intake", store)
    queue = GlobalKeys(store.settings.key_prefix).queue("intake")
    await store.redis.xadd(
        queue, {"agent": "intake", "board": "c1", "activation": act["activation_id"]}
    )
    [delivery] = await worker.queue.take(worker.name, block_ms=10)
    await worker.handle(delivery)
    [dead] = await ReadModel(store).dead_letters()
    why = dead.reason
    assert act["activation_id"] in why and "not a valid Activation" in why
    assert not await store.redis.xpending_range(queue, worker.queue.group, "-", "+", 10)
    assert await store.version("c1") == info.version


async def test_long_activation_is_not_reclaimed_while_running(store: BoardStore) -> None:
    runs = 0

    @agent("intake")
    async def slow(ctx: Context) -> Output:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.6)  # six times the idle timeout
        return Output(updates={"amount": 1.0, "income": 2.0})

    info = await run(with_intake(slow, limits=Limits(claim_idle_ms=100)), store, workers=2)
    assert info.status == "done"
    assert runs == 1


async def worker_submissions(app: Any, store: BoardStore, timeout_ms: int) -> list[Any]:
    """Run one intake activation through a worker, capturing what it submits."""
    await store.create("c1", app.schema)
    worker = AgentWorker(app, "intake", store)
    sent: list[Any] = []

    async def capture(submission: Any, record: Any) -> None:
        sent.append((submission, record))

    worker.submit_local = capture
    deadline = int(time.time() * 1000) + timeout_ms
    act = Activation(
        activation_id="a1", board_id="c1", agent="intake", base=0, trace_id="t",
        deadline_ms=deadline,
    )  # fmt: skip
    await worker.run_local("c1", "a1", act)
    return sent


async def test_an_activation_past_its_deadline_is_reported_as_timed_out_not_retried(
    store: BoardStore,
) -> None:
    runs = 0

    @agent("intake")
    async def stuck(ctx: Context) -> Output:
        nonlocal runs
        runs += 1
        await asyncio.Event().wait()  # never answers
        return Output()

    app = with_intake(stuck, limits=Limits(activation_timeout_s=0.1))
    [(submission, record)] = await worker_submissions(app, store, timeout_ms=100)
    assert (submission.kind, submission.error) == ("failure", "timeout")
    # In the watchdog's words, so the board reads the same whichever reports it first.
    assert submission.reason == "activation a1 of 'intake' timed out after 0.1 s"
    assert (runs, record.retries, record.outcome) == (1, 0, "timeout")


async def test_a_timeout_inside_the_agent_is_retried(store: BoardStore) -> None:
    runs = 0

    @agent("intake")
    async def slow_upstream(ctx: Context) -> Output:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise TimeoutError("upstream read timed out")
        return Output(updates={"amount": 1.0, "income": 2.0})

    [(submission, record)] = await worker_submissions(
        with_intake(slow_upstream), store, timeout_ms=10_000
    )
    assert (submission.kind, runs, record.retries) == ("proposal", 2, 1)
