"""Making a Redis client (a real server by URL, or the embedded in-process default), and
sending concurrent tasks' commands together."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection, Connection
from redis.connection import HiredisRespSerializer
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from blackboard.errors import ConfigError

__all__ = ["Command", "Pipeliner", "connect"]

_SCHEMES = ("redis://", "rediss://", "unix://")


def connect(url: str | None = None, *, max_connections: int = 64) -> Redis:
    """A client with ``decode_responses=True``. No I/O happens until first use.

    ``url=None`` gives the embedded store: fakeredis with Lua, in this process, so the
    first run needs no server. Each call makes a fresh, empty embedded server; share one
    :class:`~blackboard.store.BoardStore` (or its client) between components that must see
    the same boards. A blocking pool bounds connections under many concurrent tasks.
    """
    if url is None:
        import fakeredis  # the embedded default only; a real deployment never loads it

        return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)
    if not url.startswith(_SCHEMES):
        raise ConfigError(
            f"unsupported Redis URL {url!r}: use redis://host:port/db, "
            "rediss://… for TLS, or unix:///path/to/redis.sock."
        )
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        timeout=20,
        health_check_interval=30,
    )
    pool.connection_class = _hiredis_packing(pool.connection_class)
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


def _hiredis_packing(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """redis-py's asyncio connections pack commands in Python, its sync ones with
    hiredis (redis-py's own ``HiredisRespSerializer``), which is ~10x faster: a commit
    carries dozens of arguments. The bytes on the wire are the same."""
    if not HIREDIS_AVAILABLE:
        return cls
    import hiredis

    serializer = HiredisRespSerializer()

    class Packing(cls):  # type: ignore[valid-type,misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            # A one-word command name and plain arguments (str, bytes, numbers: all this
            # package sends) go straight to hiredis; the serializer first splits names
            # like "CONFIG GET" and converts buffers, a pass over every argument.
            if isinstance(args[0], str) and " " not in args[0]:
                with contextlib.suppress(TypeError):
                    return [hiredis.pack_command(args)]
            return serializer.pack(*args)  # type: ignore[no-any-return]

        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            # With a socket timeout, redis-py runs each write in a task of its own
            # (asyncio.wait_for): a task and three loop callbacks per round trip. The
            # same timeout as a scope in this task costs neither; redis-py's own
            # handling (disconnect, errors) still runs inside it.
            limit: float | None = self.socket_timeout  # type: ignore[has-type]
            if not limit:
                await super().send_packed_command(command, check_health)
                return
            self.socket_timeout = None
            try:
                async with asyncio.timeout(limit):
                    await super().send_packed_command(command, check_health)
            except TimeoutError:
                raise RedisTimeoutError("Timeout writing to socket") from None
            finally:
                self.socket_timeout = limit

    Packing.__name__ = Packing.__qualname__ = cls.__name__
    return Packing


Command = tuple[str, tuple[Any, ...], dict[str, Any]]
"""A client method's name, its arguments and keyword arguments, e.g.
``("hset", (key, field, value), {})``; ``("script", (script, keys, args), {})`` runs a
registered :class:`~redis.commands.core.AsyncScript` by its SHA."""


class Pipeliner:
    """Sends concurrent tasks' commands together: while one pipeline is in flight, the
    commands issued meanwhile wait and then go in one pipeline (one round trip for a
    hundred boards' commits, or a fan-out's branches, instead of one each). A lone
    caller's commands go at once, at the cost of a plain pipeline. Each caller gets its
    own replies, in order.

    Commands from different callers are independent (no MULTI): each caller's list runs
    in order, but other clients' commands may run between them.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pipe = _Pinned(redis.connection_pool, redis.response_callbacks, False, None)
        self._busy = False
        self._waiting: list[tuple[list[Command], asyncio.Future[list[Any]], bool]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        """Give the connection it keeps back to the pool (the client stays open)."""
        await self._pipe.release()

    async def execute(self, *commands: Command, raise_on_error: bool = True) -> list[Any]:
        """Run ``commands`` in order; their replies. The first error reply is raised
        (after every command ran), or with ``raise_on_error=False`` returned in its place
        (a batch of independent commands, each caller handling its own)."""
        if self._busy:
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._waiting.append((list(commands), future, raise_on_error))
            return await future
        self._busy = True
        try:
            [replies] = await self._replies([list(commands)])
        finally:
            self._next()
        error = next((r for r in replies if isinstance(r, Exception)), None)
        if error is not None and raise_on_error:
            raise error
        return replies

    def _next(self) -> None:
        """Send what waited meanwhile, in one pipeline (in a task of its own, so the
        caller that was in flight goes on), or become idle."""
        if not self._waiting:
            self._busy = False
            return
        waiting, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._run(waiting))
        self._sending.add(task)  # a task nobody references may be collected mid-flight
        task.add_done_callback(self._sending.discard)

    async def _run(
        self, waiting: list[tuple[list[Command], asyncio.Future[list[Any]], bool]]
    ) -> None:
        try:
            grouped = await self._replies([commands for commands, _, _ in waiting])
        except BaseException as exc:  # the connection failed: every caller hears it
            for _, future, _ in waiting:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            self._next()
        for (_, future, raise_on_error), mine in zip(waiting, grouped, strict=True):
            if future.done():  # the caller was cancelled
                continue
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if error is not None and raise_on_error:
                future.set_exception(error)
            else:
                future.set_result(mine)

    async def _replies(self, groups: list[list[Command]], again: bool = True) -> list[list[Any]]:
        """Each caller's replies to its commands, all sent in one round trip. A script
        the server lost (restarted, flushed) did not run: it is loaded, and that caller's
        commands from it on run again, in their order, except scripts that did run.
        What a caller sends after a script depends on it or is safe to repeat (a WAIT, a
        read, a watch), so it must not have run before the script."""
        replies = iter(await self._pipeline([c for group in groups for c in group]))
        grouped = [[next(replies) for _ in group] for group in groups]
        again_at: list[tuple[int, list[int]]] = []  # (caller, its commands to run again)
        for n, mine in enumerate(grouped):
            first = next((i for i, r in enumerate(mine) if isinstance(r, NoScriptError)), None)
            if first is not None:
                redo = [
                    i
                    for i in range(first, len(mine))
                    if groups[n][i][0] != "script" or isinstance(mine[i], NoScriptError)
                ]
                again_at.append((n, redo))
        if not again_at or not again:
            return grouped
        scripts = {
            groups[n][i][1][0].sha: groups[n][i][1][0]
            for n, indices in again_at
            for i in indices
            if isinstance(grouped[n][i], NoScriptError)
        }
        for script in scripts.values():
            await self.redis.script_load(script.script)
        rerun = await self._replies(
            [[groups[n][i] for i in indices] for n, indices in again_at], again=False
        )
        for (n, indices), mine in zip(again_at, rerun, strict=True):
            for i, reply in zip(indices, mine, strict=True):
                grouped[n][i] = reply
        return grouped

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        """One round trip: ``commands`` in one pipeline, their replies (errors in
        place)."""
        pipe = self._pipe  # one pipeline in flight at a time: one connection serves them
        for name, args, kwargs in commands:
            if name == "script":
                script, keys, argv = args
                pipe.evalsha(script.sha, len(keys), *keys, *argv)
            else:
                getattr(pipe, name)(*args, **kwargs)
        return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]


class _Pinned(Pipeline):
    """The Pipeliner's pipeline. Commands are queued with redis-py's command methods (its
    argument encoding, its reply callbacks) and sent on one connection kept from one
    round trip to the next. redis-py's own ``execute`` takes a connection from the pool
    and gives it back each time (through a lock and a task of its own), and wraps the
    round trip in hooks this client does not use (retries, which its pool turns off;
    observability; HIMPORT field sets): together more than a lone commit's send costs.
    A connection that failed, or that the server closed, is reconnected before its next
    use, as the pool would. :meth:`release` gives it back; closing the client closes it
    in any case."""

    _kept: Connection | None = None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands; their replies, an error reply in place of the
        command's (raised instead with ``raise_on_error``). A failure of the round trip
        itself (connection lost, timeout, cancelled) drops the connection, as redis-py
        does: its next use reconnects."""
        stack, self.command_stack = self.command_stack, []
        if not stack:
            return []
        connection = self._kept
        if connection is None:
            connection = self._kept = await self.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        else:  # the pool's check: reconnect one the server closed
            await self.connection_pool.ensure_connection(connection)
        # Packed before anything is sent: an argument that cannot be sent (redis-py's
        # DataError) fails this call alone, and the connection stays in step.
        packed = connection.pack_commands([args for args, _ in stack])
        limit = connection.socket_timeout
        # With a socket timeout, redis-py sets a deadline for every reply it reads (a
        # timer each, most of a reply's cost when a hundred come in one read). One
        # deadline for the round trip instead, moved on as replies arrive: it still
        # fires once the server has sent nothing for about the socket timeout.
        connection.socket_timeout = None
        try:
            async with asyncio.timeout(limit) as deadline:
                await connection.send_packed_command(packed)
                replies: list[Any] = []
                for args, options in stack:
                    try:
                        replies.append(await self.parse_response(connection, args[0], **options))
                    except ResponseError as exc:
                        replies.append(exc)
                    if limit:  # progress: move the deadline on, an eighth at a time
                        due = asyncio.get_running_loop().time() + limit
                        if due - (deadline.when() or due) > limit / 8:
                            deadline.reschedule(due)
        except BaseException as exc:  # the replies left unread would answer the next call
            await connection.disconnect(nowait=True)
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(
                    f"Timeout: Redis took no request and sent no reply for {limit} s "
                    "(socket_timeout); is the server overloaded or stopped?"
                ) from None
            raise
        finally:
            connection.socket_timeout = limit
        if raise_on_error:
            error = next((r for r in replies if isinstance(r, Exception)), None)
            if error is not None:
                raise error
        return replies

    async def release(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            await self.connection_pool.release(kept)
