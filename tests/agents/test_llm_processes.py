"""An LLM agent with a side-effecting tool as real OS processes on a real redis-server,
through the real OpenAI adapter and the scripted server: a kill -9 in the middle of the
tool loop does not repeat the effect, a malformed answer is rewritten, and a cost budget
trips on a priced model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from blackboard.supervisor import Supervisor
from llmstub import LLMStub, Turn, openai_text, openai_tool_call

from blackboard import BoardStore, connect

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

HELPERS = str(Path(__file__).resolve().parents[1] / "helpers")


async def wait_for(check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return result


class Cluster:
    """The supervisor and agent processes of one test, stopped at the end."""

    def __init__(self, redis_url: str, stub: LLMStub, effects: Path) -> None:
        self.env = {
            **os.environ,
            "PYTHONPATH": HELPERS,
            "BLACKBOARD_REDIS_URL": redis_url,
            "LLM_STUB_URL": stub.openai_url,
            "LLM_EFFECTS": str(effects),
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "blackboard", *args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.wait(20)


async def started(redis_server: Any, app_name: str) -> tuple[BoardStore, Supervisor]:
    import llmapps

    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client)
    sup = Supervisor(getattr(llmapps, app_name), store)
    await sup.publish()
    return store, sup


ANSWER = json.dumps({"credit": 712, "note": "notified"})


@pytest.mark.parametrize("app_name", ["app", "generic_app"])
async def test_kill_9_mid_tool_loop_keeps_the_effect_once_and_rewrites_bad_output(
    redis_server: Any, llm_stub: LLMStub, tmp_path: Path, app_name: str
) -> None:
    # app: an llm_agent; generic_app: a plain agent running the loop with ctx.complete.
    effects = tmp_path / "effects"
    llm_stub.script(
        openai_tool_call("notify", {"customer": "c7"}),
        Turn(hang=True),  # the model's next turn never comes: the process dies waiting
        openai_tool_call("notify", {"customer": "c7"}, call_id="call_again"),
        openai_text('{"credit": 7'),  # malformed: a rewrite
        openai_text(ANSWER),
    )
    store, sup = await started(redis_server, app_name)
    cluster = Cluster(redis_server.url, llm_stub, effects)
    target = f"llmapps:{app_name}"
    try:
        cluster.spawn("supervisor", "--app", target)
        first = cluster.spawn("agent", "clerk", "--app", target, "--name", "first")
        await sup.start("case")

        async def first_holds_it() -> bool:
            return len(llm_stub.requests) >= 1

        await wait_for(first_holds_it)
        # Started now, the second instance boots while the first runs the tool loop; it
        # finds nothing to do until the first's entry goes idle.
        cluster.spawn("agent", "clerk", "--app", target, "--name", "second")

        async def mid_loop() -> bool:
            return len(llm_stub.requests) == 2 and effects.exists()

        await wait_for(mid_loop)
        first.send_signal(signal.SIGKILL)
        first.wait()

        async def done() -> bool:
            return (await store.info("case")).status == "done"

        await wait_for(done)
        assert (await store.read("case")).data["credit"] == 712
        assert len(effects.read_text().splitlines()) == 1  # the effect happened once
        bodies = llm_stub.bodies()
        assert len(bodies) == 5
        # The reclaimed activation's same call collected the first call's result.
        assert bodies[3]["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "call_again",
            "content": '{"receipt":"n1"}',
        }
        assert "Your previous answer was refused" in bodies[4]["messages"][-1]["content"]
        records = [json.loads(v) for v in await store.redis.hvals(store.keys("case").activations)]
        assert sorted((r["reason"], r["outcome"]) for r in records) == [
            ("rewrite", "proposed"),
            ("start", "semantic"),
        ]
    finally:
        cluster.stop()
        await store.close()


async def test_a_cost_budget_trips_on_a_priced_model(
    redis_server: Any, llm_stub: LLMStub, tmp_path: Path
) -> None:
    # gpt-4o-mini at $0.15 per million input tokens: 100k tokens cost $0.015 > $0.01.
    llm_stub.script(openai_text(ANSWER, tokens=(100_000, 10)))
    store, sup = await started(redis_server, "budget_app")
    cluster = Cluster(redis_server.url, llm_stub, tmp_path / "effects")
    try:
        cluster.spawn("supervisor", "--app", "llmapps:budget_app")
        cluster.spawn("agent", "clerk", "--app", "llmapps:budget_app")
        await sup.start("case")

        async def escalated() -> bool:
            return (await store.info("case")).status == "escalated"

        await wait_for(escalated)
        incidents = [f for _, f in await store.redis.xrange(store.keys("case").incidents)]
        assert [i["kind"] for i in incidents] == ["budget"]
        assert "max_cost 0.01" in incidents[0]["detail"]
    finally:
        cluster.stop()
        await store.close()
