"""Making a Redis client (a real server by URL, or the embedded in-process default), and
sending concurrent tasks' commands together.

(Past 500 lines on purpose: the ``Pipeliner``'s fast I/O on redis-py internals and its
plain-pipeline fallback are one seam, kept together so that the one place that depends
on redis-py's internals can be read, checked and replaced as a whole.)"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from blackboard.errors import ConfigError

__all__ = ["FAST_IO", "Command", "Pipeliner", "connect", "missing_internals"]

_SCHEMES = ("redis://", "rediss://", "unix://")

# The redis-py internals the fast I/O builds on (object, attribute path), and parameters
# it passes to them: redis-py does not promise them, so they are checked, not assumed.
_USES: tuple[tuple[str, str], ...] = (
    ("redis.utils", "HIREDIS_AVAILABLE"),
    ("redis.connection", "HiredisRespSerializer.pack"),
    ("redis.asyncio.connection", "AbstractConnection._host_error"),
    ("redis.asyncio.connection", "AbstractConnection.pack_command"),
    ("redis.asyncio.connection", "AbstractConnection.pack_commands"),
    ("redis.asyncio.connection", "AbstractConnection.send_packed_command"),
    ("redis.asyncio.connection", "AbstractConnection.read_response"),
    ("redis.asyncio.connection", "AbstractConnection.disconnect"),
    ("redis.asyncio.connection", "ConnectionPool.get_connection"),
    ("redis.asyncio.connection", "ConnectionPool.ensure_connection"),
    ("redis.asyncio.connection", "ConnectionPool.release"),
    ("redis.asyncio.client", "Pipeline.parse_response"),
)
_PARAMETERS = {"send_packed_command": "check_health", "disconnect": "nowait"}
_INSTANCE = ("_parser", "socket_timeout", "health_check_interval", "next_health_check")


def missing_internals() -> list[str]:
    """The redis-py internals the fast I/O (see :func:`connect`) needs that the installed
    redis-py lacks: none from 5.2 to 8.x (CI runs tests/blackboard/test_pipeliner.py
    against both ends of the range the project allows)."""
    missing = []
    for module, path in _USES:
        found: Any = importlib.import_module(module)
        for name in path.split("."):
            found = getattr(found, name, None)
        wanted = _PARAMETERS.get(path.rsplit(".", 1)[-1])
        if not found or (wanted and wanted not in inspect.signature(found).parameters):
            missing.append(f"{module}.{path}" + (f"({wanted}=)" if wanted else ""))
    connection = Connection()  # not connected: no I/O
    missing += [f"Connection().{a}" for a in _INSTANCE if not hasattr(connection, a)]
    if not hasattr(getattr(connection, "_parser", None), "read_response"):
        missing.append("Connection()._parser.read_response")
    pipeline = Pipeline(None, {}, False, None)  # type: ignore[arg-type]
    if not isinstance(getattr(pipeline, "command_stack", None), list):
        missing.append("Pipeline().command_stack")
    return missing


FAST_IO = not missing_internals()
"""Whether the installed redis-py has what the fast I/O needs; without it, every client
:func:`connect` makes uses plain redis-py."""


def connect(url: str | None = None, *, max_connections: int = 64, fast_io: bool = True) -> Redis:
    """A client with ``decode_responses=True``. No I/O happens until first use.

    ``url=None`` gives the embedded store: fakeredis with Lua, in this process, so the
    first run needs no server. Each call makes a fresh, empty embedded server; share one
    :class:`~blackboard.store.BoardStore` (or its client) between components that must see
    the same boards. A blocking pool bounds connections under many concurrent tasks.

    ``fast_io``: on a real server, this module's own I/O on redis-py's internals (commands
    packed by hiredis, scripts' replies read straight from the parser, and a
    :class:`Pipeliner` that keeps its connection and several round trips in flight);
    used only if the installed redis-py has those internals (:data:`FAST_IO`). Else, or
    with ``False`` (``Settings.fast_io``), plain redis-py.
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
    if fast_io and FAST_IO:
        pool.connection_class = _hiredis_packing(pool.connection_class)
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


def _hiredis_packing(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """redis-py's asyncio connections pack commands in Python, its sync ones with
    hiredis (redis-py's own ``HiredisRespSerializer``), which is ~10x faster: a commit
    carries dozens of arguments. The bytes on the wire are the same. These connections
    also read a script's reply without redis-py's per-reply wrapping (``read_reply``)."""
    import hiredis
    from redis.connection import HiredisRespSerializer

    serializer = HiredisRespSerializer()

    class Packing(cls):  # type: ignore[valid-type,misc]
        fast_io = True  # a Pipeliner on these connections keeps one (see _Pinned)
        packs_heads = True  # takes a _Head in place of a script call's sha, keys

        async def read_reply(self) -> Any:
            """The next reply as it comes (a script's: no callback); see
            :func:`_read_reply`."""
            return await _read_reply(self)

        def pack_command(self, *args: Any) -> list[bytes]:
            if len(args) == 3 and args[1].__class__ is _Head:  # EVALSHA, head, argv
                head, argv = args[1], args[2]
                try:  # the call's own arguments after the head, packed once it is known
                    rest = hiredis.pack_command(argv) if argv else b"\n"
                    count = 1 + len(head.args) + len(argv)
                    return [b"*%d\r\n" % count, head.packed, rest[rest.index(b"\n") + 1 :]]
                except TypeError:  # not plain: packed (or refused) whole, as below
                    args = (args[0], *head.args, *argv)
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


async def _read_reply(connection: AbstractConnection) -> Any:
    """The next reply as it comes, an error reply returned rather than raised, straight
    from the connection's parser (which handles RESP3 pushes on the way): redis-py's
    read_response wraps the same call in a timeout check, a health-check clock and its
    own error handling, 0.8 of the 1.4 us a script's reply cost. A failed read is
    redis-py's ConnectionError, as from read_response (the caller drops the
    connection)."""
    parser: Any = connection._parser  # an async parser: its read_response is a coroutine
    try:
        return await parser.read_response()
    except OSError as exc:
        where = connection._host_error()
        raise RedisConnectionError(f"Error while reading from {where} : {exc.args}") from exc


class _Head:
    """A script call's EVALSHA, sha, key count and keys, packed once per script and
    board: a third of a commit's arguments, the same on every call to that board, and
    about 50 ns each for hiredis to pack."""

    __slots__ = ("args", "packed")

    def __init__(self, sha: str, keys: Sequence[str]) -> None:
        import hiredis

        self.args: tuple[Any, ...] = (sha, str(len(keys)), *keys)
        packed = hiredis.pack_command(("EVALSHA", *self.args))
        self.packed = packed[packed.index(b"\n") + 1 :]  # without the argument count


Command = tuple[str, tuple[Any, ...], dict[str, Any]]
"""A client method's name, its arguments and keyword arguments, e.g.
``("hset", (key, field, value), {})``; ``("script", (script, keys, args), {})`` runs a
registered :class:`~redis.commands.core.AsyncScript` by its SHA."""


IN_FLIGHT = 3
"""Round trips a :class:`Pipeliner` keeps in flight on its connection at once. With one,
the server idles from sending a round trip's last reply until the next arrives (this
process reads the replies, then packs and writes the next); with a few, the next is
already queued on the socket. On the supervisor throughput bench (100 boards, 2 cores),
three beat one, two, four and eight (see :data:`~blackboard.supervisor.intake.LANES`)."""


class Pipeliner:
    """Sends concurrent tasks' commands together, on one connection. Up to
    :data:`IN_FLIGHT` round trips go at once, the next written while the earlier ones'
    replies are still coming; the commands issued while that many are in flight wait and
    then go in one pipeline (one round trip for a hundred boards' commits, or a
    fan-out's branches, instead of one each). A lone caller's commands go at once, at the
    cost of a plain pipeline. Each caller gets its own replies, in order.

    Commands from different callers are independent (no MULTI): each caller's list runs
    in order, after those of the callers before it, but other clients' commands may run
    between them. A round trip that fails (the connection lost, a timeout, its caller
    cancelled) drops the connection, so the round trips in flight with it fail too, with
    redis-py's ``ConnectionError``: their commands may or may not have run.
    """

    def __init__(self, redis: Redis, *, pinned: bool | None = None) -> None:
        """``pinned``: send on one connection kept between round trips, written to while
        earlier round trips' replies are still coming (:class:`_Pinned`, on redis-py's
        internals); else each round trip is a plain redis-py pipeline on a pooled
        connection. By default pinned when ``redis`` came from :func:`connect` with its
        fast I/O."""
        self.redis = redis
        if pinned is None:
            pinned = getattr(redis.connection_pool.connection_class, "fast_io", False)
        cls = _Pinned if pinned else _Plain
        self._pipe: _Pinned | _Plain = cls(
            redis.connection_pool, redis.response_callbacks, False, None
        )
        self._flying = 0
        self._waiting: list[tuple[list[Command], asyncio.Future[list[Any]], bool]] = []
        self._sending: set[asyncio.Task[None]] = set()
        # Script calls' heads, packed once (when the connections can take them).
        packs = getattr(redis.connection_pool.connection_class, "packs_heads", False)
        self._heads: dict[tuple[str, ...], _Head] | None = {} if packs else None

    async def aclose(self) -> None:
        """Give the connection it keeps back to the pool (the client stays open)."""
        await self._pipe.release()

    async def execute(self, *commands: Command, raise_on_error: bool = True) -> list[Any]:
        """Run ``commands`` in order; their replies. The first error reply is raised
        (after every command ran), or with ``raise_on_error=False`` returned in its place
        (a batch of independent commands, each caller handling its own)."""
        if self._flying >= IN_FLIGHT:
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._waiting.append((list(commands), future, raise_on_error))
            return await future
        self._flying += 1
        try:
            [replies] = await self._replies([list(commands)])
        finally:
            self._flying -= 1
            self._next()
        error = next((r for r in replies if isinstance(r, Exception)), None)
        if error is not None and raise_on_error:
            raise error
        return replies

    def _next(self) -> None:
        """Send what waited meanwhile, in one pipeline (in a task of its own, so the
        caller whose round trip ended goes on)."""
        if not self._waiting or self._flying >= IN_FLIGHT:
            return
        self._flying += 1
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
            self._flying -= 1
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
        pipe = self._pipe
        for name, args, kwargs in commands:
            if name == "script":  # what pipe.evalsha queues, without its three calls
                script, keys, argv = args
                pipe.command_stack.append((self._evalsha(script.sha, keys, argv), {}))
            else:
                getattr(pipe, name)(*args, **kwargs)
        return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

    def _evalsha(self, sha: str, keys: Sequence[str], argv: Sequence[Any]) -> tuple[Any, ...]:
        """A script call's EVALSHA command. When the connections take a :class:`_Head`:
        EVALSHA, the head (packed once per script and keys) and the arguments as one
        tuple, which hiredis packs as it is (a commit carries some thirty-five: no
        copy of them is made on the way); else the command as redis-py queues it."""
        if self._heads is None:
            return ("EVALSHA", sha, str(len(keys)), *keys, *argv)
        ident = (sha, *keys)
        head = self._heads.get(ident)
        if head is None:
            if len(self._heads) >= 10_000:  # bounded: a long-lived process sees many boards
                self._heads.clear()
            head = self._heads[ident] = _Head(sha, keys)
        return ("EVALSHA", head, argv if argv.__class__ is tuple else tuple(argv))


class _Plain(Pipeline):
    """The Pipeliner's pipeline on plain redis-py (no :data:`FAST_IO`, or not asked for):
    commands are queued as on :class:`_Pinned`, and each execute sends them in a fresh
    redis-py pipeline, on a connection from the pool, so several may be in flight."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, self.command_stack = self.command_stack, []
        if not stack:
            return []
        pipe = Pipeline(self.connection_pool, self.response_callbacks, False, None)
        for args, options in stack:
            pipe.execute_command(*args, **options)
        return await pipe.execute(raise_on_error)  # type: ignore[no-any-return]

    async def release(self) -> None:
        """Nothing kept: each round trip gave its connection back to the pool."""


class _Pinned(Pipeline):
    """The Pipeliner's pipeline. Commands are queued with redis-py's command methods (its
    argument encoding, its reply callbacks; a script call, which has neither, is queued
    and read as it is) and sent on one connection kept from one round trip to the next.
    redis-py's own ``execute`` takes a connection from the pool and gives it back each
    time (through a lock and a task of its own), and wraps the round trip in hooks this
    client does not use (retries, which its pool turns off; observability; HIMPORT
    field sets): together more than a lone commit's send costs.

    Several executes may be in flight at once: each is written when called, in order,
    and reads its replies once the one written before it has read its own. A round trip
    that fails drops the connection; those written on it before the failure then fail
    without reading (their replies are gone with it), and the next write reconnects,
    as the pool would, once no earlier round trip is left to read. :meth:`release`
    gives the connection back; closing the client closes it in any case."""

    _kept: Connection | None = None
    _limit: float | None = None  # the kept connection's socket timeout
    _session = 0  # counts the kept connection's drops: replies of a dropped one are gone
    _last: asyncio.Future[None] | None = None  # done once the last one written has read
    _writing: asyncio.Lock | None = None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands; their replies, an error reply in place of the
        command's (raised instead with ``raise_on_error``). A failure of the round trip
        itself (connection lost, timeout, cancelled) drops the connection, as redis-py
        does: its next use reconnects."""
        stack, self.command_stack = self.command_stack, []
        if not stack:
            return []
        if self._writing is None:
            self._writing = asyncio.Lock()
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with self._writing:  # written in the order called, read in the order written
            before, self._last = self._last, mine
            try:
                connection, session = await self._write(stack, idle=_done(before))
            except BaseException:
                _after(before, mine)
                raise
        try:
            if not _done(before):
                await asyncio.shield(before)  # type: ignore[arg-type]
            if self._session != session:
                raise RedisConnectionError(
                    "the connection to Redis was lost with a round trip sent before "
                    "this one, whose commands may or may not have run; retry if they "
                    "are safe to repeat"
                )
            replies = await self._read(connection, stack)
        except BaseException as exc:  # the replies left unread would answer the next call
            await self._drop(connection, session)
            if isinstance(exc, TimeoutError):
                raise self._timed_out() from None
            raise
        finally:
            _after(before, mine)
        if raise_on_error:
            error = next((r for r in replies if isinstance(r, Exception)), None)
            if error is not None:
                raise error
        return replies

    async def _write(self, stack: list[Any], *, idle: bool) -> tuple[Connection, int]:
        """The connection, connected, with ``stack`` written to it, and its session."""
        connection = self._kept
        if connection is None:
            connection = self._kept = await self.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            # With a socket timeout, redis-py sets a deadline for every reply it reads (a
            # timer each, most of a reply's cost when a hundred come in one read). One
            # deadline per round trip instead (see _read).
            self._limit, connection.socket_timeout = connection.socket_timeout, None
        # Packed before anything is sent: an argument that cannot be sent (redis-py's
        # DataError) fails this call alone, and the connection stays in step.
        packed = connection.pack_commands([args for args, _ in stack])
        session = self._session
        try:
            if self._limit is None:  # no socket timeout: no scope (one costs ~2 us)
                await self._send(connection, packed, idle=idle)
            else:
                async with asyncio.timeout(self._limit):
                    await self._send(connection, packed, idle=idle)
        except BaseException as exc:
            await self._drop(connection, session)
            if isinstance(exc, TimeoutError):
                raise self._timed_out() from None
            raise
        return connection, session

    async def _send(self, connection: Connection, packed: list[bytes], *, idle: bool) -> None:
        if idle:  # the pool's checks read from the connection: none is in flight
            await self.connection_pool.ensure_connection(connection)
        await connection.send_packed_command(packed, check_health=idle)

    async def _read(self, connection: Connection, stack: list[Any]) -> list[Any]:
        if self._limit is None:  # no socket timeout: no scope (one costs ~2 us)
            return await self._replies_from(connection, stack, None)
        async with asyncio.timeout(self._limit) as deadline:
            return await self._replies_from(connection, stack, deadline)

    async def _replies_from(
        self, connection: Connection, stack: list[Any], deadline: asyncio.Timeout | None
    ) -> list[Any]:
        """``stack``'s replies, read in order; with a ``deadline``, each one read moves
        it on (a socket timeout bounds the wait for the next reply, not for all)."""
        limit = self._limit or 0.0
        replies: list[Any] = []
        plain = "EVALSHA" not in self.response_callbacks  # a script's reply, as it comes
        read_reply = getattr(connection, "read_reply", None)
        for args, options in stack:
            try:
                if plain and args[0] == "EVALSHA":
                    if read_reply is not None:
                        replies.append(await read_reply())
                    else:
                        replies.append(await connection.read_response())
                else:
                    replies.append(await self.parse_response(connection, args[0], **options))
            except ResponseError as exc:
                replies.append(exc)
            if deadline is not None:  # progress: move the deadline on, an eighth at a time
                due = asyncio.get_running_loop().time() + limit
                if due - (deadline.when() or due) > limit / 8:
                    deadline.reschedule(due)
        if read_reply is not None and connection.health_check_interval:
            # what read_response does on each reply: the connection was just heard from
            connection.next_health_check = (
                asyncio.get_running_loop().time() + connection.health_check_interval
            )
        return replies

    async def _drop(self, connection: Connection, session: int) -> None:
        if self._session == session:  # not dropped yet since this round trip was written
            self._session += 1
            await connection.disconnect(nowait=True)

    def _timed_out(self) -> RedisTimeoutError:
        return RedisTimeoutError(
            f"Timeout: Redis took no request and sent no reply for {self._limit} s "
            "(socket_timeout); is the server overloaded or stopped?"
        )

    async def release(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            kept.socket_timeout = self._limit
            await self.connection_pool.release(kept)


def _done(future: asyncio.Future[None] | None) -> bool:
    return future is None or future.done()


def _after(before: asyncio.Future[None] | None, mine: asyncio.Future[None]) -> None:
    """Mark ``mine`` read once ``before`` is: the next round trip reads after both."""
    if _done(before):
        mine.set_result(None)
    else:
        before.add_done_callback(lambda _: mine.set_result(None))  # type: ignore[union-attr]
