"""The Pipeliner: concurrent callers share round trips, each gets its own replies and
its own errors; scripts a server lost are loaded again. Both backends, and both ways
of sending (``pinned``: the fast I/O on redis-py's internals; plain redis-py
pipelines). This is the contract CI runs against the lowest and the newest redis-py the
project allows (.ci/run): the tests of the pinned way alone check that its use of
redis-py's internals still holds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio
from bbtest import counting
from fakeredis import FakeAsyncRedis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import BusyLoadingError, DataError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from blackboard.connection import FAST_IO, IN_FLIGHT, Pipeliner, connect, missing_internals


@pytest.fixture(params=[True, False], ids=["pinned", "plain"])
def pinned(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_this_redis_py_has_every_internal_the_fast_io_needs() -> None:
    """Run against the lowest and the newest redis-py allowed: a release that drops one
    fails here (the fast I/O would otherwise be left silently)."""
    assert missing_internals() == []
    assert FAST_IO


def test_without_an_internal_connect_falls_back_to_plain_redis_py(
    redis_servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redis-py without one of the internals the fast I/O uses: it is named, and
    connect() gives plain redis-py clients, whose Pipeliner sends plain pipelines."""
    from redis.asyncio.connection import AbstractConnection

    from blackboard import connection

    monkeypatch.delattr(AbstractConnection, "_host_error")
    assert missing_internals() == ["redis.asyncio.connection.AbstractConnection._host_error"]
    monkeypatch.setattr(connection, "FAST_IO", not missing_internals())
    client = connect(redis_servers().url)
    assert not hasattr(client.connection_pool.connection_class, "fast_io")
    assert type(Pipeliner(client)._pipe).__name__ == "_Plain"


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [
        ({}, "_Pinned"),
        ({"BLACKBOARD_FAST_IO": "0"}, "_Plain"),
        ({"BLACKBOARD_FAST_IO": "1"}, "_Pinned"),
    ],
)
async def test_settings_choose_the_fast_io_or_plain_redis_py(
    redis_servers: Any, chosen: dict[str, str], expected: str
) -> None:
    """Settings.fast_io (BLACKBOARD_FAST_IO) reaches connect(); the embedded store, with
    no socket to save round trips on, sends plain pipelines either way."""
    from blackboard import BoardStore, Settings

    url = redis_servers().url
    store = BoardStore.from_url(url, Settings.from_env(chosen, redis_url=url))
    try:
        assert type(Pipeliner(store.redis)._pipe).__name__ == expected
        assert await Pipeliner(store.redis).execute(("incr", ("n",), {})) == [1]
    finally:
        await store.close()
    embedded = BoardStore.from_url(None, Settings.from_env(chosen))
    assert type(Pipeliner(embedded.redis)._pipe).__name__ == "_Plain"
    await embedded.close()


async def test_callers_meanwhile_share_one_round_trip(
    redis_client: redis.asyncio.Redis, pinned: bool
) -> None:
    p = Pipeliner(redis_client, pinned=pinned)
    sizes = counting(p)
    replies = await asyncio.gather(
        *(p.execute(("set", (f"k{i}", i), {}), ("incr", (f"k{i}",), {})) for i in range(50))
    )
    assert replies == [[True, i + 1] for i in range(50)]
    # the first callers' commands went at once, each in a round trip of its own, as many
    # as may be in flight; those that came meanwhile, together
    assert sizes == [2] * IN_FLIGHT + [2 * (50 - IN_FLIGHT)]


async def test_a_lone_caller_is_not_delayed_or_batched(
    redis_client: redis.asyncio.Redis, pinned: bool
) -> None:
    p = Pipeliner(redis_client, pinned=pinned)
    sizes = counting(p)
    for i in range(3):
        assert await p.execute(("incr", ("n",), {})) == [i + 1]
    assert sizes == [1, 1, 1]
    if not isinstance(redis_client, FakeAsyncRedis):  # one connection served all three
        # pinned: kept, beside client_list's own; plain: back in the pool, client_list's
        assert len(await redis_client.client_list()) == (2 if pinned else 1)


async def test_an_error_reaches_only_its_caller(
    redis_client: redis.asyncio.Redis, pinned: bool
) -> None:
    await redis_client.set("text", "not a number")
    p = Pipeliner(redis_client, pinned=pinned)
    results = await asyncio.gather(
        p.execute(("incr", ("n",), {})),
        p.execute(("set", ("a", 1), {}), ("incr", ("text",), {}), ("set", ("b", 2), {})),
        p.execute(("incr", ("n",), {})),
        return_exceptions=True,
    )
    assert results[0] == [1] and results[2] == [2]
    assert isinstance(results[1], ResponseError)
    assert "not an integer" in str(results[1])
    # the failing caller's other commands still ran, in order (no MULTI)
    assert await redis_client.mget("a", "b") == ["1", "2"]


async def test_script_replies_come_back_in_place(
    redis_client: redis.asyncio.Redis, pinned: bool
) -> None:
    """A script's reply is read as it comes (nested tables included); a script's error is
    that command's reply, and the commands around it still get theirs."""
    nested = redis_client.register_script("return {'ok', ARGV[1], {1, 'x'}}")
    failing = redis_client.register_script("return redis.error_reply('NOPE refused here')")
    await nested(args=["warm"])
    await redis_client.script_load(failing.script)
    p = Pipeliner(redis_client, pinned=pinned)
    replies = await p.execute(
        ("script", (nested, [], ["a"]), {}),
        ("script", (failing, [], []), {}),
        ("incr", ("n",), {}),
        raise_on_error=False,
    )
    assert replies[0] == ["ok", "a", [1, "x"]] and replies[2] == 1
    assert isinstance(replies[1], ResponseError) and "NOPE refused here" in str(replies[1])


@pytest.mark.parametrize("concurrent", [1, 5])
async def test_scripts_the_server_lost_are_loaded_again(
    redis_client: redis.asyncio.Redis,
    concurrent: int,
    pinned: bool,
) -> None:
    script = redis_client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await script(keys=["s"], args=[1])
    await redis_client.script_flush()
    p = Pipeliner(redis_client, pinned=pinned)
    calls = [p.execute(("script", (script, ["s"], [10]), {})) for _ in range(concurrent)]
    replies = await asyncio.gather(*calls)
    assert sorted(r[0] for r in replies) == [1 + 10 * (i + 1) for i in range(concurrent)]
    assert await redis_client.get("s") == str(1 + 10 * concurrent)


async def test_what_follows_a_lost_script_runs_again_after_it(
    redis_client: redis.asyncio.Redis,
    pinned: bool,
) -> None:
    """A caller's commands after a script depend on it (a read of what it wrote, a
    WAIT): when the server had lost the script, they ran before it, so they run again
    once it is loaded, in order. Another caller's commands in the same round trip are
    not repeated, nor the caller's own before the script."""
    script = redis_client.register_script(
        "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCR', KEYS[2])"
    )
    await script(keys=["v", "n"], args=["old"])
    await redis_client.script_flush()
    p = Pipeliner(redis_client, pinned=pinned)
    sizes = counting(p)
    p._flying = IN_FLIGHT  # both callers wait, then go in one round trip
    writer = asyncio.ensure_future(
        p.execute(
            ("incr", ("before",), {}),
            ("script", (script, ["v", "n"], ["new"]), {}),
            ("get", ("v",), {}),
        )
    )
    other = asyncio.ensure_future(p.execute(("incr", ("other",), {})))
    await asyncio.sleep(0)
    p._flying = 0
    p._next()
    assert await writer == [1, 2, "new"]
    assert await other == [1]
    assert sizes == [4, 2]  # the second round trip: the script again and the read after it
    assert await redis_client.mget("before", "other", "n") == ["1", "1", "2"]


async def test_a_script_that_ran_is_not_run_again_with_a_lost_one(
    redis_client: redis.asyncio.Redis,
    pinned: bool,
) -> None:
    """The server had lost the first script but not the second: only the first runs
    again (and the read after both), so the second counts once."""
    lost = redis_client.register_script("return redis.call('INCR', KEYS[1])")
    kept = redis_client.register_script("return redis.call('INCRBY', KEYS[1], 10)")
    await redis_client.script_flush()
    await redis_client.script_load(kept.script)
    p = Pipeliner(redis_client, pinned=pinned)
    sizes = counting(p)
    replies = await p.execute(
        ("script", (lost, ["a"], []), {}),
        ("script", (kept, ["b"], []), {}),
        ("mget", (["a", "b"],), {}),
    )
    assert replies == [1, 10, ["1", "10"]]
    assert sizes == [3, 2]


@pytest.mark.real_only
@pytest.mark.parametrize("stuck", ["read", "write"])
async def test_a_hung_server_times_out_and_the_connection_recovers(
    redis_servers: Any,
    stuck: str,
    pinned: bool,
) -> None:
    """A server that stops answering (SIGSTOP) raises redis' TimeoutError after the
    socket timeout, whether the reply never comes or the request cannot even be written
    (its socket buffer full); once the server is back, the same Pipeliner works."""
    import signal

    server = redis_servers()
    client = connect(f"{server.url}?socket_timeout=0.5")
    p = Pipeliner(client, pinned=pinned)
    await p.execute(("set", ("k", "v"), {}))
    command = ("get", ("k",), {}) if stuck == "read" else ("set", ("big", "x" * (2 << 20)), {})
    server.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(RedisTimeoutError, match="Timeout"):
            await asyncio.wait_for(p.execute(command), 10)  # the bound, not the expectation
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert await p.execute(("get", ("k",), {})) == ["v"]
    # The timed-out connection was dropped: gone from the server once its unsent
    # bytes are flushed (asyncio closes a socket after that), leaving this Pipeliner's
    # and client_list's own.
    async with asyncio.timeout(10):
        while len(await client.client_list()) > 2:
            await asyncio.sleep(0.01)
    await client.aclose()


@pytest.mark.real_only
async def test_a_round_trip_longer_than_the_socket_timeout_succeeds_while_replies_come(
    redis_servers: Any,
    pinned: bool,
) -> None:
    """The socket timeout bounds the wait for the next reply, not the whole pipeline:
    twelve BLPOPs that each time out after 0.1 s answer one by one over 1.2 s, past a
    0.5 s socket timeout, and the round trip succeeds (as with redis-py's own reads)."""
    server = redis_servers()
    client = connect(f"{server.url}?socket_timeout=0.5")
    p = Pipeliner(client, pinned=pinned)
    started = asyncio.get_running_loop().time()
    replies = await p.execute(*[("blpop", (["empty"], 0.1), {}) for _ in range(12)])
    assert replies == [None] * 12
    assert asyncio.get_running_loop().time() - started > 1.0  # longer than the timeout
    await client.aclose()


@pytest.mark.real_only
async def test_a_caller_cancelled_mid_round_trip_leaves_no_reply_for_the_next(
    redis_servers: Any,
    pinned: bool,
) -> None:
    """A round trip abandoned before its replies were read (its caller cancelled) drops
    the connection: the next caller gets its own replies, and the abandoned BLPOP,
    gone with its connection, takes nothing from the list."""
    server = redis_servers()
    client = connect(server.url)
    p = Pipeliner(client, pinned=pinned)
    waiting = asyncio.ensure_future(p.execute(("blpop", (["q"], 5), {})))
    async with asyncio.timeout(10):  # until the BLPOP blocks on the server
        while int((await client.info("clients"))["blocked_clients"]) == 0:
            await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await p.execute(("rpush", ("q", "x"), {}), ("lpop", ("q",), {})) == [1, "x"]
    assert await p.execute(("set", ("k", "v"), {}), ("get", ("k",), {})) == [True, "v"]
    await client.aclose()


async def test_an_argument_that_cannot_be_sent_fails_its_call_alone(
    redis_client: redis.asyncio.Redis,
    pinned: bool,
) -> None:
    """A command redis-py cannot encode (None as a value) raises its DataError before
    anything is sent: nothing of that call ran, and the next call, on the same
    connection, gets its own replies."""
    p = Pipeliner(redis_client, pinned=pinned)
    real = not isinstance(redis_client, FakeAsyncRedis)
    first = await p.execute(("set", ("k", "v"), {}), *([("client_id", (), {})] if real else []))
    with pytest.raises(DataError):  # its message is redis-py's, worded per packer
        await p.execute(("set", ("a", "1"), {}), ("set", ("b", None), {}))
    assert await redis_client.exists("a") == 0
    after = await p.execute(("get", ("k",), {}), *([("client_id", (), {})] if real else []))
    assert after[0] == "v"
    assert after[1:] == first[1:]  # the same connection: it was not dropped


async def incr_behind_a_blpop(
    client: redis.asyncio.Redis, p: Pipeliner
) -> tuple[asyncio.Future[list[Any]], asyncio.Future[list[Any]]]:
    """A BLPOP on ``q`` blocked on the server, and an INCR of ``n`` written behind it on
    the Pipeliner's connection, both still unanswered."""
    blocked = asyncio.ensure_future(p.execute(("blpop", (["q"], 5), {})))
    async with asyncio.timeout(10):
        while int((await client.info("clients"))["blocked_clients"]) == 0:
            await asyncio.sleep(0.01)
    behind = asyncio.ensure_future(p.execute(("incr", ("n",), {})))
    async with asyncio.timeout(10):  # the INCR reached the server, in the input buffer
        while not any(
            c["cmd"] == "blpop" and int(c["qbuf"]) > 0 for c in await client.client_list()
        ):
            await asyncio.sleep(0.01)
    return blocked, behind


@pytest.mark.real_only
async def test_the_next_round_trip_is_written_before_the_first_is_answered(
    redis_servers: Any,
) -> None:
    """Round trips go out without waiting for the earlier ones' replies: while a BLPOP
    blocks, the next caller's INCR already waits in the server's input buffer for that
    connection. It runs once the BLPOP is served, and each caller gets its own reply."""
    server = redis_servers()
    client = connect(server.url)
    p = Pipeliner(client)
    blocked, behind = await incr_behind_a_blpop(client, p)
    assert await client.get("n") is None and not behind.done()
    await client.rpush("q", "x")
    assert await behind == [1]
    assert await blocked == [("q", "x")]
    await client.aclose()


@pytest.mark.real_only
async def test_a_round_trip_failing_in_flight_fails_the_one_written_behind_it(
    redis_servers: Any,
) -> None:
    """The caller of a blocked BLPOP is cancelled: the connection is dropped, so the
    INCR written behind it never runs, and its caller hears redis-py's ConnectionError
    saying its commands may or may not have run. The next call reconnects."""
    server = redis_servers()
    client = connect(server.url)
    p = Pipeliner(client)
    blocked, behind = await incr_behind_a_blpop(client, p)
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    with pytest.raises(redis.ConnectionError, match="may or may not have run"):
        await behind
    assert await p.execute(("incr", ("n",), {})) == [1]  # the first INCR never ran
    assert await p.execute(("rpush", ("q", "x"), {}), ("lpop", ("q",), {})) == [1, "x"]
    assert (p._flying, p._waiting) == (0, [])
    await client.aclose()


@pytest.mark.real_only
async def test_the_socket_timeout_starts_when_a_round_trips_turn_to_read_comes(
    redis_servers: Any,
) -> None:
    """A round trip written behind one that takes longer than the socket timeout (twelve
    BLPOPs of 0.1 s, 0.5 s timeout) waits for it without timing out."""
    server = redis_servers()
    client = connect(f"{server.url}?socket_timeout=0.5")
    p = Pipeliner(client)
    blpops = [("blpop", (["empty"], 0.1), {}) for _ in range(12)]
    slow = asyncio.ensure_future(p.execute(*blpops))
    behind = asyncio.ensure_future(p.execute(("set", ("k", "v"), {}), ("get", ("k",), {})))
    assert await slow == [None] * 12
    assert await behind == [True, "v"]
    await client.aclose()


callers = st.lists(
    st.tuples(st.integers(1, 5), st.none() | st.integers(0, 6)), min_size=1, max_size=12
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(calls=callers)
async def test_no_caller_ever_gets_anothers_replies(
    redis_client: redis.asyncio.Redis,
    calls: list[tuple[int, int | None]],
    pinned: bool,
) -> None:
    """Concurrent callers, some cancelled after a few turns of the event loop: every
    caller that returns has exactly its own replies; one that fails was cancelled, or
    hears that the connection was lost in flight; the Pipeliner then works again."""
    p = Pipeliner(redis_client, pinned=pinned)

    async def call(i: int, n: int) -> list[Any]:
        return await p.execute(*[("echo", (f"{i}.{j}",), {}) for j in range(n)])

    tasks = [asyncio.ensure_future(call(i, n)) for i, (n, _) in enumerate(calls)]
    for turn in range(7):
        for task, (_, cancel_at) in zip(tasks, calls, strict=True):
            if cancel_at == turn:
                task.cancel()
        await asyncio.sleep(0)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, ((n, cancel_at), result) in enumerate(zip(calls, results, strict=True)):
        if isinstance(result, asyncio.CancelledError):
            assert cancel_at is not None
        elif isinstance(result, BaseException):
            assert isinstance(result, redis.ConnectionError), result
        else:
            assert result == [f"{i}.{j}" for j in range(n)]
    assert await call(99, 2) == ["99.0", "99.1"]
    if not pinned:  # on connections of their own, round trips of cancelled callers may
        await asyncio.gather(*p._sending)  # still be in flight (pinned: read before it)
    assert (p._flying, p._waiting) == (0, [])
    await p.aclose()


@pytest.mark.real_only
async def test_a_script_call_s_head_is_packed_once_into_the_bytes_redis_py_packs(
    redis_servers: Any,
) -> None:
    """EVALSHA, the sha and the keys are packed once per script and keys; the bytes
    sent are those of the whole call packed at once, with or without arguments, and an
    argument redis-py cannot send is refused as it would be (DataError, nothing sent)."""
    client = connect(redis_servers().url)
    try:
        script = client.register_script("return {KEYS[1], KEYS[2], unpack(ARGV)}")
        await client.script_load(script.script)
        p = Pipeliner(client)
        for argv in (["a", 7], ["b", 1.5]):
            reply = await p.execute(("script", (script, ["k1", "k2"], argv), {}))
            assert reply == [["k1", "k2", *map(str, argv)]]
        assert p._heads is not None and len(p._heads) == 1
        connection = client.connection_pool.make_connection()
        whole = ("EVALSHA", script.sha, "2", "k1", "k2")
        for argv in ([], ["x", 3, 2.5, b"\x00raw", "é"], ("y", 4)):
            sent = connection.pack_commands([p._evalsha(script.sha, ["k1", "k2"], argv)])
            assert b"".join(sent) == b"".join(connection.pack_commands([(*whole, *argv)]))
        with pytest.raises(DataError):
            connection.pack_commands([p._evalsha(script.sha, ["k1", "k2"], [None])])
        with pytest.raises(DataError):
            await p.execute(("script", (script, ["k1", "k2"], ["a", None]), {}))
        assert await p.execute(("script", (script, ["k1", "k2"], ["c"]), {})) == [["k1", "k2", "c"]]
    finally:
        await client.aclose()


async def test_script_replies_are_read_whole_however_they_arrive(redis_servers: Any) -> None:
    """A script's reply is read straight from hiredis's reader: one larger than a socket
    read arrives in pieces and is read whole, and the replies around it stay in place;
    an error reply is returned in its place. The connection counts as just heard from
    (its next health check is pushed back, as a reply read by redis-py would)."""
    client = connect(redis_servers().url)
    try:
        big = client.register_script(
            "local t = {} for i = 1, tonumber(ARGV[2]) do t[i] = i end"
            " return {string.rep(ARGV[1], tonumber(ARGV[3])), t}"
        )
        failing = client.register_script("return redis.error_reply('NOPE refused here')")
        await client.script_load(big.script)
        await client.script_load(failing.script)
        p = Pipeliner(client)
        await p.execute(("ping", (), {}))
        connection = p._pipe._kept
        assert connection is not None and hasattr(connection, "read_reply")
        loop = asyncio.get_running_loop()
        connection.next_health_check = loop.time() + 1  # not due: no check before sending
        replies = await p.execute(
            ("script", (big, [], ["é", 20_000, 100_000]), {}),
            ("script", (failing, [], []), {}),
            ("script", (big, [], ["x", 3, 2]), {}),
            raise_on_error=False,
        )
        assert replies[0] == ["é" * 100_000, list(range(1, 20_001))]
        assert isinstance(replies[1], ResponseError) and "NOPE refused here" in str(replies[1])
        assert replies[2] == ["xx", [1, 2, 3]]
        assert connection.next_health_check > loop.time() + 10  # its interval is 30 s
        # An error redis-py counts as a connection's (the server still loading) fails
        # the round trip, as redis-py's own read would; the next one reconnects.
        loading = client.register_script("return redis.error_reply('LOADING not yet')")
        await client.script_load(loading.script)
        with pytest.raises(BusyLoadingError):
            await p.execute(("script", (loading, [], []), {}), raise_on_error=False)
        assert await p.execute(("script", (big, [], ["y", 1, 1]), {})) == [["y", [1]]]
    finally:
        await client.aclose()


async def test_script_replies_are_read_the_same_with_another_parser(redis_servers: Any) -> None:
    """A connection whose replies redis-py parses in Python (no hiredis reader) reads a
    script's reply, and returns its error reply, the way redis-py does."""
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser

    client = connect(redis_servers().url)
    try:
        client.connection_pool.connection_kwargs["parser_class"] = _AsyncRESP2Parser
        nested = client.register_script("return {'ok', ARGV[1], {1, 'x'}}")
        failing = client.register_script("return redis.error_reply('NOPE refused here')")
        await client.script_load(nested.script)
        await client.script_load(failing.script)
        p = Pipeliner(client)
        replies = await p.execute(
            ("script", (nested, [], ["a"]), {}),
            ("script", (failing, [], []), {}),
            ("incr", ("n",), {}),
            raise_on_error=False,
        )
        parser = p._pipe._kept._parser  # type: ignore[union-attr]
        assert not isinstance(parser, _AsyncHiredisParser)
        assert replies[0] == ["ok", "a", [1, "x"]] and replies[2] == 1
        assert isinstance(replies[1], ResponseError) and "NOPE refused here" in str(replies[1])
    finally:
        await client.aclose()


async def test_a_push_before_a_script_s_reply_does_not_take_its_place(
    redis_servers: Any,
) -> None:
    """On a RESP3 connection the server may push a message between replies (here a
    client-tracking invalidation caused by the script itself): it is handled as
    redis-py handles pushes, and each script still gets its own reply."""
    client = connect(redis_servers().url + "?protocol=3")
    try:
        writes = client.register_script("redis.call('SET', KEYS[1], ARGV[1]) return 'wrote'")
        echo = client.register_script("return {'ok', ARGV[1]}")
        await client.script_load(writes.script)
        await client.script_load(echo.script)
        p = Pipeliner(client)
        await p.execute(("execute_command", ("CLIENT", "TRACKING", "ON"), {}))
        await p.execute(("get", ("tracked",), {}))  # now tracked: a write pushes
        replies = await p.execute(
            ("script", (writes, ["tracked"], ["v"]), {}), ("script", (echo, [], ["B"]), {})
        )
        assert replies == ["wrote", ["ok", "B"]]
        assert await p.execute(("script", (echo, [], ["C"]), {})) == [["ok", "C"]]
    finally:
        await client.aclose()


async def test_a_read_that_fails_is_redis_py_s_connection_error(redis_servers: Any) -> None:
    """A socket error while reading a script's reply fails the round trip with
    redis-py's ConnectionError, as its own read would; the next one reconnects."""
    client = connect(redis_servers().url)
    try:
        echo = client.register_script("return {'ok', ARGV[1]}")
        await client.script_load(echo.script)
        p = Pipeliner(client)
        await p.execute(("ping", (), {}))
        connection = p._pipe._kept
        assert connection is not None

        async def reset(_: int) -> bytes:
            raise ConnectionResetError(104, "Connection reset by peer")

        send = connection.send_packed_command

        async def send_then_fail_reads(*args: Any, **kwargs: Any) -> None:
            # after the send: the pool's check before it (a read, in redis-py < 8) would
            # see the failure first and quietly reconnect
            await send(*args, **kwargs)
            connection._parser._stream.read = reset  # type: ignore[attr-defined]
            del connection.send_packed_command  # once: the class's again

        connection.send_packed_command = send_then_fail_reads  # type: ignore[method-assign]
        with pytest.raises(RedisConnectionError, match="Connection reset by peer"):
            await p.execute(("script", (echo, [], ["x"]), {}))
        assert await p.execute(("script", (echo, [], ["y"]), {})) == [["ok", "y"]]
    finally:
        await client.aclose()
