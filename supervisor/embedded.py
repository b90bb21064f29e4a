"""Embedded mode: the supervisor and every agent in this process, on one store.

The same components as the separate processes, run as asyncio tasks. One difference:
activations and submissions between the supervisor and the agents here are handed over
in memory instead of through Redis streams, so a step costs one round trip (the commit,
its routing and the next agent's context in one script). Everything of record is still
in Redis before the next agent runs: an activation stays open in its board's outbox
until its routing closes it, and a deployment started after a crash runs the unfinished
ones again, or resends what they had submitted (commits stay exactly-once; agent work
is at least once, as with queues). Two deployments of one app on one Redis would each
recover the other's activations in hand when they start: run one per app.

:meth:`Deployment.run_sync` is the one door for code outside asyncio: it runs a board
from start to where it settles in its own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from blackboard.agents.runtime import AgentWorker
from blackboard.supervisor.process import Supervisor
from tenacity import RetryCallState

from blackboard.app import App
from blackboard.errors import BlackboardError, ConfigError, Escalated, escalation
from blackboard.outages import OUTAGE, riding_out
from blackboard.readmodel import ReadModel
from blackboard.records import (
    Activation,
    BoardInfo,
    ContextRead,
    Outcome,
    SettledBoard,
    Submission,
)
from blackboard.status import SETTLED, BoardStatus
from blackboard.store import BoardStore

__all__ = ["Deployment"]

log = logging.getLogger(__name__)

_Handed = tuple[str, str, Activation | None, ContextRead | None]


class Deployment:
    """``async with Deployment(app) as d: await d.start("case-1", {...}); await d.settle(...)``

    Args:
        app: the app to run.
        store: the store; default: a new embedded one.
        workers: instances per agent.

    Attributes:
        reads: the read model over its store (what :meth:`settle` looks at).
    """

    def __init__(self, app: App, store: BoardStore | None = None, *, workers: int = 1) -> None:
        self.app = app
        self.store = store or BoardStore.from_url()
        self.supervisor = Supervisor(app, self.store)
        self.reads = ReadModel(self.store)
        self.workers = [
            AgentWorker(app, name, self.store, name=f"{name}-{i}")
            for name in app.agent_names
            for i in range(workers)
        ]
        self._handed: dict[str, asyncio.Queue[_Handed | None]] = {
            name: asyncio.Queue() for name in app.agent_names
        }
        self._in_hand: dict[str, set[str]] = {}
        """Per board: the activations handed to agents here and not finished."""
        self._quiet: dict[str, asyncio.Event] = {}
        """Per board: set when its last activation in hand here finishes."""
        for worker in self.workers:
            worker.submit_local = self.supervisor.submit_local
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Deployment:
        await self.supervisor.publish(replace=True)
        self.supervisor.router.local = self._hand_over
        self._tasks = [asyncio.create_task(self.supervisor.run(self._stop))]
        self._tasks += [asyncio.create_task(w.run(self._stop)) for w in self.workers]
        self._tasks += [asyncio.create_task(self._work_handed(w)) for w in self.workers]
        try:
            await self.supervisor.recover()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self.workers:  # each finishes what it holds, then stops
            self._handed[worker.agent.name].put_nowait(None)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.supervisor.router.local = None
        await self.supervisor.router.pipeliner.aclose()  # agents here used it too

    def _hand_over(
        self,
        board_id: str,
        activation_id: str,
        agent: str,
        record: Activation | None,
        context: ContextRead | None,
    ) -> bool:
        """The supervisor's local dispatch: queue the activation for the agent's workers
        here (once, however often it is dispatched while in hand)."""
        handed = self._handed.get(agent)
        if handed is None or self._stop.is_set():
            return False
        held = self._in_hand.setdefault(board_id, set())
        if activation_id not in held:
            held.add(activation_id)
            handed.put_nowait((board_id, activation_id, record, context))
        return True

    def _finished(self, board_id: str, activation_id: str) -> None:
        held = self._in_hand.get(board_id, set())
        held.discard(activation_id)
        if not held:
            self._in_hand.pop(board_id, None)
            if (quiet := self._quiet.pop(board_id, None)) is not None:
                quiet.set()

    async def _work_handed(self, worker: AgentWorker) -> None:
        handed = self._handed[worker.agent.name]
        while (item := await handed.get()) is not None:
            board_id, activation_id, record, context = item
            try:
                if not self.supervisor.stopped(board_id):  # (stopped while it waited)
                    await self._run_handed(worker, board_id, activation_id, record, context)
            finally:
                self._finished(board_id, activation_id)

    async def _run_handed(
        self, worker: AgentWorker, board_id: str, activation_id: str, record: Any, context: Any
    ) -> None:
        def afresh(_: RetryCallState) -> None:
            # what was handed over predates the outage: the next attempt reads anew
            nonlocal record, context
            record, context = None, None

        try:
            await riding_out(  # run it again once Redis is back
                f"agent {worker.name}",
                log,
                lambda: worker.run_local(board_id, activation_id, record, context),
                stop=lambda _: self._stop.is_set(),
                before_retry=afresh,
            )
        except OUTAGE:  # the deployment stopped during an outage: a restart reruns it
            pass
        except Exception:  # left open: the watchdog times it out, a restart reruns it
            log.exception("agent %s failed on board %s", worker.agent.name, board_id)

    async def start(self, board_id: str, initial: Mapping[str, Any] | None = None) -> BoardInfo:
        """Create the board and activate the app's start agents."""
        return await self.supervisor.start(board_id, initial)

    async def settle(
        self,
        board_id: str,
        timeout: float = 30.0,
        *,
        poll_s: float = 0.005,
        raise_on_escalation: bool = False,
    ) -> BoardInfo:
        """Wait until the board is done, stopped, held, or has nothing left to do.

        While agents here hold its activations, it waits for them to finish; otherwise
        (activations with agents elsewhere) it looks at Redis every ``poll_s``.

        Args:
            board_id: the board.
            timeout: seconds to wait before giving up (``BlackboardError``).
            poll_s: how often to look at Redis when no agent here holds its work.
            raise_on_escalation: raise instead of returning a board that stopped for a
                person: :class:`~blackboard.errors.LoopDetected` for a loop,
                :class:`~blackboard.errors.BudgetExceeded` for a spent budget or a
                passed deadline, :class:`~blackboard.errors.Escalated` for any other
                escalation or a failed board. The board is left as it is either way.
        """
        deadline = time.monotonic() + timeout
        while True:
            for task in self._tasks:  # a crashed component must not look like a hang
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            left = deadline - time.monotonic()
            if board_id in self._in_hand and left > 0:
                quiet = self._quiet.setdefault(board_id, asyncio.Event())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, 0.5)):  # no task, unlike wait_for
                        await quiet.wait()
                continue
            now = await self.reads.activity(board_id)
            if now.status in SETTLED or now.idle:
                if raise_on_escalation:
                    _raise_if_stopped(now.info)
                return now.info
            if left <= 0:
                raise BlackboardError(
                    f"board {board_id!r} did not settle in {timeout:g} s "
                    f"(status {now.status}, {now.open} open activations)."
                )
            await asyncio.sleep(poll_s)

    @classmethod
    def run_sync(
        cls,
        app: App,
        board_id: str,
        initial: Mapping[str, Any] | None = None,
        *,
        url: str | None = None,
        workers: int = 1,
        timeout: float = 30.0,
        raise_on_escalation: bool = True,
    ) -> SettledBoard:
        """Run one board from start to where it settles, for code outside asyncio:
        ``Deployment.run_sync(app, "case-1", {...}).state.data``.

        Starts a deployment of ``app`` on ``url`` (default: ``BLACKBOARD_REDIS_URL``,
        else an embedded Redis that lives only as long as this call), starts the board,
        settles it (see :meth:`settle`), reads it, and stops, all in an event loop of
        its own (``asyncio.run``).

        Raises:
            ConfigError: called inside a running event loop (there, use ``async with
                Deployment(app) as d`` and await :meth:`start` and :meth:`settle`).
            Escalated: with ``raise_on_escalation`` (the default), the board stopped
                for a person; ``LoopDetected`` and ``BudgetExceeded`` are its kinds.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop running here: the one case run_sync is for
        else:
            raise ConfigError(
                "Deployment.run_sync() was called inside a running event loop; there, use "
                "`async with Deployment(app) as d:` and await d.start() and d.settle()."
            )

        async def run() -> SettledBoard:
            async with BoardStore.from_url(url) as store, cls(app, store, workers=workers) as d:
                await d.start(board_id, initial)
                info = await d.settle(board_id, timeout, raise_on_escalation=raise_on_escalation)
                return SettledBoard(info=info, state=await store.read(board_id))

        return asyncio.run(run())

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


def _raise_if_stopped(info: BoardInfo) -> None:
    """Raise the :class:`Escalated` error of a board that stopped for a person."""
    if info.status is BoardStatus.ESCALATED:
        raise escalation(info.board_id, info.escalated_reason)
    if info.status is BoardStatus.FAILED:
        raise Escalated(
            info.board_id, BoardStatus.FAILED, "an agent reported a fatal error (see its incidents)"
        )
