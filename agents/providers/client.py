"""What both adapters share: their SDK's import, the API key, and one client per loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

from blackboard.errors import ConfigError

__all__ = ["PerLoop", "api_key", "missing_sdk"]


class _Client(Protocol):
    async def close(self) -> None: ...


T = TypeVar("T", bound=_Client)


def missing_sdk(package: str, exc: ImportError) -> ConfigError:
    """The error for an adapter whose SDK (an optional extra) is not installed."""
    return ConfigError(
        f"the {package!r} package is not installed ({exc}); install the extra with "
        f"`pip install 'redis-blackboard[{package}]'` to use {package} models."
    )


def api_key(
    explicit: str | None, variable: str, *, required: bool, environ: Mapping[str, str] | None
) -> str | None:
    """The key: given explicitly, else from the environment; never from the board."""
    if explicit:
        return explicit
    key = (os.environ if environ is None else environ).get(variable) or None
    if key is None and required:
        raise ConfigError(
            f"{variable} is not set: export it (or pass api_key=...) to use this model. "
            "Keys come from the environment, never from the board."
        )
    return key


class PerLoop(Generic[T]):
    """A client made on first use in each event loop: an SDK client's connection pool
    belongs to the loop that opened it, and an app's model (built at import time) may
    serve several loops in turn (tests, ``run_sync`` called twice)."""

    def __init__(self, make: Callable[[], T], given: T | None = None) -> None:
        self._make = make
        self._given = given
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: T | None = None

    def get(self) -> T:
        if self._given is not None:
            return self._given
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = self._make(), loop
        return self._client

    async def aclose(self) -> None:
        """Close the client made here (a given one is its owner's to close)."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.close()
