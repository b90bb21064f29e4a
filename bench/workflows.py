"""The same two workflows on both frameworks: a 4-step sequential chain and an 8-way
fan-out joined by a ninth step. Trivial steps (each writes one small value), an
unchanged payload of a chosen size on the board, durable state."""

from __future__ import annotations

import operator
import time
import uuid
from typing import Annotated, Any, TypedDict

from blackboard.agents import Context, Handoff, Output, agent, when_all
from pydantic import BaseModel, create_model

from blackboard import App, Key, Limits

FAN = 8

# -- ours -------------------------------------------------------------------------------

Chain: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "Chain",
    payload=(Annotated[str, Key("human")], ""),
    **{f"s{i}": (Annotated[int, Key(f"s{i}")], 0) for i in range(1, 5)},
)


def _step(i: int) -> Any:
    @agent(f"s{i}", handoffs=(f"s{i + 1}",) if i < 4 else ())
    async def run(ctx: Context) -> Output:
        return Output(updates={f"s{i}": 1}, handoff=Handoff(to=f"s{i + 1}") if i < 4 else None)

    return run


chain = App(
    board=Chain,
    agents=[_step(i) for i in range(1, 5)],
    start=["s1"],
    name="Chain",
    limits=Limits(max_activations=10, activation_timeout_s=60),
)

Fan: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "Fan",
    payload=(Annotated[str, Key("human")], ""),
    joined=(Annotated[int, Key("join")], 0),
    # None until written: a join waits for keys that are *set* (0 would count as set).
    **{f"f{i}": (Annotated[int | None, Key(f"f{i}")], None) for i in range(1, FAN + 1)},
)


def _branch(i: int) -> Any:
    @agent(f"f{i}")
    async def run(ctx: Context) -> Output:
        return Output(updates={f"f{i}": 1})

    return run


@agent(
    "join",
    reads=tuple(f"f{i}" for i in range(1, FAN + 1)),
    triggers=(when_all(*(f"f{i}" for i in range(1, FAN + 1))),),
)
async def join(ctx: Context) -> Output:
    return Output(updates={"joined": sum(ctx.board[f"f{i}"] for i in range(1, FAN + 1))})


fan = App(
    board=Fan,
    agents=[*(_branch(i) for i in range(1, FAN + 1)), join],
    start=[f"f{i}" for i in range(1, FAN + 1)],
    name="Fan",
    limits=Limits(max_activations=20, activation_timeout_s=60),
)

# -- LangGraph ---------------------------------------------------------------------------


def langgraph_chain(checkpointer: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        payload: str
        s1: int
        s2: int
        s3: int
        s4: int

    g = StateGraph(State)
    for i in range(1, 5):
        g.add_node(f"s{i}", lambda state, i=i: {f"s{i}": 1})
    g.add_edge(START, "s1")
    for i in range(1, 4):
        g.add_edge(f"s{i}", f"s{i + 1}")
    g.add_edge("s4", END)
    return g.compile(checkpointer=checkpointer)


def langgraph_fan(checkpointer: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        payload: str
        done: Annotated[list[int], operator.add]
        joined: int

    g = StateGraph(State)
    for i in range(1, FAN + 1):
        g.add_node(f"f{i}", lambda state, i=i: {"done": [i]})
        g.add_edge(START, f"f{i}")
        g.add_edge(f"f{i}", "join")
    g.add_node("join", lambda state: {"joined": len(state["done"])})
    g.add_edge("join", END)
    return g.compile(checkpointer=checkpointer)


def run_langgraph(graph: Any, payload: str, runs: int, initial: dict[str, Any]) -> float:
    """Seconds per run, durability 'sync' (every checkpoint written before going on)."""
    started = time.perf_counter()
    for _ in range(runs):
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        out = graph.invoke({**initial, "payload": payload}, config, durability="sync")
        assert out.get("s4") == 1 or out.get("joined") == FAN, out
    return (time.perf_counter() - started) / runs
