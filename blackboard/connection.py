"""Making a Redis client: a real server by URL, or the embedded in-process default."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from blackboard.errors import ConfigError

__all__ = ["connect"]

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
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
