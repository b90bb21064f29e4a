"""Proposals whose routing reads the board the commit made (a join's branches, a done
condition, a router): the commit and those reads go in one round trip, then the
routing. Each test runs on that path and, forced, on the general one (decide, read,
route): what is recorded must be the same."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
import redis.asyncio.client as redis_client
from bbtest import activations, outcome_of
from blackboard.agents import Context, Output, agent, when_all
from blackboard.supervisor import Deployment, Supervisor
from blackboard.supervisor.fast_paths import GENERAL, READ
from pydantic import BaseModel

from blackboard import App, BoardStore, Key, Settings, connect
from blackboard.connection import _Pinned
from blackboard.errors import StoreUnavailable
from blackboard.records import Activation, Submission

BRANCHES = 3


class Fan(BaseModel):
    f1: Annotated[int | None, Key("f1")] = None
    f2: Annotated[int | None, Key("f2")] = None
    f3: Annotated[int | None, Key("f3")] = None
    joined: Annotated[int | None, Key("join")] = None


def fan_app(seen: list[dict[str, Any]]) -> App:
    def branch(i: int) -> Any:
        @agent(f"f{i}")
        async def run(ctx: Context) -> Output:
            return Output(updates={f"f{i}": 10 * i})

        return run

    keys = tuple(f"f{i}" for i in range(1, BRANCHES + 1))

    @agent("join", reads=keys, triggers=(when_all(*keys),))
    async def join(ctx: Context) -> Output:
        seen.append(dict(ctx.board))
        return Output(updates={"joined": sum(ctx.board[k] for k in keys)})

    return App(
        board=Fan,
        agents=[*(branch(i) for i in range(1, BRANCHES + 1)), join],
        start=list(keys),
        done=lambda b: b.get("joined") is not None,
        done_reads=["joined"],
        name="Fan",
    )


def forced(sup: Supervisor, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path == GENERAL:
        monkeypatch.setattr(sup.fast, "shape_path", lambda sub: GENERAL)


def branch_sub(i: int, pid: str, base: int = 0, value: int | None = None) -> Submission:
    return Submission(
        kind="proposal",
        board_id="f",
        author=f"f{i}",
        base=base,
        proposal_id=pid,
        patch=[{"op": "replace", "path": f"/f{i}", "value": 10 * i if value is None else value}],
    )


def test_a_branch_of_a_join_takes_the_read_path(store: BoardStore) -> None:
    sup = Supervisor(fan_app([]), store)
    assert sup.fast.path(branch_sub(1, "x")) == READ


@pytest.mark.parametrize("path", [READ, GENERAL])
async def test_the_join_fires_once_after_its_last_branch(
    store: BoardStore, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    async with Deployment(fan_app(seen), store) as d:
        forced(d.supervisor, path, monkeypatch)
        await d.start("f")
        info = await d.settle("f")
    assert (info.status, info.version) == ("done", BRANCHES + 1)
    assert seen == [{"f1": 10, "f2": 20, "f3": 30, "joined": None}]  # once, every branch done
    log = await store.history("f")
    assert sorted(e.author for e in log[:BRANCHES]) == [f"f{i}" for i in range(1, 4)]
    assert (log[-1].author, log[-1].keys) == ("join", ["joined"])
    records = {a["agent"]: a for a in await activations(store, "f")}
    assert len(records) == BRANCHES + 1 and {a["status"] for a in records.values()} == {"submitted"}
    assert (records["join"]["reason"], records["join"]["base"]) == ("trigger", BRANCHES)
    for e in log:
        outcome = await outcome_of(store, "f", e.proposal_id)
        assert (outcome["status"], outcome["version"], outcome["keys"]) == (
            "committed",
            e.version,
            e.keys,
        )
    assert await store.redis.hlen(store.keys("f").outbox) == 0
    assert await store.redis.zcard(store.keys("f").open) == 0


@pytest.mark.parametrize(("path", "trips"), [(READ, 4), (GENERAL, 5)])
async def test_the_last_branch_takes_one_round_trip_less_than_the_general_path(
    store: BoardStore, path: str, trips: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commit and reads, then routing, then the dispatch (two round trips: the outbox
    entry goes once the activation is queued), where the general path commits, reads
    and routes one after the other."""
    sup = Supervisor(fan_app([]), store)
    forced(sup, path, monkeypatch)
    await store.create("f", sup.app.schema)
    for i in range(1, BRANCHES):  # also fills the caches (the declaration's digest)
        await sup.handle(branch_sub(i, f"p{i}"))
    sent: list[str] = []
    command, pipeline = redis_client.Redis.execute_command, redis_client.Pipeline.execute
    pinned = _Pinned.execute  # the Pipeliner's pipeline

    async def one(self: Any, *args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await command(self, *args, **options)

    async def many(self: Any, *args: Any, **options: Any) -> Any:
        sent.append("pipeline")
        return await (pinned if isinstance(self, _Pinned) else pipeline)(self, *args, **options)

    monkeypatch.setattr(redis_client.Redis, "execute_command", one)
    monkeypatch.setattr(redis_client.Pipeline, "execute", many)
    monkeypatch.setattr(_Pinned, "execute", many)
    outcome = await sup.handle(branch_sub(BRANCHES, "last"))
    monkeypatch.undo()
    assert (outcome.status, outcome.version) == ("committed", BRANCHES)
    assert len(sent) == trips, sent
    [(_, entry)] = await store.redis.xrange(sup.keys.queue("join"))
    assert (entry["agent"], entry["board"]) == ("join", "f")


@pytest.mark.parametrize("path", [READ, GENERAL])
async def test_a_stale_branch_is_rejected_and_rewritten(
    store: BoardStore, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit script refuses it (f1 changed after its base): the general path then
    decides, records the rejection and asks its author for a rewrite."""
    sup = Supervisor(fan_app([]), store)
    forced(sup, path, monkeypatch)
    await store.create("f", sup.app.schema)
    await sup.handle(branch_sub(1, "first"))
    outcome = await sup.handle(branch_sub(1, "stale", base=0, value=11))
    assert (outcome.status, outcome.reason) == ("rejected", "conflict")
    assert (await outcome_of(store, "f", "stale"))["reason"] == "conflict"
    assert await store.read_key("f", "f1") == 10 and await store.version("f") == 1
    [rewrite] = [a for a in await activations(store, "f") if a["reason"] == "rewrite"]
    assert rewrite["agent"] == "f1" and "changed" in rewrite["feedback"]


@pytest.mark.parametrize("path", [READ, GENERAL])
async def test_an_invalid_branch_is_kept_before_it_is_routed(
    store: BoardStore, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proposal the store refuses before any commit (a value of the wrong type) is
    still kept with its activation before routing starts: a crash in between resends
    it rather than running the agent again."""
    sup = Supervisor(fan_app([]), store)
    forced(sup, path, monkeypatch)
    await store.create("f", sup.app.schema)
    sub = branch_sub(1, "a1").model_copy(
        update={"activation_id": "a1", "patch": [{"op": "replace", "path": "/f1", "value": "x"}]}
    )
    kept: list[Any] = []
    route = sup.follow_up.route

    async def routing(*args: Any, **kwargs: Any) -> None:
        kept.append(await store.redis.hget(sup.keys.board("f").activations, "a1"))
        await route(*args, **kwargs)

    monkeypatch.setattr(sup.follow_up, "route", routing)
    act = Activation(activation_id="a1", board_id="f", agent="f1", base=0, trace_id="")
    outcome = await sup.submit_local(sub, act)
    assert (outcome.status, outcome.reason) == ("rejected", "schema")
    [record] = kept
    assert json.loads(record)["submission"]["patch"] == sub.patch
    assert await store.version("f") == 0


@pytest.mark.real_only
@pytest.mark.parametrize("path", [READ, GENERAL])
async def test_a_commit_redis_refuses_is_reported_as_the_store_unavailable(
    redis_servers: Any, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of memory: the consumer backs off and retries (an outage), as on the
    general path, rather than counting it against the submission."""
    store = BoardStore(connect(redis_servers().url))
    sup = Supervisor(fan_app([]), store)
    forced(sup, path, monkeypatch)
    await store.create("f", sup.app.schema)
    await sup.handle(branch_sub(1, "p1"))
    await store.redis.config_set("maxmemory", "1")
    try:
        with pytest.raises(StoreUnavailable, match="maxmemory") as raised:
            await sup.handle(branch_sub(2, "p2"))
    finally:
        await store.redis.config_set("maxmemory", "0")
    assert "Redis refused to commit to board 'f'" in str(raised.value)
    assert await store.version("f") == 1
    outcome = await sup.handle(branch_sub(2, "p2"))  # once Redis takes writes again
    assert (outcome.status, outcome.version) == ("committed", 2)
    await store.close()


@pytest.mark.real_only
async def test_with_wait_replicas_the_wait_follows_the_commit_and_the_read_comes_last(
    redis_servers: Any,
) -> None:
    """WAIT goes right after the commit script on its connection (it counts that
    connection's writes); the read after it still sees the commit, and with no replica
    the commit stands and the join is dispatched."""
    store = BoardStore(connect(redis_servers().url), Settings(wait_replicas=1, wait_timeout_ms=20))
    sup = Supervisor(fan_app([]), store)
    await store.create("f", sup.app.schema)
    sent: list[list[str]] = []
    execute = sup.router.pipeliner.execute

    async def spied(*commands: Any, **kwargs: Any) -> Any:
        sent.append([c[1][0] if c[0] == "execute_command" else c[0] for c in commands])
        return await execute(*commands, **kwargs)

    sup.router.pipeliner.execute = spied  # type: ignore[method-assign]
    for i in range(1, BRANCHES + 1):
        outcome = await sup.handle(branch_sub(i, f"p{i}"))
        assert (outcome.status, outcome.version) == ("committed", i)
    # the read last: for a join, a script reading the values and their versions at once
    assert sent[0] == ["script", "WAIT", "script"]
    [(_, entry)] = await store.redis.xrange(sup.keys.queue("join"))
    assert entry["agent"] == "join"
    await store.close()
