"""What the LLM agent tests share: an app of one agent, one board run to its end in a
Deployment, and the feedback a failed first activation's rewrite carried."""

from __future__ import annotations

from typing import Any

from bbtest import activations
from blackboard.agents import Agent
from blackboard.supervisor import Deployment
from pydantic import BaseModel

from blackboard import App, BoardInfo, BoardStore

__all__ = ["one_agent_app", "rewrite_feedback", "run"]


def one_agent_app(board: type[BaseModel], agent: Agent, done_key: str, **declared: Any) -> App:
    """An app whose one agent starts every board, done once ``done_key`` is written."""
    return App(
        board=board,
        agents=[agent],
        start=[agent.name],
        done=lambda b: b.get(done_key) is not None,
        done_reads=[done_key],
        **declared,
    )


async def run(app: App, store: BoardStore, board_id: str = "c1") -> BoardInfo:
    """Start ``board_id`` and wait until it settles; its info then."""
    async with Deployment(app, store) as d:
        await d.start(board_id)
        return await d.settle(board_id)


async def rewrite_feedback(store: BoardStore, board_id: str = "c1") -> str:
    """The board's first activation ended as semantic (a rewrite request); what the
    rewrite was told."""
    first, rewrite = await activations(store, board_id)
    assert first["outcome"] == "semantic", first
    assert rewrite["reason"] == "rewrite", rewrite
    return str(rewrite["feedback"])
