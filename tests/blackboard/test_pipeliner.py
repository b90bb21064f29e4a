"""The Pipeliner: concurrent callers share round trips, each gets its own replies and
its own errors; scripts a server lost are loaded again. Both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import ResponseError

from blackboard.connection import Pipeliner


def counting(client: redis.asyncio.Redis) -> list[int]:
    """Count the pipelines sent and the commands in each."""
    sizes: list[int] = []
    make = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make(*args, **kwargs)
        execute = pipe.execute

        async def counted(*a: Any, **k: Any) -> Any:
            sizes.append(len(pipe.command_stack))
            return await execute(*a, **k)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe

    client.pipeline = pipeline  # type: ignore[method-assign]
    return sizes


async def test_callers_meanwhile_share_one_round_trip(redis_client: redis.asyncio.Redis) -> None:
    sizes = counting(redis_client)
    p = Pipeliner(redis_client)
    replies = await asyncio.gather(
        *(p.execute(("set", (f"k{i}", i), {}), ("incr", (f"k{i}",), {})) for i in range(50))
    )
    assert replies == [[True, i + 1] for i in range(50)]
    # the first caller's commands went at once; the 49 that came meanwhile, together
    assert sizes == [2, 98]


async def test_a_lone_caller_is_not_delayed_or_batched(redis_client: redis.asyncio.Redis) -> None:
    sizes = counting(redis_client)
    p = Pipeliner(redis_client)
    for i in range(3):
        assert await p.execute(("incr", ("n",), {})) == [i + 1]
    assert sizes == [1, 1, 1]


async def test_an_error_reaches_only_its_caller(redis_client: redis.asyncio.Redis) -> None:
    await redis_client.set("text", "not a number")
    p = Pipeliner(redis_client)
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


@pytest.mark.parametrize("concurrent", [1, 5])
async def test_scripts_the_server_lost_are_loaded_again(
    redis_client: redis.asyncio.Redis, concurrent: int
) -> None:
    script = redis_client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await script(keys=["s"], args=[1])
    await redis_client.script_flush()
    p = Pipeliner(redis_client)
    calls = [p.execute(("script", (script, ["s"], [10]), {})) for _ in range(concurrent)]
    replies = await asyncio.gather(*calls)
    assert sorted(r[0] for r in replies) == [1 + 10 * (i + 1) for i in range(concurrent)]
    assert await redis_client.get("s") == str(1 + 10 * concurrent)
