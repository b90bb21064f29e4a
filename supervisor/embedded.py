"""Embedded mode: the supervisor and every agent in this process, on one store.

The same code as the separate processes, run as asyncio tasks: what works embedded works
distributed, and the other way round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from blackboard.agents.runtime import AgentWorker
from blackboard.supervisor.process import Supervisor

from blackboard.app import App
from blackboard.errors import BlackboardError
from blackboard.records import BoardInfo, Outcome, Submission
from blackboard.store import BoardStore

__all__ = ["Deployment"]

SETTLED = ("done", "escalated", "failed", "awaiting_approval", "paused")


class Deployment:
    """``async with Deployment(app) as d: await d.start("case-1", {...}); await d.settle(...)``

    Args:
        app: the app to run.
        store: the store; default: a new embedded one.
        workers: instances per agent.
    """

    def __init__(self, app: App, store: BoardStore | None = None, *, workers: int = 1) -> None:
        self.app = app
        self.store = store or BoardStore.from_url()
        self.supervisor = Supervisor(app, self.store)
        self.workers = [
            AgentWorker(app, name, self.store, name=f"{name}-{i}")
            for name in app.agent_names
            for i in range(workers)
        ]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Deployment:
        await self.supervisor.publish(replace=True)
        self._tasks = [asyncio.create_task(self.supervisor.run(self._stop))]
        self._tasks += [asyncio.create_task(w.run(self._stop)) for w in self.workers]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def start(self, board_id: str, initial: Mapping[str, Any] | None = None) -> BoardInfo:
        return await self.supervisor.start(board_id, initial)

    async def settle(
        self, board_id: str, timeout: float = 30.0, *, poll_s: float = 0.005
    ) -> BoardInfo:
        """Wait until the board is done, stopped, held, or has nothing left to do."""
        bk = self.supervisor.keys.board(board_id)
        deadline = time.monotonic() + timeout
        while True:
            for task in self._tasks:  # a crashed component must not look like a hang
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            pipe = self.store.redis.pipeline(transaction=True)  # one consistent look
            pipe.hget(bk.meta, "status")
            pipe.zcard(bk.open)
            pipe.hlen(bk.outbox)
            status, open_, outbox = await pipe.execute()
            if status in SETTLED or (open_ == 0 and outbox == 0):
                return await self.store.info(board_id)
            if time.monotonic() > deadline:
                raise BlackboardError(
                    f"board {board_id!r} did not settle in {timeout:g} s "
                    f"(status {status}, {open_} open activations)."
                )
            await asyncio.sleep(poll_s)

    async def command(
        self,
        board_id: str,
        command: str,
        *,
        by: str = "human:operator",
        reason: str = "",
        **args: Any,
    ) -> Outcome:
        """Run an operator command through the supervisor (approve, reject, rollback…)."""
        return await self.supervisor.handle(
            Submission(
                kind="command",
                board_id=board_id,
                author=by,
                command=command,
                args=args,
                reason=reason,
            )
        )
