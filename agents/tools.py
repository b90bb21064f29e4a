"""Tools with side effects, made safe to retry.

Each tool declares its input and output schemas, whether it has side effects, a rate
limit, which agents may call it, and optionally a compensation. Calls with side effects
carry an idempotency key, stored in Redis: a retried or duplicated call (a redelivered
activation, a retry after a timeout, another process) returns the first result and does
not repeat the effect. The first caller holds a lease while the tool runs; a call that
times out keeps running and stores its result, so the retry collects it instead of
acting again. (If the process running it dies, the lease expires and the next call runs
the tool again: only the tool itself can make that case exactly-once.)

Rate limits are a sliding window shared by every process (one Lua script on the server's
clock). A circuit breaker opens after repeated errors; its state lives in Redis, where
operators see it. Compensations of successful calls are recorded per board and run in
reverse order if the board fails (a saga).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

from blackboard.agents.models import ToolSpec
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis

from blackboard import codec
from blackboard.errors import ConfigError, FatalError, SemanticError, TransientError
from blackboard.keys import GlobalKeys, check_name

__all__ = ["BoundTools", "Tool", "ToolRegistry"]

_RATE = """
-- rate.lua: sliding-window rate limit shared by all processes.
-- KEYS[1] zset of call times (ms)
-- ARGV[1] window (ms), ARGV[2] limit, ARGV[3] unique member for this call
-- Returns 0 if the call may proceed (and records it), else ms to wait.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tonumber(oldest[2]) + window - now + 1
"""

_RELEASE = """
-- release.lua: compare-and-delete. KEYS[1] the claim, ARGV[1] the caller's token.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Fn = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    """A callable an agent may use through ``ctx.tools.call(name, args)``, or a model
    through the tool loop (``ctx.complete(..., tools=[name])``).

    ``fn`` receives the arguments validated as an ``input`` model and returns an
    ``output`` model (or what validates as one). Whatever it raises becomes a
    :class:`~blackboard.errors.TransientError` for the caller (and counts toward the
    breaker); in the tool loop the model is told the error as the tool's answer. With
    ``side_effects``, a call runs at most once per idempotency key, across retries and
    processes, as long as the process running it lives (see the module's doc).

    Attributes:
        name: unique in the registry.
        fn: ``async fn(input) -> output`` (input is a validated ``input`` model).
        input, output: pydantic models of the arguments and the result.
        side_effects: whether calls need idempotency keys (and may be compensated).
        rate_limit: (calls, per seconds) across every process, or None.
        agents: agents allowed to call it (None: all).
        compensate: ``async fn(input, output)`` undoing a successful call.
        timeout_s: how long a caller waits for one call.
        breaker_errors: consecutive errors that open the circuit breaker.
        breaker_reset_s: how long it stays open.
        description: what it does, for a model offered the tool (default: the
            docstring of ``fn``).
    """

    name: str
    fn: Fn
    input: type[BaseModel]
    output: type[BaseModel]
    side_effects: bool = False
    rate_limit: tuple[int, float] | None = None
    agents: tuple[str, ...] | None = None
    compensate: Callable[[Any, Any], Awaitable[None]] | None = None
    timeout_s: float = 30.0
    breaker_errors: int = 5
    breaker_reset_s: float = 30.0
    description: str = ""

    def describe(self) -> str:
        return self.description or " ".join((self.fn.__doc__ or self.name).split())

    @cached_property
    def spec(self) -> ToolSpec:
        """The tool as a model is offered it (built once: its schema does not change)."""
        return ToolSpec(self.name, self.describe(), self.input.model_json_schema())


@dataclass
class ToolRegistry:
    """The tools of an app (``App(tools=ToolRegistry([...]))``)."""

    tools: Sequence[Tool]
    lease_s: float = 60.0
    """How long a caller holds an idempotency key while its call runs."""
    _by_name: dict[str, Tool] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        for tool in self.tools:
            check_name("tool", tool.name)
            if tool.name in self._by_name:
                raise ConfigError(f"two tools are named {tool.name!r}.")
            self._by_name[tool.name] = tool

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def tool(self, name: str) -> Tool:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(
                f"no tool named {name!r}; tools are {', '.join(sorted(self._by_name))}."
            ) from None

    def tool_or_none(self, name: str) -> Tool | None:
        return self._by_name.get(name)

    def bind(
        self, redis: Redis, prefix: str, *, agent: str, board_id: str, activation_id: str
    ) -> BoundTools:
        return BoundTools(self, redis, GlobalKeys(prefix), agent, board_id, activation_id)

    async def breakers(self, redis: Redis, prefix: str) -> dict[str, dict[str, int]]:
        """Breaker state per tool: consecutive errors and open-until time (ms)."""
        keys = GlobalKeys(prefix)
        result = {}
        for name in self._by_name:
            raw = cast(dict[str, str], await redis.hgetall(keys.breaker(name)))
            result[name] = {
                "errors": int(raw.get("errors", 0)),
                "open_until_ms": int(raw.get("open_until", 0)),
            }
        return result

    async def compensate(self, redis: Redis, prefix: str, board_id: str) -> list[str]:
        """Undo a failed board's successful side-effect calls, newest first."""
        saga = GlobalKeys(prefix).board(board_id).saga
        done = []
        while (raw := await redis.rpop(saga)) is not None:
            record = codec.loads(cast(str, raw))
            tool = self.tool(record["tool"])
            if tool.compensate is not None:
                await tool.compensate(
                    tool.input.model_validate(record["input"]),
                    tool.output.model_validate(record["output"]),
                )
                done.append(f"{tool.name}:{record['key']}")
        return done


class BoundTools:
    """The registry as one activation sees it (``ctx.tools``)."""

    def __init__(
        self,
        registry: ToolRegistry,
        redis: Redis,
        keys: GlobalKeys,
        agent: str,
        board_id: str,
        activation_id: str,
    ) -> None:
        self.registry = registry
        self.redis = redis
        self.keys = keys
        self.agent = agent
        self.board = keys.board(board_id)
        self.activation_id = activation_id
        self.calls: list[dict[str, Any]] = []
        """What this activation called (recorded in its envelope)."""
        self._counts: dict[str, int] = {}
        self._rate = redis.register_script(_RATE)
        self._release_script = redis.register_script(_RELEASE)
        self._running: set[asyncio.Future[Any]] = set()

    async def call(
        self, name: str, args: Mapping[str, Any] | BaseModel, *, idempotency_key: str | None = None
    ) -> Any:
        """Call a tool; returns its output model.

        The default idempotency key is (activation, tool, n-th call of it), so a
        redelivered activation repeating its calls gets the first results back.

        Raises:
            FatalError: the agent may not call the tool.
            SemanticError: the arguments do not match the tool's input schema.
            TransientError: rate-limited past the timeout, breaker open, timed out
                (retry: the same key collects the result), or the tool failed.
        """
        tool = self.registry.tool(name)
        if tool.agents is not None and self.agent not in tool.agents:
            raise FatalError(
                f"agent {self.agent!r} may not call tool {name!r} (allowed: "
                f"{', '.join(tool.agents)})."
            )
        try:
            data = (
                args
                if isinstance(args, tool.input)
                else tool.input.model_validate(
                    args.model_dump() if isinstance(args, BaseModel) else dict(args)
                )
            )
        except ValidationError as exc:
            raise SemanticError(
                f"arguments of tool {name!r} do not match its input: {exc.errors()[0]['msg']}"
            ) from exc
        self._counts[name] = n = self._counts.get(name, 0) + 1
        key = idempotency_key or f"{self.activation_id}:{name}:{n}"
        started = time.monotonic()
        try:
            if tool.side_effects:
                output = await self._once(tool, data, key)
            else:
                output = await self._plain(tool, data)
        finally:
            self.calls.append(
                {"tool": name, "key": key, "ms": int((time.monotonic() - started) * 1000)}
            )
        return output

    async def _guarded(self, tool: Tool, data: BaseModel, timeout_s: float) -> Any:
        """Breaker, rate limit, then the call within ``timeout_s``; returns the raw result."""
        breaker = self.keys.breaker(tool.name)
        open_until = await self.redis.hget(breaker, "open_until")
        if open_until and int(open_until) > time.time() * 1000:
            raise TransientError(
                f"circuit breaker of tool {tool.name!r} is open after repeated errors; retry later."
            )
        await self._wait_for_rate(tool)
        try:
            return await asyncio.wait_for(tool.fn(data), timeout_s)
        except Exception as exc:
            errors = await self.redis.hincrby(breaker, "errors", 1)
            if errors >= tool.breaker_errors:
                await self.redis.hset(
                    breaker, "open_until", int(time.time() * 1000 + tool.breaker_reset_s * 1000)
                )
            if isinstance(exc, TimeoutError | asyncio.TimeoutError):
                raise TransientError(f"tool {tool.name!r} timed out after {timeout_s:g} s") from exc
            raise TransientError(f"tool {tool.name!r} failed: {type(exc).__name__}: {exc}") from exc

    def _output(self, tool: Tool, raw: Any) -> BaseModel:
        try:
            return tool.output.model_validate(
                raw.model_dump() if isinstance(raw, BaseModel) else raw
            )
        except ValidationError as exc:
            raise FatalError(
                f"tool {tool.name!r} returned output that does not match its "
                f"schema: {exc.errors()[0]['msg']}"
            ) from exc

    async def _plain(self, tool: Tool, data: BaseModel) -> Any:
        output = self._output(tool, await self._guarded(tool, data, tool.timeout_s))
        await self.redis.hset(self.keys.breaker(tool.name), "errors", 0)
        return output

    async def _wait_for_rate(self, tool: Tool) -> None:
        if tool.rate_limit is None:
            return
        calls, per = tool.rate_limit
        deadline = time.monotonic() + tool.timeout_s
        while True:
            wait_ms = int(
                await self._rate(
                    keys=[self.keys.rate(tool.name)],
                    args=[int(per * 1000), calls, uuid.uuid4().hex],
                )
            )
            if wait_ms == 0:
                return
            if time.monotonic() + wait_ms / 1000 > deadline:
                raise TransientError(
                    f"tool {tool.name!r} is rate-limited to {calls} calls "
                    f"per {per:g} s; retry later."
                )
            await asyncio.sleep(wait_ms / 1000)

    async def _once(self, tool: Tool, data: BaseModel, key: str) -> Any:
        """At most one effect per idempotency key, across processes."""
        results, claim = self.board.tool_results, self.board.tool_claim(key)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + tool.timeout_s
        while True:
            stored = await self.redis.hget(results, key)
            if stored is not None:
                return self._stored(tool, key, cast(str, stored))
            if await self.redis.set(claim, token, nx=True, px=int(self.registry.lease_s * 1000)):
                break
            if time.monotonic() > deadline:  # someone else's call is still running
                raise TransientError(
                    f"tool {tool.name!r} call {key} is still running "
                    "elsewhere; retry to collect its result."
                )
            await asyncio.sleep(0.01)
        task = asyncio.ensure_future(self._run_and_store(tool, data, key, token))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            return await asyncio.wait_for(asyncio.shield(task), tool.timeout_s)
        except TimeoutError as exc:
            raise TransientError(
                f"tool {tool.name!r} timed out after {tool.timeout_s:g} s; "
                "it may still complete: retry with the same key to collect "
                "its result."
            ) from exc

    def _stored(self, tool: Tool, key: str, stored: str) -> Any:
        record = codec.loads(stored)
        if "failed" in record:  # the effect happened; its output was unusable
            raise FatalError(
                f"tool {tool.name!r} call {key} already ran and failed: {record['failed']}"
            )
        return tool.output.model_validate(record["output"])

    async def _run_and_store(self, tool: Tool, data: BaseModel, key: str, token: str) -> Any:
        claim = self.board.tool_claim(key)
        try:
            # Outlives the caller's timeout (up to the lease), so a retry collects it.
            raw = await self._guarded(tool, data, self.registry.lease_s)
        except BaseException:
            await self._release(claim, token)  # no effect recorded: the call may be retried
            raise
        # The effect has happened: record something before anything else can fail, so
        # the same key never acts again.
        try:
            output = self._output(tool, raw)
        except FatalError as exc:
            await self.redis.hset(self.board.tool_results, key, codec.dumps({"failed": str(exc)}))
            await self._release(claim, token)
            raise
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            self.board.tool_results, key, codec.dumps({"output": output.model_dump(mode="json")})
        )
        if tool.compensate is not None:
            pipe.rpush(
                self.board.saga,
                codec.dumps(
                    {
                        "tool": tool.name,
                        "key": key,
                        "input": data.model_dump(mode="json"),
                        "output": output.model_dump(mode="json"),
                    }
                ),
            )
        await pipe.execute()
        await self._release(claim, token)
        await self.redis.hset(self.keys.breaker(tool.name), "errors", 0)
        return output

    async def _release(self, claim: str, token: str) -> None:
        """Delete the claim only if it is still ours (its lease may have expired and
        been taken by another caller)."""
        await self._release_script(keys=[claim], args=[token])
