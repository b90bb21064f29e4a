"""The combined commit-and-route script (proposals whose routing is known before the
commit): what it records must equal what the general path records."""

from __future__ import annotations

import json
from typing import Annotated

from blackboard.agents import Context, Output, agent
from blackboard.supervisor import Supervisor
from pydantic import BaseModel

from blackboard import App, BoardStore, Key
from blackboard.records import Handoff, Outcome, Submission


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


async def test_commit_and_handoff_in_one_script(store: BoardStore) -> None:
    sup = Supervisor(APP, store)
    assert sup._routing_known_before_commit(
        Submission(
            kind="proposal",
            board_id="p",
            author="a",
            patch=[{"op": "add", "path": "/x", "value": 1}],
        )
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
    await sup.handle(
        Submission(
            kind="proposal",
            board_id="p",
            author="a",
            base=0,
            patch=[{"op": "replace", "path": "/x", "value": 1}],
        )
    )
    stale = Submission(
        kind="proposal",
        board_id="p",
        author="a",
        base=0,
        proposal_id="old",
        patch=[{"op": "replace", "path": "/x", "value": 2}],
    )
    outcome = await sup.handle(stale)
    assert (outcome.status, outcome.reason) == ("rejected", "conflict")
    assert "changed after base version 0" in outcome.message
    assert await store.read_key("p", "x") == 1
    acts = [
        json.loads(v) for v in (await store.redis.hgetall(store.keys("p").activations)).values()
    ]
    assert [(x["agent"], x["reason"]) for x in acts] == [("a", "rewrite")]
