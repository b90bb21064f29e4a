"""Running one agent: consume its activation queue, run it, submit what it produced.

N workers of the same agent (processes or tasks) share its queue through a consumer
group. The submission's proposal id *is* the activation id, so an activation delivered
twice (a redelivery, a worker killed with kill -9 and reclaimed by another) still commits
at most once. Failures are classified: transient ones are retried with exponential
backoff and jitter (capped); semantic ones are reported so the supervisor sends a rewrite
request; anything else is fatal and escalates the board.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any, cast

from blackboard.agents.agent import Agent, Context, Output, to_output
from blackboard.agents.models import Metered
from pydantic import ValidationError
from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from blackboard import codec
from blackboard.app import App
from blackboard.errors import (
    FatalError,
    NeedsHuman,
    SemanticError,
    TransientError,
)
from blackboard.keys import GlobalKeys
from blackboard.queues import OUTAGE, Delivery, WorkQueue, shard_of
from blackboard.records import Activation, Submission
from blackboard.store import BoardStore

__all__ = ["AgentWorker"]

log = logging.getLogger(__name__)

GROUP = "workers"
TRANSIENT = (TransientError, ConnectionError, TimeoutError, asyncio.TimeoutError)


class AgentWorker:
    """One instance of one agent.

    Args:
        app: the deployment's declaration.
        agent: the agent's name.
        store: the board store.
        name: this instance's consumer name.
        retries: attempts for transient failures (default 3).
        shards: the supervisor's number of submission streams.
    """

    def __init__(
        self,
        app: App,
        agent: str,
        store: BoardStore,
        *,
        name: str | None = None,
        retries: int = 3,
        shards: int = 1,
    ) -> None:
        self.app = app
        self.agent: Agent = app.agent(agent)
        self.store = store
        self.redis = store.redis
        self.keys = GlobalKeys(store.settings.key_prefix)
        self.name = name or f"{agent}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.retries = retries
        self.shards = shards
        self.queue = WorkQueue(
            self.redis,
            self.keys.queue(agent),
            GROUP,
            dead_letters=self.keys.dead_letters,
            max_deliveries=app.limits.max_deliveries,
            claim_idle_ms=app.limits.claim_idle_ms,
        )
        self.current: str | None = None
        store.register(app.schema)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Work until ``stop`` is set; the activation in hand is finished first."""
        stop = stop or asyncio.Event()
        backoff = 0.05
        while not stop.is_set():
            try:
                for delivery in await self.queue.take(self.name, count=1, block_ms=200):
                    await self.handle(delivery)
                backoff = 0.05
            except OUTAGE as exc:
                log.warning("agent %s: Redis unavailable, retrying: %s", self.agent.name, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def handle(self, delivery: Delivery) -> None:
        entry = delivery.fields
        board_id, aid = entry.get("board", ""), entry.get("activation", "")
        bk = self.keys.board(board_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(bk.activations, aid)
        pipe.hget(bk.meta, "status")
        raw, status = await pipe.execute()
        if raw is None:
            await self.queue.dead_letter(delivery, f"unknown activation {aid!r}")
            return
        act = Activation.model_validate_json(raw)
        if act.status in ("submitted", "failed", "timed_out", "cancelled") or status in (
            "escalated",
            "done",
            "failed",
            None,
        ):
            await self.queue.ack(delivery.entry_id)  # already done, or nothing to do
            return
        self.current = aid
        beat = asyncio.create_task(self._heartbeat(delivery.entry_id))
        try:
            await self._activate(act, delivery.entry_id)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            self.current = None

    async def _heartbeat(self, entry_id: str) -> None:
        """Keep the entry ours while the agent works: XCLAIM with JUSTID resets its idle
        time (without counting a delivery), so an activation longer than claim_idle_ms
        is not mistaken for a dead worker's and run twice."""
        every = self.queue.claim_idle_ms / 3000
        while True:
            await asyncio.sleep(every)
            try:
                await self.redis.xclaim(
                    self.queue.stream, GROUP, self.name, 0, [entry_id], justid=True
                )
            except RedisError as exc:  # the next beat may get through; the work goes on
                log.warning("agent %s: heartbeat failed: %s", self.agent.name, exc)

    async def _activate(self, act: Activation, entry_id: str) -> None:
        """Run the agent and submit what it produced. Three round trips in all: the
        context read (with the 'running' mark), the agent, then submission, the
        activation record and the queue ack in one pipeline (the ack last)."""
        started = time.time()
        act.status = "running"
        retries = 0

        def count(state: RetryCallState) -> None:
            nonlocal retries
            retries = state.attempt_number

        kind, error, reason = "proposal", "", ""
        output = Output()
        ctx: Context | None = None
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(TRANSIENT),
                stop=stop_after_attempt(self.retries),
                wait=wait_random_exponential(multiplier=0.05, max=2.0),
                before_sleep=count,
                reraise=True,
            ):
                with attempt:
                    ctx = await self._context(act)
                    output = to_output(await self._run(ctx, act))
        except SemanticError as exc:
            kind, error, reason = "failure", "semantic", str(exc)
        except (TypeError, ValueError) as exc:
            kind, error, reason = "failure", "semantic", f"{type(exc).__name__}: {exc}"
        except TRANSIENT as exc:
            # Escalate (as a timeout), do not fail the board: a slow call may still be
            # completing, and failing would compensate its effects too early.
            kind, error = "failure", "timeout"
            reason = f"gave up after {retries + 1} attempts: {type(exc).__name__}: {exc}"
        except NeedsHuman as exc:
            kind, error, reason = "failure", "human", str(exc)
        except FatalError as exc:
            kind, error, reason = "failure", "fatal", str(exc)
        except Exception as exc:  # an agent bug: fatal, with the cause recorded
            log.exception("agent %s failed on board %s", self.agent.name, act.board_id)
            kind, error, reason = "failure", "fatal", f"{type(exc).__name__}: {exc}"
        # What the model used is metered by the runtime; what the agent reports adds up.
        used = ctx.model if ctx is not None and isinstance(ctx.model, Metered) else None
        tokens_in = output.tokens_in + (used.tokens_in if used else 0)
        tokens_out = output.tokens_out + (used.tokens_out if used else 0)
        cost = output.cost + (used.cost if used else 0.0)
        patch = output.operations() if kind == "proposal" else []
        handoff = output.handoff if kind == "proposal" else None
        fields: dict[str, Any] = {
            "kind": kind,
            "board_id": act.board_id,
            "proposal_id": act.activation_id,
            "author": self.agent.name,
            "activation_id": act.activation_id,
            "trace_id": act.trace_id,
            "base": ctx.version if ctx is not None else act.base,
        }
        try:
            submission = Submission(
                **fields,
                patch=patch,
                reads=list(self.agent.reads),
                handoff=handoff,
                reason=(reason or output.reason)[:2000],
                error=error,  # type: ignore[arg-type]
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost=cost,
            )
        except ValidationError as exc:  # what the agent produced cannot even be sent
            kind, error, patch, handoff = "failure", "fatal", [], None
            fields["kind"] = kind
            submission = Submission(
                **fields,
                error="fatal",
                reason=(
                    f"the activation's output could not be submitted: {exc.errors()[0]['msg']}"
                )[:2000],
            )
        stream = self.keys.proposals(shard_of(act.board_id, self.shards))
        act.status = "submitted" if kind == "proposal" else "failed"
        act.finished_ms = int(time.time() * 1000)
        act.duration_ms = int((time.time() - started) * 1000)
        act.retries, act.outcome = retries, error or "proposed"
        act.tokens_in, act.tokens_out, act.cost = tokens_in, tokens_out, cost
        act.output = {"patch": patch, "handoff": handoff.model_dump() if handoff else None}
        if ctx is not None and ctx.tools is not None:
            act.tool_calls = list(ctx.tools.calls)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(stream, {"s": submission.model_dump_json()})
        pipe.hset(
            self.keys.board(act.board_id).activations, act.activation_id, act.model_dump_json()
        )
        pipe.xack(self.queue.stream, GROUP, entry_id)
        await pipe.execute()

    async def _run(self, ctx: Context, act: Activation) -> Any:
        if ctx.deadline_s is not None and ctx.deadline_s <= 0:
            raise TimeoutError(f"activation {act.activation_id} started after its deadline")
        return await asyncio.wait_for(self.agent.run(ctx), ctx.deadline_s)

    async def _context(self, act: Activation) -> Context:
        """The agent's keys (those it reads and owns, nothing else) at the current version."""
        keys = [*dict.fromkeys([*self.agent.reads, *self.agent.owns])]
        if act.reason == "summarise" and act.payload.get("key") in self.app.schema.keys:
            keys.append(str(act.payload["key"]))
        bk = self.keys.board(act.board_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(bk.activations, act.activation_id, act.model_dump_json())  # running
        pipe.hget(bk.meta, "version")
        pipe.hmget(bk.state, keys or ["-"])
        pipe.hgetall(bk.loops)
        _, version, values, loops = await pipe.execute()
        board = {k: codec.loads(v) for k, v in zip(keys, values, strict=False) if v is not None}
        failed = {
            k[7:]: v for k, v in cast(dict[str, str], loops).items() if k.startswith("failed:")
        }
        tools = None
        if self.app.tools is not None:
            tools = self.app.tools.bind(
                self.redis,
                self.keys.prefix,
                agent=self.agent.name,
                board_id=act.board_id,
                activation_id=act.activation_id,
            )
        act.keys_read = keys
        remaining = None
        if act.deadline_ms:
            remaining = (act.deadline_ms - time.time() * 1000) / 1000
        return Context(
            board_id=act.board_id,
            version=int(version or 0),
            board=board,
            activation_id=act.activation_id,
            trace_id=act.trace_id,
            feedback=act.feedback,
            payload=dict(act.payload),
            deadline_s=remaining,
            failed=failed,
            model=Metered(self.app.model) if self.app.model is not None else None,
            tools=tools,
        )
