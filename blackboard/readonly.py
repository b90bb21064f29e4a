"""Running a Lua script that only reads so that a read-only Redis user may run it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["ReadOnlyScript"]


class ReadOnlyScript:
    """A Lua script that only reads, run with ``EVALSHA_RO`` (Redis 7), which a Redis user
    allowed only reads may send: ``EVALSHA`` declares its keys written as well, so it
    needs write rights on them (``blackboard acl``'s operator has none). Not yet cached
    on the server (``NOSCRIPT``): sent whole with ``EVAL_RO``, which caches it. A server
    without these commands (the embedded fakeredis, which has no users to enforce;
    Redis before 7) runs it with ``EVALSHA``, as redis-py's ``Script`` does.

    Args:
        redis: the client.
        source: the script's Lua text.
    """

    def __init__(self, redis: Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.script = redis.register_script(source)
        self.read_only = True
        """False once the server said it has no ``EVALSHA_RO``."""

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self.read_only:
            try:
                try:
                    return await self.redis.evalsha_ro(self.script.sha, len(keys), *keys, *args)
                except NoScriptError:
                    return await self.redis.eval_ro(self.source, len(keys), *keys, *args)
            except ResponseError as exc:
                if not str(exc).lower().startswith("unknown command"):
                    raise
                self.read_only = False
        return await self.script(keys=keys, args=args)
