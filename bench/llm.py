"""Framework overhead per LLM step, against a local OpenAI-compatible stub that answers at
once (so the step is the framework, the SDK and one loopback HTTP exchange):

- the SDK alone: four sequential ``chat.completions.create`` calls with the same
  structured-output request an agent sends, each answer parsed (the floor);
- this framework: a 4-agent chain of ``llm_agent``s (each owns one key and hands off to
  the next) in a Deployment on Redis with AOF, through the OpenAI adapter;
- LangGraph: the same chain, each node calling ``ChatOpenAI.with_structured_output``
  against the same stub, with its SQLite checkpointer (durability "sync").

Reported: ms per step for each, and our overhead per step (ours minus the SDK's, p50 over
runs). Run alone: python -m bench.llm [--quick]; ``python -m bench`` runs it too.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any

from blackboard.agents import llm_agent
from blackboard.agents.providers import OpenAIModel
from blackboard.supervisor import Deployment
from pydantic import BaseModel, create_model

from bench._server import percentile, redis_server, target
from blackboard import App, BoardStore, Key, Limits, Settings

STEPS = 4
Row = Callable[[str, str], None]

# -- the stub: answers any structured-output request at once --------------------------


def _answer(body: dict[str, Any]) -> str:
    """A valid object for the requested schema: 1 for every integer key, the first
    allowed handoff target, a short reason."""
    schema = body["response_format"]["json_schema"]["schema"]
    out: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        if name == "handoff_to":
            first = prop["anyOf"][0]
            out[name] = first.get("const", (first.get("enum") or [None])[0])
        elif name == "handoff_reason":
            out[name] = "next"
        else:
            out[name] = 1
    return json.dumps(out)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (40 ms)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        data = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": _answer(body)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def stub() -> Iterator[str]:
    """The stub in its own process (in ours it would compete for the GIL with what is
    measured); yields its ``…/v1`` URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.llm", "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def serve() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


# -- the chain, three ways --------------------------------------------------------------

Chain: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "LLMChain",
    text=(Annotated[str, Key("human")], "A short case to work on."),
    **{f"s{i}": (Annotated[int | None, Key(f"s{i}")], None) for i in range(1, STEPS + 1)},
)


def chain_app(model: OpenAIModel) -> App:
    agents = [
        llm_agent(
            f"s{i}",
            instructions=f"Do step {i} of the case.",
            model=model,
            reads=["text"],
            handoffs=[f"s{i + 1}"] if i < STEPS else None,
        )
        for i in range(1, STEPS + 1)
    ]
    return App(
        board=Chain,
        agents=agents,
        start=["s1"],
        name="LLMChain",
        limits=Limits(max_activations=10, activation_timeout_s=60),
    )


async def sdk_alone(url: str, app: App, runs: int) -> list[float]:
    """ms per step of the SDK alone, per run: the same requests, answers parsed."""
    import openai

    client = openai.AsyncOpenAI(api_key="bench", base_url=url, max_retries=0)
    agents = [app.agent(f"s{i}") for i in range(1, STEPS + 1)]
    formats = [
        {
            "type": "json_schema",
            "json_schema": {
                "name": a.output.__name__,  # type: ignore[attr-defined]
                "schema": openai.pydantic_function_tool(a.output)["function"]["parameters"],  # type: ignore[attr-defined]
                "strict": True,
            },
        }
        for a in agents
    ]
    messages = [
        {"role": "system", "content": "Do the step."},
        {"role": "user", "content": "A short case to work on."},
    ]
    per_run = []
    for r in range(runs + 1):
        started = time.perf_counter()
        for a, fmt in zip(agents, formats, strict=True):
            answer = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=messages,  # type: ignore[arg-type]
                response_format=fmt,  # type: ignore[arg-type]
            )
            a.output.model_validate_json(answer.choices[0].message.content or "")  # type: ignore[attr-defined]
        if r:  # the first run warms up
            per_run.append((time.perf_counter() - started) / STEPS * 1000)
    await client.close()
    return per_run


async def ours(url: str, redis_url: str, runs: int) -> tuple[list[float], App]:
    """ms per step of the chain in a Deployment, per run (from start to settled)."""
    model = OpenAIModel("gpt-4o-mini", api_key="bench", base_url=url)
    app = chain_app(model)
    store = BoardStore.from_url(redis_url, Settings(redis_url=redis_url))
    per_run = []
    async with Deployment(app, store) as d:
        for r in range(runs + 1):
            board = f"llm-{r}-{uuid.uuid4().hex[:6]}"
            await store.create(board, app.schema)
            started = time.perf_counter()
            await d.supervisor.activate_start(board)
            info = await d.settle(board, 60)
            elapsed = time.perf_counter() - started
            assert info.version == STEPS, info
            if r:
                per_run.append(elapsed / STEPS * 1000)
            await store.delete(board)
    await model.aclose()
    await store.close()
    return per_run, app


def langgraph_sqlite(url: str, runs: int) -> list[float]:
    """ms per step of the same chain on LangGraph + SqliteSaver, per run."""
    from typing import TypedDict

    from langchain_openai import ChatOpenAI
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict, total=False):
        text: str
        s1: int
        s2: int
        s3: int
        s4: int

    llm = ChatOpenAI(model="gpt-4o-mini", api_key="bench", base_url=url, max_retries=0)  # type: ignore[arg-type]

    def node(i: int) -> Any:
        step = create_model(f"Step{i}", **{f"s{i}": (int, ...)})  # type: ignore[call-overload]
        structured = llm.with_structured_output(step, method="json_schema", strict=True)

        def run(state: State) -> dict[str, Any]:
            answer = structured.invoke(
                [("system", f"Do step {i} of the case."), ("user", state["text"])]
            )
            return {f"s{i}": answer.model_dump()[f"s{i}"]}  # type: ignore[union-attr]

        return run

    g = StateGraph(State)
    for i in range(1, STEPS + 1):
        g.add_node(f"s{i}", node(i))
    g.add_edge(START, "s1")
    for i in range(1, STEPS):
        g.add_edge(f"s{i}", f"s{i + 1}")
    g.add_edge(f"s{STEPS}", END)
    path = Path(tempfile.mkdtemp()) / "lg.sqlite"
    conn = sqlite3.connect(path, check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    graph = g.compile(checkpointer=saver)
    per_run = []
    for r in range(runs + 1):
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        started = time.perf_counter()
        out = graph.invoke({"text": "A short case to work on."}, config, durability="sync")  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        assert out.get(f"s{STEPS}") == 1, out
        if r:
            per_run.append(elapsed / STEPS * 1000)
    conn.close()
    return per_run


async def section(redis_url: str, row: Row, runs: int) -> dict[str, float]:
    """Run the three, interleaved in rounds so a noisy machine affects each alike."""
    sdk: list[float] = []
    mine: list[float] = []
    peer: list[float] = []
    with stub() as url:
        for _ in range(3):
            got, app = await ours(url, redis_url, runs)
            mine += got
            sdk += await sdk_alone(url, app, runs)
            peer += await asyncio.to_thread(langgraph_sqlite, url, runs)
    overhead = [m - s for m, s in zip(sorted(mine), sorted(sdk), strict=False)]
    results = {
        "sdk_p50": statistics.median(sdk),
        "ours_p50": statistics.median(mine),
        "ours_p99": percentile(mine, 99),
        "langgraph_sqlite_p50": statistics.median(peer),
        "overhead_p50": statistics.median(mine) - statistics.median(sdk),
        "overhead_spread": max(overhead) - min(overhead) if overhead else 0.0,
    }
    row("LLM step, SDK alone (floor)", f"p50 {results['sdk_p50']:.2f} ms")
    row(
        "LLM step, this framework (4 llm_agents)",
        f"p50 {results['ours_p50']:.2f} ms, p99 {results['ours_p99']:.2f} ms; "
        f"overhead p50 {results['overhead_p50']:.2f} ms",
    )
    row("LLM step, LangGraph + SqliteSaver", f"p50 {results['langgraph_sqlite_p50']:.2f} ms")
    return results


def targets(results: dict[str, float]) -> None:
    target("llm_step_overhead_p50_ms", results["overhead_p50"], "<=", 1.0)
    target(
        "llm_step_vs_langgraph_sqlite",
        results["ours_p50"] / results["langgraph_sqlite_p50"],
        "<=",
        0.5,
    )


async def main() -> None:
    runs = 10 if "--quick" in sys.argv else 50
    with redis_server("--appendonly", "yes", "--appendfsync", "everysec") as redis_url:
        results = await section(redis_url, lambda n, v: print(f"  {n:<44} {v}"), runs)
    targets(results)


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve()
    else:
        asyncio.run(main())
