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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

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
    CorruptData,
    FatalError,
    NeedsHuman,
    SemanticError,
    TransientError,
)
from blackboard.keys import GlobalKeys
from blackboard.outages import OUTAGE, riding_out
from blackboard.queues import RUNNING_FIELD, Delivery, Liveness, WorkQueue, shard_of
from blackboard.records import Activation, ContextRead, Submission
from blackboard.status import STOPPED as BOARD_STOPPED
from blackboard.store import BoardStore

__all__ = ["AgentWorker"]

log = logging.getLogger(__name__)

GROUP = "workers"
STOPPED: frozenset[str | None] = frozenset({*BOARD_STOPPED, None})
"""Board statuses (None: gone) on which nothing more is run."""
T = TypeVar("T")
TRANSIENT = (TransientError, ConnectionError, TimeoutError, asyncio.TimeoutError)


class _Expired(Exception):
    """The activation's own deadline passed: not retried (a new attempt would start
    after it), and reported in the watchdog's words, whichever of the two is first."""


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
            keys=self.keys,
        )
        self.liveness = Liveness(self.redis, self.keys, self.name)
        # Settled when the app was built: worked out once, not per activation.
        self._sees = self.agent.sees
        self._model = self.agent.model if self.agent.model is not None else app.model
        self.current: str | None = None
        self.submit_local: Callable[[Submission, Activation], Awaitable[Any]] | None = None
        """Set when the supervisor runs in this process (embedded mode): activations
        handed over by :meth:`run_local` are submitted to it directly."""
        store.register(app.schema)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Work until ``stop`` is set; the activation in hand is finished first. While
        this runs, the instance beats (:class:`~blackboard.queues.Liveness`): if its
        process dies, another instance takes over what it held within seconds. It starts
        with what its consumer name still holds (a predecessor of the same name killed)."""
        stop = stop or asyncio.Event()
        beating = asyncio.Event()  # set once the work in hand is done
        alive = asyncio.create_task(self.liveness.run(beating))
        own: str | None = "0"  # this name's pending entries first, then new ones

        def stopping(_: RetryCallState) -> bool:
            return stop.is_set()

        async def step() -> str | None:
            return await self._step(own)

        try:
            while not stop.is_set():
                # An outage is ridden out step by step; asked to stop meanwhile, it ends.
                with contextlib.suppress(*OUTAGE):
                    own = await riding_out(f"agent {self.agent.name}", log, step, stop=stopping)
        finally:
            beating.set()  # the name is let go: what it still holds is taken over at once
            await asyncio.gather(alive, return_exceptions=True)

    async def _step(self, own: str | None) -> str | None:
        """Take one delivery (this name's pending ones first, from ``own`` on) and handle
        it; returns where this name's pending entries continue (None: all taken)."""
        if own is not None:
            deliveries = await self.queue.take_own(self.name, after=own, count=1)
            own = deliveries[-1].entry_id if deliveries else None
        else:
            deliveries = await self.queue.take(self.name, count=1, block_ms=200)
        for delivery in deliveries:
            await self.handle(delivery)
        return own

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
        try:
            act = codec.load_model(Activation, raw, f"activation {aid!r} of board {board_id!r}")
        except CorruptData as exc:  # no retry mends it: set aside for a person, say why
            await self.queue.dead_letter(delivery, str(exc))
            return
        if act.status in ("submitted", "failed", "timed_out", "cancelled") or status in STOPPED:
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

    async def run_local(
        self,
        board_id: str,
        activation_id: str,
        record: Activation | None,
        context: ContextRead | None = None,
    ) -> None:
        """Run an activation handed over in this process by the supervisor (embedded
        mode): no queue, no stream. ``record`` is the activation the supervisor just
        created, ``context`` the board read with the commit that created it. Without a
        record (a recovery), it is read, and run only if still open on a board not
        stopped; if its submission was kept, that is sent again instead."""
        if record is None:
            bk = self.keys.board(board_id)
            pipe = self.redis.pipeline(transaction=True)
            pipe.hget(bk.activations, activation_id)
            pipe.hget(bk.meta, "status")
            pipe.zscore(bk.open, activation_id)
            raw, status, still_open = await pipe.execute()
            if raw is None or status in STOPPED or still_open is None:
                return
            record = codec.load_model(
                Activation, raw, f"activation {activation_id!r} of board {board_id!r}"
            )
            if record.submission is not None:  # it ran and submitted; routing did not finish
                kept = Submission.model_validate(record.submission)
                await self._submit_local(kept, record.model_copy(update={"submission": None}))
                return
        self.current = activation_id
        try:
            await self._activate(record, None, context)
        finally:
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

    async def _activate(
        self, act: Activation, entry_id: str | None, read: ContextRead | None = None
    ) -> None:
        """Run the agent and submit what it produced. Three round trips in all: the
        context read (with the 'running' mark), the agent, then submission, the
        activation record and the queue ack in one pipeline (the ack last). Without a
        queue entry (embedded mode), the submission goes to the supervisor in this
        process, and the record is written by the routing that closes the activation."""
        started = time.time()
        act.status = "running"
        kind, error, reason = "proposal", "", ""
        output = Output()
        ctx: Context | None = None

        async def attempt() -> None:
            nonlocal ctx, read, output
            ctx = await self._context(act, read)
            read = None  # a retry reads afresh
            output = to_output(await self._run(ctx, act))

        tried = [0]
        try:
            await self._attempts(attempt, tried, act.deadline_ms)
        except _Expired as exc:
            kind, error, reason = "failure", "timeout", str(exc)
        except SemanticError as exc:
            kind, error, reason = "failure", "semantic", str(exc)
        except (TypeError, ValueError) as exc:
            kind, error, reason = "failure", "semantic", f"{type(exc).__name__}: {exc}"
        except TRANSIENT as exc:
            # Escalate (as a timeout), do not fail the board: a slow call may still be
            # completing, and failing would compensate its effects too early.
            kind, error = "failure", "timeout"
            reason = f"gave up after {tried[0] + 1} attempts: {type(exc).__name__}: {exc}"
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
        act.status = "submitted" if kind == "proposal" else "failed"
        act.finished_ms = int(time.time() * 1000)
        act.duration_ms = int((time.time() - started) * 1000)
        act.retries, act.outcome = tried[0], error or "proposed"
        act.tokens_in, act.tokens_out, act.cost = tokens_in, tokens_out, cost
        act.output = {"patch": patch, "handoff": handoff.model_dump() if handoff else None}
        if ctx is not None and ctx.tools is not None:
            act.tool_calls = list(ctx.tools.calls)
        if entry_id is None:
            await self._submit_local(submission, act)
            return
        # The record goes with the submission: the supervisor writes it when it closes
        # the activation (this agent's Redis user cannot write board keys; issue 23).
        stream = self.keys.submissions(self.agent.name, shard_of(act.board_id, self.shards))
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(stream, {"s": submission.model_dump_json(), "a": act.model_dump_json()})
        pipe.xack(self.queue.stream, GROUP, entry_id)
        await pipe.execute()

    async def _submit_local(self, submission: Submission, act: Activation) -> None:
        """Hand the submission to the supervisor in this process. A reply lost to an
        outage is not a lost submission: it is sent again (a commit already made is
        recognised by its proposal id, and the routing's pending activations come
        back), until Redis answers or the activation's deadline passes."""
        assert self.submit_local is not None, "run_local needs submit_local"

        def expired(_: RetryCallState) -> bool:
            # Past the deadline the last outage is raised: the activation is left open,
            # the watchdog reports it, and a restart resends it.
            return bool(act.deadline_ms) and time.time() * 1000 > act.deadline_ms

        async def submit() -> None:
            assert self.submit_local is not None
            await self.submit_local(submission, act)

        await riding_out(f"agent {self.agent.name} submitting", log, submit, stop=expired)

    async def _attempts(
        self, attempt: Callable[[], Awaitable[None]], tried: list[int], deadline_ms: int = 0
    ) -> None:
        """Run ``attempt``, retrying transient failures with exponential backoff and
        jitter, capped, up to ``retries`` attempts in all (``tried[0]``: the attempts
        made before the last one), never waiting past ``deadline_ms`` (the activation's;
        0: none). The first attempt runs without the retry machinery, whose cost would
        otherwise be paid on every activation."""
        try:
            await attempt()
            return
        except TRANSIENT as exc:
            if self.retries <= 1:
                raise
            failed: BaseException | None = exc
        # U(0, 0.05 s) after the first attempt, then doubling: this loop counts from the
        # second attempt, so its own waits use twice the multiplier for the same sequence.
        first = wait_random_exponential(multiplier=0.05, max=2.0)
        later = wait_random_exponential(multiplier=0.1, max=2.0)

        async def before(state: RetryCallState) -> None:
            if state.attempt_number == 1:
                pause = self._pause(failed, first(state), deadline_ms)  # may end it here
                tried[0] = 1
                await asyncio.sleep(pause)
            tried[0] = state.attempt_number

        def wait(state: RetryCallState) -> float:
            failed = state.outcome.exception() if state.outcome is not None else None
            return self._pause(failed, later(state), deadline_ms)

        async for retry in AsyncRetrying(
            retry=retry_if_exception_type(TRANSIENT),
            stop=stop_after_attempt(self.retries - 1),
            before=before,
            wait=wait,
            reraise=True,
        ):
            with retry:
                await attempt()

    def _pause(self, failed: BaseException | None, backoff: float, deadline_ms: int) -> float:
        """The wait before the next attempt: the backoff, or longer if the provider asked
        for it (a 429's Retry-After). A wait that would end past the activation's
        deadline is pointless (the attempt after it could not run): if the provider asked
        for it, the activation ends now as a timeout saying so; a backoff is cut short at
        the deadline, where the next attempt reports the timeout."""
        asked = getattr(failed, "retry_after", None)
        pause = backoff if asked is None else max(backoff, float(asked))
        if not deadline_ms:
            return min(pause, self.app.limits.activation_timeout_s)
        left = deadline_ms / 1000 - time.time()
        if asked is not None and pause >= left:
            raise _Expired(
                f"not retried: the provider asked to wait {float(asked):g} s before the "
                f"next attempt, but the activation's deadline is {max(left, 0.0):.1f} s "
                f"away (the failure: {failed}). Raise activation_timeout_s or the "
                "provider's rate limit."
            ) from failed
        return max(0.0, min(pause, left))

    async def _run(self, ctx: Context, act: Activation) -> Any:
        if ctx.deadline_s is None:
            return await self.agent.run(ctx)
        if ctx.deadline_s <= 0:
            raise _Expired(act.timed_out(self.app.limits.activation_timeout_s))
        scope = asyncio.timeout(ctx.deadline_s)  # no task of its own, unlike wait_for
        try:
            async with scope:
                return await self.agent.run(ctx)
        except TimeoutError:
            if scope.expired():  # the activation's deadline, not a timeout inside the agent
                raise _Expired(act.timed_out(self.app.limits.activation_timeout_s)) from None
            raise

    async def _context(self, act: Activation, read: ContextRead | None = None) -> Context:
        """The agent's keys (those it reads and owns, nothing else) at the current
        version, or as ``read`` with the commit that activated it."""
        keys = self._sees
        if act.reason == "summarise" and act.payload.get("key") in self.app.schema.keys:
            keys = [*keys, str(act.payload["key"])]
        if read is not None and all(k in read.values for k in keys):
            version: Any = read.version
            values: list[Any] = [read.values.get(k) for k in keys]
            loops: Any = read.loops
        else:
            bk = self.keys.board(act.board_id)
            pipe = self.redis.pipeline(transaction=True)
            # 'running', through the supervisor (see supervisor/authentication.py; issue 23)
            shard = shard_of(act.board_id, self.shards)
            pipe.xadd(
                self.keys.submissions(self.agent.name, shard),
                {RUNNING_FIELD: act.model_dump_json()},
            )
            pipe.hget(bk.meta, "version")
            pipe.hmget(bk.state, keys or ["-"])
            pipe.hgetall(bk.loops)
            _, version, values, loops = await pipe.execute()
        board = {k: codec.loads(v) for k, v in zip(keys, values, strict=False) if v is not None}
        failed = {
            k[7:]: v for k, v in cast(dict[str, str], loops).items() if k.startswith("failed:")
        }  # (the loop state is small: counters and failed branches)
        tools = None
        if self.app.tools is not None:
            tools = self.app.tools.bind(
                self.redis,
                self.keys.prefix,
                agent=self.agent.name,
                board_id=act.board_id,
                activation_id=act.activation_id,
            )
        act.keys_read = list(keys)
        model = self._model
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
            model=Metered(model, self.app.pricing) if model is not None else None,
            tools=tools,
        )
