"""The author of a submission is the stream it came on (issue 23). The forgeries of the
issue, appended with plain XADDs as any Redis client could, are refused, recorded as
``security`` incidents on the board and dead-lettered with the reason; nothing of them
reaches the board, while an honest submission beside them commits. Both backends (the
ACLs that stop a process from appending to another's stream: tests/test_acl.py)."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import pytest
from bbtest import run_until
from blackboard.agents import Context, Handoff, Output, agent
from blackboard.supervisor import Supervisor
from pydantic import BaseModel

from blackboard import App, BoardStore, Key
from blackboard.records import Submission


class Pair(BaseModel):
    first: Annotated[int | None, Key("first")] = None
    second: Annotated[int | None, Key("second")] = None
    note: Annotated[str, Key("human")] = ""


@agent("first", handoffs=("second",))
async def first(ctx: Context) -> Output:
    return Output(updates={"first": 1}, handoff=Handoff(to="second"))


@agent("second", reads=("first",))
async def second(ctx: Context) -> Output:
    return Output(updates={"second": 2})


APP = App(board=Pair, agents=[first, second], start=["first"])


GRAB = [{"op": "add", "path": "/first", "value": 666}]
"""A write to first's key."""


def entry(kind: Any, author: str, board: str = "b1", **fields: Any) -> dict[str, str]:
    """A stream entry carrying a submission, as any Redis client could append it."""
    sub = Submission(kind=kind, board_id=board, author=author, **fields)
    return {"s": sub.model_dump_json()}


async def test_forged_submissions_are_refused_and_recorded(
    store: BoardStore, caplog: pytest.LogCaptureFixture
) -> None:
    sup = Supervisor(APP, store)
    await sup.publish()
    await sup.start("b1")
    bk = store.keys("b1")
    [(given, raw)] = (await store.redis.hgetall(bk.activations)).items()
    record = json.loads(raw)
    assert record["agent"] == "first"
    keys, redis = sup.keys, store.redis
    mine = keys.submissions("second", 0)
    forged = {
        "claiming author 'first' on agent": (mine, entry("proposal", "first", patch=GRAB)),
        "given to 'first'": (
            mine,
            entry("failure", "second", activation_id=given, error="fatal", reason="forged"),
        ),
        "operator command ('set')": (
            mine,
            entry("command", "human:mallory", command="set", args={"values": {"note": "x"}}),
        ),
        "on the operators' stream": (keys.commands(0), entry("proposal", "first", patch=GRAB)),
        "marked 'first'": (mine, {"run": json.dumps({**record, "status": "running"})}),
    }
    for stream, fields in forged.values():
        await redis.xadd(stream, fields)
    honest = Submission(
        kind="proposal",
        board_id="b1",
        author="second",
        patch=[{"op": "add", "path": "/second", "value": 2}],
    )
    await redis.xadd(mine, {"s": honest.model_dump_json()})

    async def done() -> bool:
        letters = await redis.xlen(keys.dead_letters)
        return letters >= len(forged) and await redis.hexists(bk.results, honest.proposal_id)

    caplog.set_level(logging.WARNING, "blackboard.supervisor.authentication")
    await run_until(sup, done)

    board = await store.read("b1")
    assert board.data == {"first": None, "second": 2, "note": ""}
    assert board.version == 1
    assert (await store.info("b1")).status == "active"
    assert json.loads(await redis.hget(bk.activations, given))["status"] == "queued"
    incidents = [f for _, f in await redis.xrange(bk.incidents) if f["kind"] == "security"]
    letters = [f["dl_reason"] for _, f in await redis.xrange(keys.dead_letters)]
    logged = [r.getMessage() for r in caplog.records if r.name.endswith(".authentication")]
    assert len(incidents) == len(letters) == len(logged) == len(forged)
    for why in forged:
        assert sum(why in i["detail"] for i in incidents) == 1, (why, incidents)
        assert sum(why in r for r in letters) == 1, (why, letters)
    assert all(r.startswith("security: ") for r in letters)


async def test_a_refusal_on_a_board_that_does_not_exist_creates_nothing(
    store: BoardStore,
) -> None:
    sup = Supervisor(APP, store)
    await store.redis.xadd(sup.keys.submissions("second", 0), entry("proposal", "first", "nope"))
    [queue] = [q for q in sup.queues if q.stream == sup.keys.submissions("second", 0)]
    assert await sup.authentication.screen(queue, await queue.take("t", block_ms=100)) == []
    assert await store.redis.exists(store.keys("nope").incidents) == 0
    [(_, letter)] = await store.redis.xrange(sup.keys.dead_letters)
    assert "claiming author 'first'" in letter["dl_reason"]
